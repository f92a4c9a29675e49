"""The corpora the service searches: every encoded corpus, and the competition's candidate sets.

A corpus is served from its live generation under ``$TUWEN_HOME/corpora/<name>/`` (vectors, a
FAISS index per target, the items' columns): a ``ServedCorpus``, loaded in the background when
its CURRENT changes, as the competition index is (one ``Watched`` per corpus folder). Nothing a
search returns comes from the store. What the store alone knows (corpora added but not encoded,
corpora whose items changed since their encode) is read by ``Catalog`` on the store probe's
thread and kept through an outage.

Where a delta plugs in (issue 19: items put through the API since the generation): a
``ServedCorpus`` is the base; ``served.searches`` is the one reference a request reads, and
``served.attach(deltas)`` replaces it with searches over the same base plus the deltas (one
assignment, ``SegmentSearch.with_delta``). ``CorpusRegistry.on_loaded`` runs for every newly
loaded generation before it goes live: the place to attach the changes logged after the seq its
manifest folded in.

QB-Norm (``"rerank": "qb-norm"``, issue 21): each segment carries its generation's statistics
(``LoadedIndex.banks``, loaded with the generation, never from the store); a put item's column
is computed once from the generation's bank vectors (``ServedCorpus.put_columns``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import select
from sqlalchemy.engine import Engine

from app.core.encoding import QueryEncoder
from app.core.watch import CHECK_INTERVAL_S, Watched
from common.errors import TuwenError
from common.settings import Settings
from indexer import store
from indexer.collection.columns import Columns
from indexer.collection.search import Delta, Segment, SegmentSearch
from indexer.corpus import IMAGE_SET, TEXT_SET, corpus_dir, fingerprint
from indexer.corpus import load_items as load_corpus_items
from indexer.index_files import COLUMNS, CURRENT, LoadedIndex, columns_dir, load_generation
from indexer.manifest import Manifest
from indexer.rerank import QueryBankStats

log = logging.getLogger(__name__)
TARGETS = ("image", "text")
CORPUS_SETS = {"image": IMAGE_SET, "text": TEXT_SET}  # target -> set of a corpus generation
COMPETITION_SETS = {store.IMAGE_CANDIDATES: "image", store.TEXT_CANDIDATES: "text"}  # set -> target
CATALOG_INTERVAL_S = 5.0
QueryEncoderFor = Callable[..., QueryEncoder]  # (spec, model_id, *, where) -> the shared encoder


class ServedCorpus:
    """One generation of a corpus, loaded: its columns, a segment per target, its query encoder."""

    def __init__(
        self,
        *,
        corpus: str,
        index: LoadedIndex,
        columns: Columns,
        segments: dict[str, Segment],
        queries: QueryEncoder,
        builtin: bool = False,
    ):
        self.corpus = corpus
        self.name = index.path.name  # the generation: what ``Watched`` compares
        self.index = index
        self.columns = columns
        self.segments = segments
        self.queries = queries
        self.builtin = builtin
        self.loaded_at = time.time()
        self._put_columns: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}  # QB-Norm columns of put items
        self._bank_vectors: dict[str, np.ndarray | None] = {}
        # what requests search: the base alone until a delta is attached (one reference)
        self.searches: dict[str, SegmentSearch] = {t: SegmentSearch(s) for t, s in segments.items()}

    @property
    def manifest(self) -> Manifest:
        return self.index.manifest

    @property
    def model_id(self) -> str:
        return self.index.model_id

    @property
    def fingerprint(self) -> str | None:
        return (self.manifest.source or {}).get("fingerprint")

    def put_columns(self, target: str, keys: Sequence[tuple], vectors: np.ndarray) -> QueryBankStats | None:
        """QB-Norm's columns of put items (``keys``: one hashable per vector row, e.g. (id, seq)),
        from the generation's bank (``SetBank.columns``), each computed once; None without a bank."""
        set_name = CORPUS_SETS[target]
        found = self.index.banks.get(set_name)
        if found is None:
            return None
        if set_name not in self._bank_vectors:
            self._bank_vectors[set_name] = self.index.bank_vectors(set_name)
        bank = self._bank_vectors[set_name]
        if bank is None:
            return None
        memo = self._put_columns
        missing = [i for i, key in enumerate(keys) if (target, key) not in memo]
        if missing:
            fresh = found.columns(bank, np.asarray(vectors, dtype=np.float32)[missing])
            for j, i in enumerate(missing):
                memo[(target, keys[i])] = (fresh.log_norm[j], fresh.hubs[j])
        columns = [memo[(target, key)] for key in keys]
        log_norm = np.array([c[0] for c in columns], dtype=np.float64)
        hubs = np.array([c[1] for c in columns], dtype=bool)
        return QueryBankStats(log_norm, hubs, found.stats.beta, found.stats.k)

    def attach(self, deltas: dict[str, Delta | None]) -> None:
        """Search the base plus ``deltas`` (by target) from the next request on: one assignment."""
        self.searches = {t: s.with_delta(deltas.get(t)) for t, s in self.searches.items()}


