"""Killing ``tuwen index`` or ``tuwen ingest`` at any point leaves the previous state usable."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import copy_home

from common.settings import Settings
from indexer import index_files, store
from indexer.ingest import ingest

TUWEN = str(Path(sys.executable).parent / "tuwen")
pytestmark = pytest.mark.slow


def _start(args: list[str], home: Path) -> subprocess.Popen:
    env = {**os.environ, "TUWEN_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    home.mkdir(parents=True, exist_ok=True)
    log = open(home / f"{args[0]}.log", "w")  # noqa: SIM115 - the child writes it until it exits
    return subprocess.Popen([TUWEN, *args], env=env, stdout=subprocess.DEVNULL, stderr=log)


def _kill_when(proc: subprocess.Popen, condition, timeout: float = 120) -> bool:
    """SIGKILL ``proc`` as soon as ``condition()`` holds; False if it finished first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if condition():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.005)
    proc.kill()
    raise AssertionError("the process neither finished nor reached the kill point")


def test_killed_index_build_leaves_previous_index_live(built_settings, home):
    settings = Settings(home=copy_home(built_settings.home, home))  # ingested and indexed with tiny
    before = index_files.current_generation(settings.index_dir)
    proc = _start(["index", "--model", "tiny"], home)
    killed = _kill_when(proc, lambda: any(settings.index_dir.glob(".tmp-*")))
    assert killed, "the build finished before it could be killed"
    live = index_files.load_current(settings.index_dir)
    assert live.path == before and len(live.sets["image_candidates"].ids) > 0
    rerun = _start(["index", "--model", "tiny"], home)
    assert rerun.wait(timeout=300) == 0, (home / "index.log").read_text()
    assert index_files.current_generation(settings.index_dir) != before
    assert len(index_files.load_current(settings.index_dir).sets["text_queries"].ids) > 0


def test_killed_ingest_leaves_a_consistent_store(small_corpus, home):
    root, summary = small_corpus
    settings = Settings(home=home)
    ingest(root=root, settings=settings, workers=1, progress=False)
    engine = store.make_engine(settings.store_url)
    with store.transaction(engine) as s:
        before = store.counts(s)
    proc = _start(["ingest", "--root", str(root), "--workers", "1"], home)
    # Kill once it has started checking images, i.e. well inside the run.
    _kill_when(proc, lambda: "check" in (home / "ingest.log").read_text())
    with store.transaction(engine) as s:
        assert store.counts(s) == before  # all or nothing: never a half-written collection
        assert len(store.list_training_pairs(s)) == summary["train_pairs"] - 1  # minus the missing one
    engine.dispose()
    rerun = _start(["ingest", "--root", str(root)], home)
    assert rerun.wait(timeout=300) == 0
