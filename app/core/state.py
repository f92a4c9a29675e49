"""What the service holds: the store's health, the live competition generation and the served
corpora, each with the query encoder of its model.

A request captures one ``Generation`` (or one served corpus) at its start and uses only that
object, so it never mixes ids or vectors of two generations. ``tuwen index`` publishes a new
generation by replacing ``$TUWEN_HOME/index/CURRENT`` and ``tuwen corpus encode`` one of
``$TUWEN_HOME/corpora/<name>/CURRENT``; each root is a ``Watched`` (``app.core.watch``): CURRENT
is stat'ed at most every half second off the event loop, a change loads the new generation (and
its model when the model differs) on a background thread, and the reference is swapped in one
assignment when it is loaded. Query encoders are shared per model id: a corpus encoded with the
competition index's model uses the same encoder (and text cache); another model is loaded once.

Searches never need the store: everything they return is loaded with the generations.
``StoreHealth`` (``app.core.store_health``) watches the store for what does need it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import Engine

from app.core.corpora import CATALOG_INTERVAL_S, CorpusRegistry, ServedCorpus, competition_corpora
from app.core.corpus_writes import POLL_INTERVAL_S, Deltas
from app.core.encoding import QueryEncoder
from app.core.store_health import StoreHealth
from app.core.watch import Watched
from common.errors import TuwenError
from common.settings import Settings
from indexer import store
from indexer.index_files import LoadedIndex, load_generation
from indexer.manifest import Manifest
from models.encoder import open_encoder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Generation:
    """One index generation and the model that encodes queries for it."""

    name: str
    index: LoadedIndex
    queries: QueryEncoder
    loaded_at: float
    corpora: dict[str, ServedCorpus]  # its candidate sets as corpora (columns: captions, image paths)

    @property
    def manifest(self) -> Manifest:
        return self.index.manifest


class ServiceState:
    def __init__(self, settings: Settings, health: StoreHealth):
        self.settings = settings
        self.health = health
        self.competition: Watched[Generation] = Watched(
            settings.index_dir, self._load, label="index generation", on_swap=self.drop_unused_encoders
        )
        self.corpora = CorpusRegistry(settings, self.query_encoder, on_swap=self.drop_unused_encoders)
        self.deltas = Deltas(self.corpora)  # items put since each corpus's generation (issue 19)
        self.store_counts: dict[str, int] = {}  # as last read (the probe's thread refreshes them)
        self._encoders: dict[str, QueryEncoder] = {}  # by model id, shared by every generation
        self._encoders_lock = threading.Lock()

    @classmethod
    def open(cls, settings: Settings) -> ServiceState:
        """Open the store (an unreachable one is fine: degraded), load the live generation and
        the encoded corpora; no index yet is fine (the competition search answers 503)."""
        health = StoreHealth(settings.store_url)
        state = cls(settings, health)
        try:
            health.open()
            state.competition.open(strict=True)
            if state.generation is None:
                log.warning("no index in %s yet: run `tuwen index` (503 until then)", settings.index_dir)
            state.corpora.open()
            health.add_task(POLL_INTERVAL_S, state.deltas.poll)  # first: the catalog trusts a followed log
            health.add_task(CATALOG_INTERVAL_S, state.corpora.refresh_catalog)
            health.add_task(CATALOG_INTERVAL_S, state.refresh_counts)
            if health.engine is not None:
                health.check()  # the catalog and counts now, not a second after the start
            health.start()
        except BaseException:
            state.close()
            raise
        return state

    def close(self) -> None:
        self.health.close()

    def refresh_counts(self, engine: Engine) -> None:
        with store.transaction(engine) as session:
            self.store_counts = store.counts(session)

    @property
    def engine(self) -> Engine | None:
        """The store's engine, None while the store has not answered since the start."""
        return self.health.engine

    @property
    def generation(self) -> Generation | None:
        return self.competition.live

    @property
    def last_error(self) -> str | None:
        return self.competition.last_error

    @property
    def loading(self) -> bool:
        """A newly published generation (competition or corpus) is loading in the background."""
        return self.competition.loading or self.corpora.loading

    async def current(self) -> Generation | None:
        """The competition generation a request should use (see ``Watched.current``)."""
        return await self.competition.current()

    def refresh(self, *, force: bool = False) -> bool:
        return self.competition.refresh(force=force)

    def wait_loaded(self, timeout: float | None = None) -> None:
        """Notice any publish now and block until its load has finished (tests wait for swaps so)."""
        self.competition.wait_loaded(timeout)
        self.corpora.wait_loaded(timeout)

    def _load(self, path: Path, previous: Generation | None) -> Generation:
        index = load_generation(path)
        queries = self.query_encoder(index.manifest.model_spec, index.model_id, where=index.path)
        index.check_model(queries.model_id)
        corpora = competition_corpora(index, queries)
        return Generation(
            name=path.name, index=index, queries=queries, loaded_at=time.time(), corpora=corpora
        )

    def query_encoder(self, spec: str, model_id: str, *, where: Path) -> QueryEncoder:
        """The query encoder of ``model_id``: the loaded one, else loaded from ``spec`` (once)."""
        with self._encoders_lock:  # loads run on loader threads; one model load at a time
            queries = self._encoders.get(model_id)
            if queries is None:
                if not spec:
                    raise TuwenError(f"{where}/manifest.json names no model_spec: encode it again")
                queries = self._encoders[model_id] = self._open_query_encoder(spec)
            return queries

    def _open_query_encoder(self, spec: str) -> QueryEncoder:
        # release_torch: with an exported backend, the PyTorch weights are freed once converted
        encoder = open_encoder(spec, settings=self.settings, release_torch=True)
        log.info("query encoder: model %s, %s", encoder.model_id, encoder.describe())
        return QueryEncoder(
            encoder,
            batch_window_ms=self.settings.query_batch_window_ms,
            batch_max=self.settings.query_batch_max,
        )

    def drop_unused_encoders(self) -> None:
        """Forget the encoders no live generation uses any more (after a swap to another model)."""
        used = self.corpora.model_ids()
        if self.generation is not None:
            used.add(self.generation.queries.model_id)
        with self._encoders_lock:
            for model_id in [m for m in self._encoders if m not in used]:
                del self._encoders[model_id]