def load_corpus(corpus: str, path: Path, queries_for: QueryEncoderFor) -> ServedCorpus:
    """The generation at ``path`` of corpus ``corpus``, ready to search."""
    index = load_generation(path)
    if not (columns_dir(path) / "columns.json").is_file():
        raise TuwenError(
            f"corpus {corpus} was encoded before the service could search it (no {COLUMNS}/ in "
            f"{path.name}): run `tuwen corpus encode {corpus} --model {index.manifest.model_spec}`"
        )
    columns = Columns.load(columns_dir(path), mmap=True)
    queries = queries_for(index.manifest.model_spec, index.model_id, where=path)
    index.check_model(queries.model_id)
    segments = {}
    for target, set_name in CORPUS_SETS.items():
        vs = index.sets.get(set_name)
        if vs is not None and vs.index is not None:
            qb = index.banks[set_name].stats if set_name in index.banks else None
            segments[target] = Segment(vs.vectors, vs.index, columns, vector_ids=vs.ids, qb=qb)
    return ServedCorpus(corpus=corpus, index=index, columns=columns, segments=segments, queries=queries)


def competition_corpora(index: LoadedIndex, queries: QueryEncoder) -> dict[str, ServedCorpus]:
    """The competition's candidate sets of a loaded index generation, as corpora."""
    out = {}
    for set_name, target in COMPETITION_SETS.items():
        vs = index.sets.get(set_name)
        if vs is None or vs.index is None:
            continue
        folder = columns_dir(index.path, set_name)
        if not (folder / "columns.json").is_file():
            log.warning(
                "%s has no %s/%s/ (built by an older tuwen): rerun `tuwen index` to search it as a corpus",
                index.path.name, COLUMNS, set_name,
            )  # fmt: skip
            continue
        columns = Columns.load(folder, mmap=True)
        qb = index.banks[set_name].stats if set_name in index.banks else None
        segment = Segment(vs.vectors, vs.index, columns, vector_ids=vs.ids, qb=qb)
        served = ServedCorpus(
            corpus=set_name,
            index=index,
            columns=columns,
            segments={target: segment},
            queries=queries,
            builtin=True,
        )
        out[set_name] = served
    return out


@dataclass
class CatalogEntry:
    """What the store says of a corpus (``tuwen corpus add``)."""

    name: str
    rows: int
    fields: dict[str, str]
    time_kind: str | None
    added_at: str


@dataclass
class Catalog:
    """The corpora in the store and whether each live generation still matches its items.

    Refreshed on the store probe's thread; an outage keeps the last known state.
    """

    entries: dict[str, CatalogEntry] = field(default_factory=dict)
    stale: dict[str, str] = field(default_factory=dict)  # corpus -> why its generation is stale
    checked: dict[str, tuple] = field(default_factory=dict)  # corpus -> (generation, added_at) checked
    known: bool = False  # read at least once

    def refresh(self, engine: Engine, served: dict[str, ServedCorpus], settings: Settings) -> None:
        entries = read_catalog(engine)
        for name, corpus in served.items():
            entry = entries.get(name)
            key = (corpus.name, entry.added_at if entry else None)
            if entry is None or self.checked.get(name) == key:
                continue
            complete = getattr(corpus, "delta_complete", None)  # base + the API's changes (issue 19)
            if complete is not None and complete(engine):
                self.stale.pop(name, None)
                continue
            self.checked[name] = key  # a fingerprint costs a read of the items: once per change
            items = load_corpus_items(settings=settings, name=name)
            if fingerprint(items) == corpus.fingerprint:
                self.stale.pop(name, None)
            else:
                self.stale[name] = (
                    f"the items of corpus {name} changed since it was encoded ({corpus.name}): "
                    f"run `tuwen corpus encode {name}`"
                )
        self.entries, self.known = entries, True


