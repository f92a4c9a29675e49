"""One generation folder watched: its live object, reloaded in the background when CURRENT changes.

A generation root (``$TUWEN_HOME/index``, ``$TUWEN_HOME/corpora/<name>``) names its live
generation in ``CURRENT``, replaced with ``os.replace`` on every publish. ``Watched`` holds what
was loaded from it (any object with a ``name``: the competition ``Generation``, a served corpus)
and reloads it when CURRENT changes:

- a request asks ``await watched.current()``: CURRENT is stat'ed at most every
  ``CHECK_INTERVAL_S`` (and on a worker thread, never on the event loop: on NFS a stat can
  block), and a change starts one background load;
- requests keep the live object until the new one is loaded, then the reference is swapped in
  one assignment; only a root with nothing live yet makes its request wait for the load;
- a generation that fails to load is logged and kept in ``last_error``; the previous one serves,
  and the load is tried again after ``RETRY_FIRST_S``, doubling up to ``RETRY_MAX_S`` (a file
  still being copied, a full disk, memory short for a moment: none of these republishes CURRENT).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Generic, Protocol, TypeVar

import anyio.to_thread

from common.errors import TuwenError
from indexer.index_files import CURRENT, current_generation, current_generation_name

log = logging.getLogger(__name__)
CHECK_INTERVAL_S = 0.5  # CURRENT is stat'ed at most this often while something is live
RETRY_FIRST_S = 1.0  # a failed load is tried again after this, then twice as long each time
RETRY_MAX_S = 60.0


class Named(Protocol):
    @property
    def name(self) -> str: ...


T = TypeVar("T", bound=Named)


class Watched(Generic[T]):
    """The live object of one generation root, swapped when its CURRENT names another generation."""

    def __init__(
        self,
        root: Path,
        load: Callable[[Path, T | None], T],
        *,
        label: str,
        on_swap: Callable[[], None] | None = None,
    ):
        self.root = root
        self._on_swap = on_swap  # after each swap (the service forgets encoders no one uses)
        self.label = label  # "index generation", "corpus shop": said in the log and in errors
        self._load = load
        self.live: T | None = None
        self.last_error: str | None = None  # why the newest CURRENT could not be loaded
        self._signature: tuple | None = None  # of the CURRENT file we last acted on
        self._failures = 0  # failed loads of that CURRENT in a row
        self._retry_at: float | None = None  # monotonic time the failed load is tried again
        self._next_check = 0.0  # monotonic time of the next stat
        self._lock = threading.Lock()  # one load at a time
        self._loader: threading.Thread | None = None  # the background load, while it runs
        self._loader_guard = threading.Lock()

    def open(self, *, strict: bool) -> None:
        """The first, blocking load; no generation yet is fine. ``strict``: a failure raises."""
        self._signature = self._pointer_signature()
        self._next_check = time.monotonic() + CHECK_INTERVAL_S
        if current_generation_name(self.root) is None:
            return
        try:
            self.live = self._load(current_generation(self.root), None)
        except Exception as exc:
            if strict:
                raise
            self.last_error = f"could not load {self.label}: {exc}"
            log.error("%s", self.last_error)
            self._failed()

    def _pointer_signature(self) -> tuple | None:
        try:
            st = os.stat(self.root / CURRENT)
        except FileNotFoundError:
            return None
        # CURRENT is replaced with os.replace: a new inode and mtime each publish
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def pointer_changed(self) -> bool:
        """CURRENT names something else than we last acted on, or a failed load is due again."""
        return self._pointer_signature() != self._signature or self._retry_due()

    def _retry_due(self) -> bool:
        return self._retry_at is not None and time.monotonic() >= self._retry_at

    def _failed(self) -> None:
        self._failures += 1
        delay = min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (self._failures - 1))
        self._retry_at = time.monotonic() + delay

    def _settled(self) -> None:
        self._failures, self._retry_at = 0, None

    async def current(self) -> T | None:
        """The object a request should use: the live one, while a newly published one loads.

        With nothing live yet, the request waits for the load (there is nothing else to serve).
        """
        live = self.live
        now = time.monotonic()
        if live is not None and now < self._next_check:
            return live
        self._next_check = now + CHECK_INTERVAL_S
        if not await anyio.to_thread.run_sync(self.pointer_changed):
            return live
        if live is None:
            await anyio.to_thread.run_sync(self.refresh)
            return self.live
        self.refresh_in_background()
        return live

    @property
    def loading(self) -> bool:
        """A newly published generation is being loaded in the background."""
        loader = self._loader
        return loader is not None and loader.is_alive()

    def refresh_in_background(self) -> None:
        with self._loader_guard:
            if self.loading:
                return  # one loader; a publish during its load is seen by a later check
            self._loader = threading.Thread(target=self.refresh, name=f"tuwen-load {self.label}", daemon=True)
            self._loader.start()

    def wait_loaded(self, timeout: float | None = None) -> None:
        """Notice a change of CURRENT now and block until its load (if any) has finished."""
        if self.pointer_changed():
            self.refresh_in_background()
        loader = self._loader
        if loader is not None:
            loader.join(timeout)

    def refresh(self, *, force: bool = False) -> bool:
        """Load the generation CURRENT names if it is not the live one (blocking); True if swapped.

        With ``force`` a load failure raises TuwenError instead of being only logged.
        """
        with self._lock:
            signature = self._pointer_signature()
            if signature == self._signature and not force and not self._retry_due():
                return False  # another request already handled this change
            if signature != self._signature:
                self._settled()  # a new CURRENT: its own first try, its own backoff
            self._signature = signature
            previous = self.live
            name = current_generation_name(self.root)
            if name is None:
                return False
            if previous is not None and previous.name == name:
                self.last_error = None  # CURRENT points back at what we serve: nothing is wrong
                return False
            try:
                loaded = self._load(current_generation(self.root), previous)
            except Exception as exc:  # noqa: BLE001 - keep serving the previous generation
                self.last_error = f"could not load {self.label} {name}: {exc}"
                self._failed()
                log.error(
                    "%s; still serving %s; trying again in %.0f s",
                    self.last_error,
                    previous.name if previous else "nothing",
                    self._retry_at - time.monotonic(),
                )
                if force:
                    raise TuwenError(self.last_error) from exc
                return False
            self.live = loaded  # one reference assignment: the swap
            self.last_error = None
            self._settled()
            log.info("serving %s %s", self.label, loaded.name)
        if self._on_swap is not None:
            self._on_swap()
        return True
