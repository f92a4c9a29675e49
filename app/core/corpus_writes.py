"""Items put and deleted through the API (issue 19), and the deltas that make every change searchable.

Where a put item lives until the next ``tuwen corpus encode``:

1. its image bytes: ``$TUWEN_HOME/corpora/<name>/files/<sha256>`` (content-addressed, written
   atomically and fsynced before anything refers to them);
2. the store, in ONE transaction: the item row and its attributes, its vectors (``vectors``, under
   the server's model key and the digests) and the change-log row (``corpus_changes``, its seq);
3. this server's memory: an ``Entry`` in ``Deltas``, from which a ``Delta`` per target (the put
   items' vectors and columns, the deleted ids as tombstones) is attached to the served corpus
   before the request is answered: searchable at once;
4. every other replica: its poller (the store probe's thread, every second) reads the log after
   the last seq it applied for each served corpus, takes the vectors from the store by digest
   (encoding only what it lacks: another replica with another precision) and attaches the same
   delta. Reads never need the store: during an outage the last delta stays.

Changes made on the command line (``corpus add``, ``--upsert``, ``corpus remove``) are in the log
too but not followed: the catalog then finds the corpus stale (409 naming ``corpus encode``) until
it is encoded again, as for any corpus whose items changed.

The next ``corpus encode`` folds the changes into a new base; its manifest's ``source.seq`` is
the last change it read, so when that generation loads only later entries stay in its delta.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from sqlalchemy import select
from sqlalchemy.engine import Engine

from app.core.corpora import CorpusRegistry, ServedCorpus
from common.errors import TuwenError
from common.files import write_atomic
from common.settings import Settings
from indexer import store, vector_cache
from indexer.collection.columns import Columns
from indexer.collection.search import Delta
from indexer.corpus import BUILTIN, Attribute, corpus_dir
from indexer.corpus.changes import (
    API,
    DELETE,
    PUT,
    ItemData,
    check_fields,
    check_time_kind,
    delete_items,
    field_kinds,
    foreign_changes_after,
    last_seq,
    lock_changes,
    merge_fields,
    merge_time_kind,
    put_items,
)
from indexer.corpus.read import RESERVED, TIME_DATETIME, TIME_INT, json_kind, parse_time
from models.imageio import ImageDecodeError, open_image

log = logging.getLogger(__name__)
POLL_INTERVAL_S = 1.0
KIND_OF_TARGET = {"image": "image", "text": "text"}  # a target's vectors are of this kind


@dataclass(frozen=True)
class Entry:
    """One item's latest change after the base: a put (its data and vectors by target) or a delete."""

    seq: int
    op: str
    data: dict | None = None
    vectors: dict[str, np.ndarray] = field(default_factory=dict)


def files_dir(settings: Settings, corpus: str) -> Path:
    return corpus_dir(settings, corpus) / "files"


def save_image(settings: Settings, corpus: str, data: bytes) -> tuple[str, Path]:
    """The image's bytes under their sha256 (kept if already there): (digest, path)."""
    digest = vector_cache.digest_bytes(data)
    path = files_dir(settings, corpus) / digest
    if not path.is_file():
        write_atomic(path, data)
    return digest, path


def server_key(served: ServedCorpus, kind: str) -> str:
    """The model key this server keeps vectors under (``vector_cache.model_key``)."""
    encoder = served.queries.encoder
    fields = {
        "model_id": served.model_id,
        "precision": encoder.precision,
        "text_precision": encoder.text_precision,
    }
    return vector_cache.model_key(fields, kind)