def read_catalog(engine: Engine) -> dict[str, CatalogEntry]:
    C, F = store.CorpusRecord, store.CorpusFieldRecord
    with store.transaction(engine) as session:
        fields: dict[str, dict[str, str]] = {}
        for corpus, name, kind in session.execute(
            select(F.corpus, F.field, F.kind).order_by(F.corpus, F.position)
        ):
            fields.setdefault(corpus, {})[name] = kind
        rows = session.execute(select(C.name, C.rows, C.time_kind, C.added_at).order_by(C.name)).all()
    return {
        name: CatalogEntry(name, n, fields.get(name, {}), time_kind, added_at.isoformat() if added_at else "")
        for name, n, time_kind, added_at in rows
    }


class CorpusRegistry:
    """Every corpus folder under ``$TUWEN_HOME/corpora/`` with a CURRENT, each a ``Watched``."""

    def __init__(self, settings: Settings, queries_for: QueryEncoderFor, *, on_swap: Callable[[], None]):
        self.settings = settings
        self.root = corpus_dir(settings, "x").parent
        self.catalog = Catalog()
        self.queries_for = queries_for
        self.on_swap = on_swap
        self.on_loaded: list[Callable[[ServedCorpus], None]] = []  # e.g. attach the delta (issue 19)
        self._watched: dict[str, Watched[ServedCorpus]] = {}
        self._guard = threading.Lock()
        self._next_scan = 0.0

    def _watcher(self, name: str) -> Watched[ServedCorpus]:
        def load(path: Path, _previous: ServedCorpus | None) -> ServedCorpus:
            served = load_corpus(name, path, self.queries_for)
            for hook in self.on_loaded:
                hook(served)
            return served

        return Watched(self.root / name, load, label=f"corpus {name}", on_swap=self.on_swap)

    def scan(self) -> list[Watched[ServedCorpus]]:
        """Watch every corpus folder with a CURRENT (new ones appear as they are first encoded)."""
        found = sorted(p.parent.name for p in self.root.glob(f"*/{CURRENT}")) if self.root.is_dir() else []
        new = []
        with self._guard:
            for name in found:
                if name not in self._watched:
                    self._watched[name] = self._watcher(name)
                    new.append(self._watched[name])
        return new

    def open(self) -> None:
        """Load every encoded corpus now (a corpus that fails is reported, the others served)."""
        for watched in self.scan():
            watched.open(strict=False)
        self._next_scan = time.monotonic() + CHECK_INTERVAL_S

    async def _rescan(self) -> None:
        import anyio.to_thread  # noqa: PLC0415 - the async side only

        now = time.monotonic()
        if now >= self._next_scan:
            self._next_scan = now + CHECK_INTERVAL_S
            await anyio.to_thread.run_sync(self.scan)

    async def get(self, name: str) -> tuple[ServedCorpus | None, str | None]:
        """(the served corpus or None, why it is not served) for a request."""
        if name not in self._watched:
            await self._rescan()
        watched = self._watched.get(name)
        if watched is None:
            return None, None
        return await watched.current(), watched.last_error

    async def all(self) -> dict[str, tuple[ServedCorpus | None, str | None]]:
        await self._rescan()
        return {name: (await w.current(), w.last_error) for name, w in sorted(self._watched.items())}

    def live(self) -> dict[str, ServedCorpus]:
        return {name: w.live for name, w in list(self._watched.items()) if w.live is not None}

    def refresh_catalog(self, engine: Engine) -> None:
        self.catalog.refresh(engine, self.live(), self.settings)

    def model_ids(self) -> set[str]:
        return {c.model_id for c in self.live().values()}

    @property
    def loading(self) -> bool:
        return any(w.loading for w in list(self._watched.values()))

    def wait_loaded(self, timeout: float | None = None) -> None:
        for watched in self.scan():
            watched.open(strict=False)
        for watched in list(self._watched.values()):
            watched.wait_loaded(timeout)
