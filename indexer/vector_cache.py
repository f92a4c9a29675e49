"""Work saved by content: a vector is encoded once per model and per image bytes or caption text.

The store's ``vectors`` table keeps every vector an encode made under ``(model key, kind, sha256)``:
the model key is the model's id and the precision of the tower that made it (``model_key``; a
different model or precision shares nothing), ``kind`` "image" or "text", ``sha256`` the digest
of the image file's bytes or of the caption's UTF-8 text.

``VectorCache(store_url).wrap(runner)`` is a ``Runner`` (``indexer.encode.runner``) that encodes
only the misses: it digests every row of the sets (image files read and hashed on threads), looks
the digests up, hands the runner *miss sets* (each digest once across all sets, so the same bytes
twice, in one set or two, are encoded once) with a capturing writer, saves what came back, and
writes every full set through ``write_encoded`` (the sets' own error policy) into the real writer.
``tuwen index`` and ``tuwen corpus encode`` both go through it; any runner (local, Ray) works
underneath, since it only ever sees sets.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from indexer import store
from indexer.encode.reader import EncodeSet, Kind, Say

if TYPE_CHECKING:  # the runner and mapper modules import the model stack; ``corpus add`` needs none
    from indexer.encode.mapper import EncodeMapper
    from indexer.encode.runner import Runner

log = logging.getLogger(__name__)
HASH_THREADS = 4
_CHUNK = 500  # digests per IN (...) lookup
_LEFT_OUT = "unreadable at encode time, left out: "  # reader.settle's line for a dropped row


def digest_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def digest_text(text: str) -> str:
    return digest_bytes(text.encode("utf-8"))


def digest_file(path: str | Path) -> str | None:
    """The sha256 of a file's bytes, None when it cannot be read (it is then encoded, and fails)."""
    try:
        return digest_bytes(Path(path).read_bytes())
    except OSError:
        return None


def model_key(model_fields: dict, kind: Kind) -> str:
    """What a vector is kept under besides its digest: the model id and the tower's precision."""
    precision = model_fields["precision"] if kind == "image" else model_fields["text_precision"]
    return f"{model_fields['model_id']}|{precision}"


def lookup(session: store.Session, key: str, kind: Kind, digests: Sequence[str]) -> dict[str, np.ndarray]:
    """The saved vectors among ``digests`` (digest -> float32 vector)."""
    V = store.VectorRecord
    found: dict[str, np.ndarray] = {}
    unique = sorted(set(digests))
    for start in range(0, len(unique), _CHUNK):
        chunk = unique[start : start + _CHUNK]
        rows = session.execute(
            select(V.sha256, V.vector).where(V.model_id == key, V.kind == kind, V.sha256.in_(chunk))
        )
        found.update((d, np.frombuffer(v, dtype=np.float32)) for d, v in rows)
    return found


def save(session: store.Session, key: str, kind: Kind, vectors: dict[str, np.ndarray]) -> int:
    """Keep ``vectors`` (digest -> vector); a digest already kept (by another writer) is left as is."""
    rows = [
        {
            "model_id": key,
            "kind": kind,
            "sha256": d,
            "vector": np.asarray(v, np.float32).tobytes(),
            "dim": len(v),
        }
        for d, v in vectors.items()
    ]
    if not rows:
        return 0
    dialect = session.get_bind().dialect.name
    table = store.VectorRecord.__table__
    if dialect in ("sqlite", "postgresql"):
        insert = (sqlite if dialect == "sqlite" else postgresql).insert(table).on_conflict_do_nothing()
        for start in range(0, len(rows), _CHUNK):
            session.execute(insert, rows[start : start + _CHUNK])
    else:  # no portable upsert: insert the ones not there
        there = lookup(session, key, kind, list(vectors))
        store.insert_rows(session, store.VectorRecord, [r for r in rows if r["sha256"] not in there])
    return len(rows)


@dataclass
class _Plan:
    """One set: its rows' digests, and the rows whose digest this run encodes (the miss set)."""

    s: EncodeSet
    digests: list[str | None]
    miss: EncodeSet