class Deltas:
    """Every served corpus's changes after its base generation, attached as a ``Delta`` per target."""

    def __init__(self, registry: CorpusRegistry):
        self.registry = registry
        self.entries: dict[str, dict[str, Entry]] = {}  # corpus -> item id -> its latest change
        self.cursor: dict[str, int] = {}  # corpus -> the last log seq read for it
        self.lock = threading.Lock()
        registry.on_loaded.append(self.on_loaded)

    @staticmethod
    def base_seq(served: ServedCorpus) -> int | None:
        """The last change its generation folded in; None for a generation older than the change log."""
        seq = (served.manifest.source or {}).get("seq")
        return None if seq is None else int(seq)

    def record(self, corpus: str, item_id: str, entry: Entry) -> None:
        """Keep ``entry`` unless a later change of the item is already kept (puts race; seq decides)."""
        with self.lock:
            have = self.entries.setdefault(corpus, {}).get(item_id)
            if have is None or have.seq < entry.seq:
                self.entries[corpus][item_id] = entry

    def attach(self, served: ServedCorpus) -> None:
        """Search ``served`` with its changes after its base (one assignment in ``served.attach``)."""
        base = self.base_seq(served)
        if base is None:  # encoded before the log existed: stale or fresh as its fingerprint says
            return
        with self.lock:
            kept = {i: e for i, e in self.entries.get(served.corpus, {}).items() if e.seq > base}
            self.cursor[served.corpus] = max(self.cursor.get(served.corpus, 0), base)
        served.attach(build_deltas(served, kept))
        served.delta_complete = lambda engine: self.complete(engine, served)  # read by the catalog

    def complete(self, engine: Engine, served: ServedCorpus) -> bool:
        """True when base + delta hold every change of the corpus: none came from the command line
        since the base (those wait for ``corpus encode``, and the catalog says the corpus is stale)."""
        with store.transaction(engine) as session:
            return foreign_changes_after(session, served.corpus, self.base_seq(served) or 0) == 0

    def on_loaded(self, served: ServedCorpus) -> None:
        """A new generation, before it goes live: only the changes it did not fold in stay."""
        if not served.builtin:
            self.attach(served)

    def refresh(self, corpus: str) -> None:
        served = self.registry.live().get(corpus)
        if served is not None:
            self.attach(served)

    def poll(self, engine: Engine) -> None:
        """Apply the log's new rows to every served corpus (the store probe's thread runs this)."""
        for name, served in self.registry.live().items():
            if served.builtin or self.base_seq(served) is None:
                continue
            changed = self._read(engine, served)
            if changed:
                self.attach(self.registry.live().get(name, served))

    def _read(self, engine: Engine, served: ServedCorpus) -> bool:
        C = store.CorpusChangeRecord
        after = self.cursor.get(served.corpus, self.base_seq(served))
        with store.transaction(engine) as session:
            rows = session.execute(
                select(C.seq, C.item_id, C.op, C.data)
                .where(C.corpus == served.corpus, C.seq > after)
                .order_by(C.seq)
                .limit(1000)
            ).all()
            puts = [json.loads(d) for _, _, op, d in rows if op == PUT and _from_api(d)]
            saved = {kind: _saved(session, served, kind, puts) for kind in ("image", "text")}
        for seq, item_id, op, data in rows:
            if not _from_api(data):
                continue  # a command-line change: the corpus is stale until `corpus encode`
            entry = Entry(seq, op) if op == DELETE else _entry(served, seq, json.loads(data), saved)
            self.record(served.corpus, item_id, entry)
        if rows:
            with self.lock:
                self.cursor[served.corpus] = max(self.cursor.get(served.corpus, 0), rows[-1][0])
        return bool(rows)


def _from_api(data: str | None) -> bool:
    return data is not None and json.loads(data).get("source") == API


def _saved(session: store.Session, served: ServedCorpus, kind: str, puts: list[dict]) -> dict:
    digests = [p.get(f"{'image' if kind == 'image' else 'caption'}_sha256") for p in puts]
    return vector_cache.lookup(session, server_key(served, kind), kind, [d for d in digests if d])


def _entry(served: ServedCorpus, seq: int, data: dict, saved: dict[str, dict]) -> Entry:
    """A logged put with its vectors: saved ones by digest, the rest encoded here."""
    vectors = {}
    image, caption = data.get("image_sha256"), data.get("caption_sha256")
    if image and data.get("image_status") == store.STATUS_OK:
        vector = saved["image"].get(image)
        if vector is None:
            encoded, errors = served.queries.encoder.encode_image_files([data["image_path"]], workers=0)
            vector = None if errors[0] else encoded[0]
        if vector is not None:
            vectors["image"] = vector
    if caption and data.get("caption"):
        vector = saved["text"].get(caption)
        vectors["text"] = vector if vector is not None else served.queries.encode_text(data["caption"])[0]
    return Entry(seq, PUT, data, vectors)


