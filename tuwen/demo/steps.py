"""The demo's numbered steps with their seconds, and folders that a stopped run may leave half-made.

``Steps.step(title)`` prints ``[n/N] title`` and times the step; ``Steps.table()`` is the timing
table printed at the end. ``generated(folder, make)`` reuses a generated folder only when a
previous run finished it (a ``.complete`` marker written last), else rebuilds it from scratch;
``fresh_report(folder)`` removes a report folder that has no ``report.json`` (a run stopped while
writing it) so the study writes it anew.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from common.console import say as _say
from common.reports import is_report

COMPLETE = ".complete"


class Steps:
    def __init__(self, total: int, say: Callable[[str], None] = _say) -> None:
        self.total, self.say = total, say
        self.started = time.perf_counter()
        self.seconds: list[tuple[str, float]] = []

    @contextmanager
    def step(self, title: str) -> Iterator[None]:
        self.say(f"[{len(self.seconds) + 1}/{self.total}] {title}")
        began = time.perf_counter()
        try:
            yield
        finally:
            self.seconds.append((title.split(":")[0], time.perf_counter() - began))

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def table(self) -> str:
        rows = [f"| {i} | {title} | {s:.1f} |" for i, (title, s) in enumerate(self.seconds, 1)]
        total = f"| | total | {self.elapsed():.1f} |"
        return "\n".join(["| step | what | seconds |", "|---|---|---|", *rows, total])


def generated(folder: Path, make: Callable[[Path], object]) -> bool:
    """Make ``folder`` with ``make(folder)`` unless a run already finished it; True when reused."""
    if (folder / COMPLETE).is_file():
        return True
    if folder.exists():
        shutil.rmtree(folder)
    make(folder)
    (folder / COMPLETE).write_text("", encoding="utf-8")
    return False


def fresh_report(folder: Path) -> Path:
    """``folder`` without the leftovers of a study stopped half-way (no ``report.json`` yet)."""
    if folder.exists() and not is_report(folder):
        shutil.rmtree(folder)
    return folder


class Interruption:
    """SIGTERM (``kill``, a supervisor) and SIGINT stop the demo as Ctrl-C does: through its
    ``finally``, and for sure.

    SIGINT is claimed too because a process started in the background of a script inherits it
    ignored (bash does that to ``cmd &``), and Python then never raises KeyboardInterrupt: the demo
    would go on training after a Ctrl-C sent to its group.

    A KeyboardInterrupt raised by a signal handler can be lost: Python ignores an exception raised
    while a ``__del__`` or a weakref callback runs (a DataLoader's, a file's), and the demo would go
    on. So the first signal also starts a watchdog that raises it again every ``repeat_s`` seconds
    until the demo reaches its cleanup (``cleaning_up``), and that, if the process is still alive
    ``deadline_s`` after the signal (a lost interrupt inside C code, a thread that never ends),
    prints every thread's stack, calls ``force`` (stop the page) and exits with 130."""

    def __init__(self, *, force: Callable[[], None], repeat_s: float = 3.0, deadline_s: float = 30.0) -> None:
        self.force, self.repeat_s, self.deadline_s = force, repeat_s, deadline_s
        self.signalled_at: float | None = None
        self._cleanup = threading.Event()
        self._previous: dict = {}

    def __enter__(self) -> Interruption:
        if threading.current_thread() is threading.main_thread():
            signals = (signal.SIGTERM, signal.SIGINT)
            self._previous = {sig: signal.signal(sig, self._handle) for sig in signals}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def cleaning_up(self) -> None:
        """The demo reached its cleanup: interrupts are no longer repeated (the deadline stays)."""
        self._cleanup.set()

    def _handle(self, signum, frame) -> None:
        if self.signalled_at is None:
            self.signalled_at = time.monotonic()
            threading.Thread(target=self._watch, name="tuwen-demo-interrupt", daemon=True).start()
        raise KeyboardInterrupt

    def _watch(self) -> None:
        deadline = self.signalled_at + self.deadline_s
        while not self._cleanup.wait(min(self.repeat_s, max(deadline - time.monotonic(), 0))):
            if time.monotonic() >= deadline:
                break
            # a real signal to the main thread: it also wakes a sleep or a blocking call, which
            # ``_thread.interrupt_main`` does not; the handler above raises it again
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
        time.sleep(max(deadline - time.monotonic(), 0))  # a cleanup that began has until the deadline
        print(
            f"tuwen demo: still running {self.deadline_s:.0f} s after the interrupt; "
            "stopping it (every thread's stack below)",
            file=sys.stderr,
            flush=True,
        )
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        with contextlib.suppress(Exception):
            self.force()
        os._exit(130)
