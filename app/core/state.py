"""What the service holds: the store engine and the live index generation with its model.

A request captures one ``Generation`` at its start and uses only that object, so it never mixes
ids or vectors of two generations. ``tuwen index`` publishes a new generation by replacing
``$TUWEN_HOME/index/CURRENT``; every request stats that file (a few microseconds) and, when it
changed, the first request to notice starts loading the new generation (and its model when the
model differs) on a background thread. Requests keep using the live generation until the new one
is loaded, then the reference is swapped in one assignment. Why not load inside the request: a new
model (and, with an exported backend, its conversion) takes seconds to minutes, and every query
would wait for it. Only a server with nothing live yet waits for the load. A generation that fails
to load is logged and reported in /api/stats; the previous one keeps serving.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass

import anyio.to_thread
from sqlalchemy.engine import Engine

from app.core.encoding import QueryEncoder
from common.errors import TuwenError
from common.settings import Settings
from indexer import store
from indexer.index_files import (
    CURRENT,
    LoadedIndex,
    current_generation,
    current_generation_name,
    load_generation,
)
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

    @property
    def manifest(self) -> Manifest:
        return self.index.manifest


class ServiceState:
    def __init__(self, settings: Settings, engine: Engine):
        self.settings = settings
        self.engine = engine
        self.generation: Generation | None = None
        self.last_error: str | None = None  # why the newest CURRENT could not be loaded
        self._signature: tuple | None = None  # of the CURRENT file we last acted on
        self._lock = threading.Lock()  # one load at a time
        self._loader: threading.Thread | None = None  # the background load, while it runs
        self._loader_guard = threading.Lock()

    @classmethod
    def open(cls, settings: Settings) -> ServiceState:
        """Open the store and load the live generation; no index yet is fine (not ready)."""
        state = cls(settings, store.make_engine(settings.store_url))
        try:
            state._signature = state._pointer_signature()
            if current_generation_name(settings.index_dir) is None:
                log.warning("no index in %s yet: run `tuwen index` (503 until then)", settings.index_dir)
                return state
            state.generation = state._load(current_generation(settings.index_dir).name, previous=None)
        except BaseException:
            state.close()
            raise
        return state

    def close(self) -> None:
        self.engine.dispose()

    def _pointer_signature(self) -> tuple | None:
        try:
            st = os.stat(self.settings.index_dir / CURRENT)
        except FileNotFoundError:
            return None
        # CURRENT is replaced with os.replace: a new inode and mtime each publish
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def pointer_changed(self) -> bool:
        return self._pointer_signature() != self._signature

    async def current(self) -> Generation | None:
        """The generation a request should use: the live one, while a newly published one loads.

        With nothing live yet, the request waits for the load (there is nothing else to serve).
        """
        live = self.generation
        if not self.pointer_changed():
            return live
        if live is None:
            await anyio.to_thread.run_sync(self.refresh)
            return self.generation
        self._refresh_in_background()
        return live

    @property
    def loading(self) -> bool:
        """A newly published generation is being loaded in the background."""
        loader = self._loader
        return loader is not None and loader.is_alive()

    def _refresh_in_background(self) -> None:
        with self._loader_guard:
            if self.loading:
                return  # one loader; a publish during its load is seen by the next request
            self._loader = threading.Thread(target=self.refresh, name="tuwen-generation-loader", daemon=True)
            self._loader.start()

    def wait_loaded(self, timeout: float | None = None) -> None:
        """Block until a background load (if any) has finished (tests use it to wait for a swap)."""
        loader = self._loader
        if loader is not None:
            loader.join(timeout)

    def refresh(self, *, force: bool = False) -> bool:
        """Load the generation CURRENT names if it is not the live one (blocking); True if swapped.

        With ``force`` a load failure raises TuwenError instead of being only logged.
        """
        with self._lock:
            signature = self._pointer_signature()
            if signature == self._signature and not force:
                return False  # another request already handled this change
            self._signature = signature
            previous = self.generation
            name = current_generation_name(self.settings.index_dir)
            if name is None:
                return False
            if previous is not None and previous.name == name:
                self.last_error = None  # CURRENT points back at what we serve: nothing is wrong
                return False
            try:
                path = current_generation(self.settings.index_dir)
                generation = self._load(path.name, previous=previous)
            except Exception as exc:  # noqa: BLE001 - keep serving the previous generation
                self.last_error = f"could not load index generation {name}: {exc}"
                log.error("%s; still serving %s", self.last_error, previous.name if previous else "nothing")
                if force:
                    raise TuwenError(self.last_error) from exc
                return False
            self.generation = generation  # one reference assignment: the swap
            self.last_error = None
            log.info("serving index generation %s (model %s)", generation.name, generation.queries.model_id)
            return True

    def _load(self, name: str, *, previous: Generation | None) -> Generation:
        index = load_generation(self.settings.index_dir / name)
        spec = index.manifest.model_spec
        if previous is not None and previous.queries.model_id == index.model_id:
            queries = previous.queries  # same weights: keep the model and its warm text cache
        else:
            if not spec:
                raise TuwenError(f"{index.path}/manifest.json names no model_spec: rerun `tuwen index`")
            # release_torch: with an exported backend, the PyTorch weights are freed once loaded
            encoder = open_encoder(spec, settings=self.settings, release_torch=True)
            log.info("query encoder: model %s, %s", encoder.model_id, encoder.describe())
            queries = QueryEncoder(
                encoder,
                batch_window_ms=self.settings.query_batch_window_ms,
                batch_max=self.settings.query_batch_max,
            )
        index.check_model(queries.model_id)
        return Generation(name=name, index=index, queries=queries, loaded_at=time.time())