def build_deltas(served: ServedCorpus, entries: dict[str, Entry]) -> dict[str, Delta | None]:
    """A ``Delta`` per target of ``served``: the put items (columns, vectors) and the deleted ids."""
    if not entries:
        return {t: None for t in served.searches}
    puts = [(i, e) for i, e in entries.items() if e.op == PUT]
    base = served.columns
    fields = dict(base.fields)
    for _, e in puts:
        for f, v in (e.data.get("attributes") or {}).items():
            fields.setdefault(f, "str" if isinstance(v, str) else "float" if isinstance(v, float) else "int")
    items = [
        SimpleNamespace(
            item_id=i,
            caption=e.data.get("caption"),
            image_path=e.data.get("image_path"),
            time=_time(e.data.get("time")),
            attributes=e.data.get("attributes") or {},
        )
        for i, e in puts
    ]
    columns = Columns.from_items(items, fields=fields, time_kind=base.time_kind)
    deleted = {i for i, e in entries.items() if e.op == DELETE}
    out: dict[str, Delta | None] = {}
    for target in served.searches:
        with_vector = [(i, e.seq, e.vectors[target]) for i, e in puts if target in e.vectors]
        dim = served.index.manifest.embed_dim
        vectors = (
            np.stack([v for *_, v in with_vector]).astype(np.float32) if with_vector else np.zeros((0, dim))
        )
        vectors = vectors.astype(np.float32)
        # QB-Norm: a put item's column from the generation's bank (indexer.query_bank, "Items put after")
        qb = served.put_columns(target, [(i, seq) for i, seq, _ in with_vector], vectors)
        out[target] = Delta([i for i, *_ in with_vector], vectors, columns, deleted, qb=qb)
    return out


def _time(value: object) -> datetime | int | None:
    if isinstance(value, str):
        return datetime.fromisoformat(value)
    return value if isinstance(value, int) else None


# --- The writes: checked, stored in one transaction, applied to the local delta ----------------

MAX_ID = 255
_WRITE_LOCK = threading.Lock()  # one write transaction at a time in this process (SQLite's writer)


class WriteError(Exception):
    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


@dataclass
class PutRequest:
    item_id: str
    image: bytes | None
    caption: str | None
    time: str | None
    attributes: str | None  # JSON object of scalars


def check_item_id(item_id: str) -> str:
    if not item_id or len(item_id) > MAX_ID:
        raise WriteError(422, f"id: an item id is 1..{MAX_ID} characters (got {len(item_id)})")
    if any(c in item_id for c in "/\\\x00") or item_id in {".", ".."}:
        raise WriteError(422, f"id {item_id[:60]!r}: no path separators ('/', '\\'), NUL, '.' or '..'")
    return item_id


def parse_attributes(text: str | None) -> tuple[dict[str, Attribute], dict[str, str]]:
    """(values, kinds) of the ``attributes`` form field: a JSON object of scalars."""
    if not text:
        return {}, {}
    try:
        values = json.loads(text)
    except json.JSONDecodeError as exc:
        raise WriteError(422, f"attributes: not valid JSON ({exc.msg})") from exc
    if not isinstance(values, dict):
        raise WriteError(422, "attributes: expected a JSON object of field: value")
    for name, value in values.items():
        if name in RESERVED or not name.strip() or len(name) > MAX_ID:
            raise WriteError(422, f"attributes: field name {name[:60]!r} is reserved, empty or too long")
        if isinstance(value, dict | list) or (isinstance(value, float) and not math.isfinite(value)):
            raise WriteError(
                422, f"attributes: field {name!r} must be a string, a finite number or true/false"
            )
    kept = {n: int(v) if isinstance(v, bool) else v for n, v in values.items() if v is not None}
    return kept, {n: json_kind(v) for n, v in kept.items()}


def _item(req: PutRequest, image: tuple[str, Path] | None) -> tuple[ItemData, dict[str, str]]:
    try:
        when = parse_time(req.time, where="time")
    except TuwenError as exc:
        raise WriteError(422, str(exc)) from exc
    attributes, kinds = parse_attributes(req.attributes)
    caption = (req.caption or "").strip() or None
    item = ItemData(
        item_id=req.item_id,
        source=API,
        caption=caption,
        image_path=str(image[1]) if image else None,
        image_status=store.STATUS_OK if image else None,
        time=when,
        attributes=attributes,
        image_sha256=image[0] if image else None,
        caption_sha256=vector_cache.digest_text(caption) if caption else None,
    )
    return item, kinds


