"""The demo's numbered steps with their seconds, and folders that a stopped run may leave half-made.

``Steps.step(title)`` prints ``[n/N] title`` and times the step; ``Steps.table()`` is the timing
table printed at the end. ``generated(folder, make)`` reuses a generated folder only when a
previous run finished it (a ``.complete`` marker written last), else rebuilds it from scratch;
``fresh_report(folder)`` removes a report folder that has no ``report.json`` (a run stopped while
writing it) so the study writes it anew.
"""

from __future__ import annotations

import shutil
import signal
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


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (``kill``, a supervisor) and SIGINT stop the demo as Ctrl-C does: through its
    ``finally``. SIGINT is claimed too because a process started in the background of a script
    inherits it ignored (bash does that to ``cmd &``), and Python then never raises
    KeyboardInterrupt: the demo would go on training after a Ctrl-C sent to its group."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
