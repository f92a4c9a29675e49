"""``app.core.watch.Watched``: CURRENT is stat'ed at most every CHECK_INTERVAL_S, never on the event
loop, and a publish is loaded in the background while the live object keeps answering (issue 17)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import anyio

from app.core import watch
from app.core.watch import Watched
from indexer.index_files import CURRENT
from indexer.manifest import MANIFEST_FILE


@dataclass(frozen=True)
class Loaded:
    name: str


def _publish(root: Path, name: str) -> None:
    (root / name).mkdir(parents=True, exist_ok=True)
    (root / name / MANIFEST_FILE).write_text("{}")
    tmp = root / f".{CURRENT}.tmp"
    tmp.write_text(name)
    tmp.replace(root / CURRENT)


def test_current_is_stated_at_most_every_interval_and_off_the_loop(tmp_path, monkeypatch):
    _publish(tmp_path, "gen-1")
    watched = Watched(tmp_path, lambda path, _previous: Loaded(path.name), label="test")
    watched.open(strict=True)
    stats: list[int] = []
    real = watched._pointer_signature

    def counted():
        stats.append(threading.get_ident())
        return real()

    monkeypatch.setattr(watched, "_pointer_signature", counted)

    async def many() -> tuple[int, list]:
        loop_thread = threading.get_ident()
        seen = [await watched.current() for _ in range(200)]  # within one interval: no stat at all
        time.sleep(watch.CHECK_INTERVAL_S)
        seen.append(await watched.current())  # one stat, on a worker thread
        return loop_thread, seen

    loop_thread, seen = anyio.run(many)
    assert {s.name for s in seen} == {"gen-1"}
    assert len(stats) == 1 and loop_thread not in stats


def test_a_publish_loads_in_the_background_while_the_live_one_answers(tmp_path):
    _publish(tmp_path, "gen-1")
    release = threading.Event()

    def slow_load(path: Path, _previous) -> Loaded:
        if path.name == "gen-2":
            release.wait(10)
        return Loaded(path.name)

    watched = Watched(tmp_path, slow_load, label="test")
    watched.open(strict=True)
    _publish(tmp_path, "gen-2")
    watched._next_check = 0.0  # as if the interval had passed

    async def ask() -> str:
        return (await watched.current()).name

    assert anyio.run(ask) == "gen-1" and watched.loading  # answered at once, loading behind
    release.set()
    watched.wait_loaded(10)
    assert watched.live.name == "gen-2" and not watched.loading and watched.last_error is None


def test_a_failed_load_is_tried_again_later_without_a_new_publish(tmp_path, monkeypatch):
    """A generation that failed to load (a file still being copied, memory short for a moment) is
    tried again after RETRY_FIRST_S, then twice as long, while the previous one serves; once it
    loads it is served, with no new publish of CURRENT."""
    monkeypatch.setattr(watch, "RETRY_FIRST_S", 0.5)
    _publish(tmp_path, "gen-1")
    attempts: list[str] = []

    def flaky(path: Path, _previous) -> Loaded:
        attempts.append(path.name)
        if path.name == "gen-2" and attempts.count("gen-2") < 3:
            raise OSError("gen-2/vectors.npy: short read")
        return Loaded(path.name)

    watched = Watched(tmp_path, flaky, label="test")
    watched.open(strict=True)
    _publish(tmp_path, "gen-2")
    assert not watched.refresh()  # the first try fails: gen-1 still serves
    assert "short read" in watched.last_error and watched.live.name == "gen-1"
    assert not watched.pointer_changed() and not watched.refresh()  # not due: no second try yet
    assert attempts.count("gen-2") == 1
    time.sleep(0.6)
    assert watched.pointer_changed() and not watched.refresh()  # the second try fails: next in 1 s
    time.sleep(0.3)
    assert not watched.pointer_changed()
    time.sleep(0.8)
    assert watched.pointer_changed() and watched.refresh()  # the third loads
    assert watched.live.name == "gen-2" and watched.last_error is None and attempts.count("gen-2") == 3
    assert not watched.pointer_changed()


def test_a_first_load_that_failed_is_tried_again_by_a_later_request(tmp_path, monkeypatch):
    """A server started while its generation could not load serves it once it can, without a
    restart or a new publish: the next request after the retry delay loads it."""
    monkeypatch.setattr(watch, "RETRY_FIRST_S", 0.3)
    _publish(tmp_path, "gen-1")
    broken = [True]

    def load(path: Path, _previous) -> Loaded:
        if broken[0]:
            raise OSError("gen-1/index.faiss: no space left on device")
        return Loaded(path.name)

    watched = Watched(tmp_path, load, label="test")
    watched.open(strict=False)
    assert watched.live is None and "no space left" in watched.last_error
    broken[0] = False
    assert anyio.run(watched.current) is None  # not due yet
    time.sleep(0.4)
    assert anyio.run(watched.current).name == "gen-1" and watched.last_error is None
