"""The store as the service sees it: up (``ready``) or ``degraded`` since when and why.

Searches never touch the store (everything they return is loaded with the generations), so an
outage costs only what needs it: writes and the admin reload answer 503 with ``Retry-After``.
A background probe opens a fresh connection every ``PROBE_INTERVAL_S`` and reads the schema's
revision (``SELECT 1`` alone would pass on a SQLite file nobody can read); a request that meets
a dead connection reports it at once (``report_failure``). The log says "store unreachable" once
when it goes and "store back" once, with the outage's length, when it returns: never a traceback
per request. The service starts with the store down: the engine (and its schema check) is opened
when the store first answers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.pool import NullPool

from common.errors import TuwenError
from indexer import store

log = logging.getLogger(__name__)
PROBE_INTERVAL_S = 1.0
RETRY_AFTER_S = 5  # what a 503 tells the client; the probe notices a return within a second
CONNECT_TIMEOUT_S = 3
# What an unreachable store raises (refused, reset, timed out, a file that cannot be opened).
UNREACHABLE = (OperationalError, InterfaceError, DisconnectionError, PoolTimeout)
Task = Callable[[Engine], None]


def store_name(url: str) -> str:
    """The store as a person reads it, without a password: ``PostgreSQL at host:port/db``."""
    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - a URL this bad never got an engine anyway
        return "the store"
    if parsed.get_backend_name() == "sqlite":
        return f"the store (SQLite {parsed.database})"
    where = f"{parsed.host or 'localhost'}:{parsed.port or ''}/{parsed.database or ''}"
    return f"the store (PostgreSQL at {where})" if "postgres" in parsed.drivername else f"the store ({where})"


def unreachable_cause(exc: BaseException) -> BaseException | None:
    """The connection error behind ``exc`` (itself or the cause of a TuwenError), else None."""
    for e in (exc, exc.__cause__):
        if isinstance(e, UNREACHABLE):
            return e
    return None


def _short(exc: BaseException) -> str:
    msg = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return msg[0][:300] if msg else type(exc).__name__


class StoreHealth:
    """Store state, its probe thread, and the engine once the store has answered."""

    def __init__(self, url: str, *, interval: float = PROBE_INTERVAL_S):
        self.url = url
        self.name = store_name(url)
        self.interval = interval
        self.engine: Engine | None = None
        self.reason: str | None = None  # why it is degraded; None when ready
        self.down_since: float | None = None
        self.outages = 0
        self._tasks: list[tuple[float, Task, list[float]]] = []  # (every, fn, [next run])
        self._probe_engine = self._make_probe_engine(url)
        self._state_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def _make_probe_engine(url: str) -> Engine:
        args = {"connect_timeout": CONNECT_TIMEOUT_S} if "postgres" in url.split(":", 1)[0] else {}
        return create_engine(url, poolclass=NullPool, connect_args=args)  # a fresh connection each probe

    @property
    def ready(self) -> bool:
        return self.reason is None and self.engine is not None

    @property
    def state(self) -> str:
        return "ready" if self.ready else "degraded"

    def open(self) -> None:
        """Open the engine (schema checked, upgraded if needed) if the store answers; else start degraded.

        A store that answers but refuses us (a bad URL, a schema of a newer release) raises.
        """
        try:
            self.engine = store.make_engine(self.url)
        except TuwenError as exc:
            cause = unreachable_cause(exc)
            if cause is None:
                raise
            self.mark_down(_short(cause))

    def add_task(self, every: float, fn: Task) -> None:
        """Run ``fn(engine)`` on the probe thread every ``every`` seconds while the store is up."""
        self._tasks.append((every, fn, [0.0]))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tuwen-store-probe", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._probe_engine.dispose()
        if self.engine is not None:
            self.engine.dispose()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.check()

    def check(self) -> bool:
        """Probe once (a fresh connection reading the schema revision), then run the due tasks."""
        try:
            with self._probe_engine.connect() as conn:
                conn.execute(text("SELECT version_num FROM alembic_version")).all()
            if self.engine is None:
                self.engine = store.make_engine(self.url)
        except Exception as exc:  # noqa: BLE001 - any failure to read is an outage
            self.mark_down(_short(unreachable_cause(exc) or exc))
            return False
        self.mark_up()
        self._run_tasks()
        return True

    def _run_tasks(self) -> None:
        now = time.monotonic()
        for every, fn, next_run in self._tasks:
            if now < next_run[0] or self.engine is None:
                continue
            next_run[0] = now + every
            try:
                fn(self.engine)
            except Exception as exc:  # noqa: BLE001 - a task's own bug must not stop the probe
                cause = unreachable_cause(exc)
                if cause is not None:
                    self.mark_down(_short(cause))
                    return
                log.exception("store task %s failed", getattr(fn, "__qualname__", fn))

    def report_failure(self, exc: BaseException) -> None:
        """A request met an unreachable store: degraded now, without waiting for the probe."""
        self.mark_down(_short(exc))

    def mark_down(self, reason: str) -> None:
        with self._state_lock:
            if self.reason is not None:
                return
            self.reason = f"{self.name} is unreachable: {reason}"
            self.down_since = time.monotonic()
            self.outages += 1
        log.warning("store unreachable: %s (searches keep answering; writes answer 503)", self.reason)

    def mark_up(self) -> None:
        with self._state_lock:
            if self.reason is None:
                return
            length = time.monotonic() - (self.down_since or time.monotonic())
            self.reason, self.down_since = None, None
        log.warning("store back: %s answers again after %.1f s", self.name, length)

    def unavailable_detail(self) -> str:
        why = self.reason or f"{self.name} is not open yet"
        return f"{why}; searches still answer, this needs the store: retry in {RETRY_AFTER_S} s"

    def status(self) -> dict:
        down = None if self.down_since is None else round(time.monotonic() - self.down_since, 1)
        return {"state": self.state, "reason": self.reason, "down_for_s": down, "outages": self.outages}