def put_item(settings: Settings, engine: Engine, deltas: Deltas, corpus: str, req: PutRequest) -> dict:
    """Check, save the image, encode, store in one transaction, apply to the delta (blocking)."""
    check_item_id(req.item_id)
    if req.image is None and not (req.caption or "").strip():
        raise WriteError(422, "an item needs an image or a caption (or both)")
    picture = _decoded(req.image) if req.image is not None else None
    item, kinds = _item(req, None)
    _check_kinds(engine, corpus, kinds, item)  # before anything is written
    image = save_image(settings, corpus, req.image) if req.image is not None else None
    item, kinds = _item(req, image)
    served = deltas.registry.live().get(corpus)
    vectors = _encode(served, picture, item.caption) if served is not None else {}
    seq, status = _store_put(engine, corpus, item, kinds, served, vectors)
    if served is not None and status != "unchanged":
        deltas.record(corpus, item.item_id, Entry(seq, PUT, item.data(), vectors))
        deltas.refresh(corpus)
    return {
        "corpus": corpus,
        "id": item.item_id,
        "op": PUT,
        "status": status,
        "seq": seq,
        "searchable": served is not None and Deltas.base_seq(served) is not None,
        "image_sha256": item.image_sha256,
    }


def _decoded(data: bytes):
    try:
        return open_image(data)
    except ImageDecodeError as exc:
        raise WriteError(422, f"image: not a usable image ({exc}); nothing was stored") from exc


def _encode(served: ServedCorpus, picture, caption: str | None) -> dict[str, np.ndarray]:
    vectors = {}
    if picture is not None and "image" in served.searches:
        vectors["image"] = served.queries.encode_image(picture)[0]
    if caption and "text" in served.searches:
        vectors["text"] = served.queries.encode_text(caption)[0]
    return vectors


def _check_kinds(engine: Engine, corpus: str, kinds: dict[str, str], item: ItemData) -> None:
    with store.transaction(engine) as session:  # reads only: the transaction that writes checks again
        record = session.get(store.CorpusRecord, corpus)
        if record is None or corpus in BUILTIN:
            raise WriteError(404, f"unknown corpus {corpus!r}: add it with `tuwen corpus add {corpus} FILE`")
        try:
            check_fields(corpus, field_kinds(session, corpus), kinds, where="attributes", text_numbers=False)
            time_kind = None if item.time is None else _time_kind(item.time)
            check_time_kind(corpus, record.time_kind, time_kind, where="time")
        except TuwenError as exc:
            raise WriteError(422, str(exc)) from exc


def _time_kind(value: datetime | int) -> str:
    return TIME_INT if isinstance(value, int) else TIME_DATETIME


def _store_put(
    engine: Engine, corpus: str, item: ItemData, kinds: dict, served: ServedCorpus | None, vectors: dict
) -> tuple[int, str]:
    """ONE transaction: item row + attributes, the vectors, the change-log row. (seq, status)."""
    with _WRITE_LOCK, store.transaction(engine) as session:
        lock_changes(session)
        record = session.get(store.CorpusRecord, corpus)
        if record is None:
            raise WriteError(404, f"unknown corpus {corpus!r}")
        try:
            merged = merge_fields(session, corpus, kinds, where="attributes", text_numbers=False)
            merge_time_kind(record, None if item.time is None else _time_kind(item.time), where="time")
        except TuwenError as exc:
            raise WriteError(422, str(exc)) from exc
        new, changed = put_items(session, corpus, [item], merged)
        digests = {"image": item.image_sha256, "text": item.caption_sha256}
        for target, vector in vectors.items():
            kind = KIND_OF_TARGET[target]
            vector_cache.save(session, server_key(served, kind), kind, {digests[target]: vector})
        seq = last_seq(session, corpus)
    return seq, "new" if new else "changed" if changed else "unchanged"


def delete_item(engine: Engine, deltas: Deltas, corpus: str, item_id: str) -> dict:
    """Remove the item in one transaction (row, attributes, a delete in the log), then hide it here."""
    check_item_id(item_id)
    with _WRITE_LOCK, store.transaction(engine) as session:
        lock_changes(session)
        if session.get(store.CorpusRecord, corpus) is None or corpus in BUILTIN:
            raise WriteError(404, f"unknown corpus {corpus!r}")
        removed, _ = delete_items(session, corpus, [item_id], source=API)
        if not removed:
            raise WriteError(404, f"corpus {corpus} has no item {item_id[:100]!r}")
        seq = last_seq(session, corpus)
    deltas.record(corpus, item_id, Entry(seq, DELETE))
    deltas.refresh(corpus)
    return {"corpus": corpus, "id": item_id, "op": DELETE, "seq": seq}