@dataclass
class _Capture:
    """The writer a runner writes the miss sets into: ids and vectors of the rows that encoded."""

    sets: dict[str, tuple[list[str], np.ndarray]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # item id -> why it did not encode

    def write_set(self, name: str, ids: list[str], vectors: np.ndarray, *, searchable: bool) -> None:
        self.sets[name] = (ids, vectors)

    def say_through(self, say: Say, ids: set[str]) -> Say:
        """The runner's lines go to ``say``, except a dropped row's (kept as its error for later)."""

        def _say(line: str) -> None:
            if not line.startswith(_LEFT_OUT):
                say(line)
                return
            parts = line[len(_LEFT_OUT) :].split(": ")  # "<id>: <error>", and ids may hold ": "
            for k in range(len(parts) - 1, 0, -1):
                if ": ".join(parts[:k]) in ids:
                    self.errors[": ".join(parts[:k])] = ": ".join(parts[k:])
                    return

        return _say


@dataclass
class VectorCache:
    """Encode only what the store's ``vectors`` table does not hold for this model (see the module)."""

    store_url: str
    reused: dict[str, int] = field(default_factory=dict)  # kind -> rows served from the store
    encoded: dict[str, int] = field(default_factory=dict)  # kind -> distinct sources encoded

    def wrap(self, runner: Runner) -> Runner:
        def cached(sets: Sequence[EncodeSet], mapper: EncodeMapper, writer, say: Say = log.info) -> None:
            self.run(sets, mapper=mapper, writer=writer, runner=runner, say=say)

        return cached

    def run(
        self, sets: Sequence[EncodeSet], *, mapper: EncodeMapper, writer, runner: Runner, say: Say
    ) -> None:
        from indexer.encode.runner import write_encoded  # heavy (torch), and loaded by then anyway

        fields = mapper.model_fields()
        found: dict[str, dict[str, np.ndarray]] = {}
        plans: list[_Plan] = []
        with store.open_store(self.store_url) as session:
            for kind in ("image", "text"):
                chosen = [s for s in sets if s.kind == kind]
                digests = [source_digests(s) for s in chosen]
                known = [d for ds in digests for d in ds if d is not None]
                found[kind] = lookup(session, model_key(fields, kind), kind, known)
                plans += _plans(chosen, digests, found[kind])
        by_name = {p.s.name: p for p in plans}
        misses = [by_name[s.name].miss for s in sets if by_name[s.name].miss.rows]  # the reader's order
        capture = _Capture()
        if misses:
            ids = {r.item_id for m in misses for r in m.rows}
            runner(misses, mapper, capture, capture.say_through(say, ids))
        fresh = self._fresh(plans, capture)
        with store.open_store(self.store_url) as session:
            for kind, vectors in fresh.items():
                save(session, model_key(fields, kind), kind, vectors)
        for s in sets:
            p = by_name[s.name]
            known = {**found[s.kind], **fresh[s.kind]}
            vectors, errors = _assemble(p, known, capture, int(fields["embed_dim"]))
            write_encoded(s, vectors, errors, writer, say)
        say(self.summary())

    def _fresh(self, plans: list[_Plan], capture: _Capture) -> dict[str, dict[str, np.ndarray]]:
        """digest -> vector of what the runner encoded, by kind; counts what was reused and encoded."""
        fresh: dict[str, dict[str, np.ndarray]] = {"image": {}, "text": {}}
        for p in plans:
            kind = p.s.kind
            self.encoded[kind] = self.encoded.get(kind, 0) + len(p.miss.rows)
            self.reused[kind] = self.reused.get(kind, 0) + len(p.s.rows) - len(p.miss.rows)
            ids, vectors = capture.sets.get(p.miss.name, ([], np.zeros((0, 0), np.float32)))
            by_id = {r.item_id: d for r, d in zip(p.s.rows, p.digests, strict=True)}
            for item_id, vector in zip(ids, vectors, strict=True):
                if by_id[item_id] is not None:
                    fresh[kind][by_id[item_id]] = vector
        return fresh

    def summary(self) -> str:
        parts = [
            f"{kind}s {self.reused.get(kind, 0)} reused, {self.encoded.get(kind, 0)} encoded"
            for kind in ("image", "text")
            if kind in self.reused
        ]
        return "vectors saved by content: " + ("; ".join(parts) or "nothing to encode")


def source_digests(s: EncodeSet) -> list[str | None]:
    if s.kind == "text":
        return [digest_text(src) for src in s.sources]
    with ThreadPoolExecutor(HASH_THREADS) as pool:  # hashlib releases the GIL on large buffers
        return list(pool.map(digest_file, s.sources))


def _plans(
    sets: list[EncodeSet], digests: list[list[str | None]], found: dict[str, np.ndarray]
) -> list[_Plan]:
    """Each set's miss rows: digests not found and not already claimed by an earlier row of the run."""
    claimed: set[str] = set()
    plans = []
    for s, ds in zip(sets, digests, strict=True):
        rows = []
        for row, d in zip(s.rows, ds, strict=True):
            if d is None or (d not in found and d not in claimed):
                rows.append(row)
                if d is not None:
                    claimed.add(d)
        plans.append(_Plan(s, ds, replace(s, rows=rows, searchable=False, on_error="drop")))
    return plans


def _assemble(
    p: _Plan, vectors: dict[str, np.ndarray], capture: _Capture, dim: int
) -> tuple[np.ndarray, list[str]]:
    """The full set's vectors in row order and per row an error ("" when it has a vector)."""
    out = np.zeros((len(p.s.rows), dim), dtype=np.float32)
    ids, encoded = capture.sets.get(p.miss.name, ([], []))
    own = dict(zip(ids, encoded, strict=True))  # this set's encoded rows (also those without a digest)
    errors = []
    for i, (row, d) in enumerate(zip(p.s.rows, p.digests, strict=True)):
        vector = own.get(row.item_id) if row.item_id in own else vectors.get(d) if d is not None else None
        if vector is not None:
            out[i] = vector
            errors.append("")
        else:
            errors.append(capture.errors.get(row.item_id, "not encoded"))
    return out, errors
