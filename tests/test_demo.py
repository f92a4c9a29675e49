"""``tuwen demo`` (issue 23): the page answers before training ends, the fine-tuned generation
replaces the first one, a Ctrl-C leaves no server behind and a rerun in the same home succeeds.

The real command as a subprocess on a free port of 127.0.0.1, one training epoch; every wait is
bounded.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from processes import free_port, stop_process

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def _demo(home: Path, port: int, *extra: str, log: Path) -> subprocess.Popen:
    """``tuwen demo`` writing to ``log`` (a file: a pipe nobody reads would fill and block it)."""
    # Without conftest's NUMBA_THREADING_LAYER: the demo must choose its own.
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"}
    env.update(PYTHONPATH=str(ROOT), TUWEN_HOME=str(home), PYTHONUNBUFFERED="1")
    command = [sys.executable, "-m", "tuwen.cli", "demo", "--home", str(home), "--epochs", "1"]
    return subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", str(port), *extra],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # a process group of its own, like a terminal's
        # SIGINT inherited ignored, as a script's ``cmd &`` (and CI) leaves it: the harder case,
        # the demo must claim Ctrl-C itself (a terminal's default is the easy one)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )


def _get(port: int, path: str) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return json.loads(response.read()) if response.status == 200 else None
    except OSError:
        return None


def _wait(what, timeout: float, proc: subprocess.Popen):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        assert proc.poll() is None, "the demo exited early"
        time.sleep(0.5)
    raise AssertionError(f"not within {timeout} s")


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_page_first_swap_then_clean_stop_and_rerun(tmp_path):
    home, port = tmp_path / "home", free_port()
    proc = _demo(home, port, log=tmp_path / "first.log")
    try:
        first = _wait(lambda: _get(port, "/readyz"), 600, proc)
        assert first["model_id"]
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).status == 200
        assert not (home / "runs" / "demo" / "demo-done.json").exists()  # before training ends
        children = _children(proc.pid)
        assert children, "the page runs as the demo's child"

        def swapped():
            ready = _get(port, "/readyz")
            return ready if ready and ready["generation"] != first["generation"] else None

        first_spec = _get(port, "/api/stats")["model"]["spec"]
        assert first_spec == "tiny"
        second = _wait(swapped, 600, proc)
        stats = _get(port, "/api/stats")  # the checkpoint now (tiny's model id names the architecture)
        assert stats["index"]["generation"] == second["generation"]
        assert stats["model"]["spec"] == str(home / "runs" / "demo" / "best.pt")
        proc.send_signal(signal.SIGINT)  # Ctrl-C to the demo alone: it must stop its page itself
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            log = (tmp_path / "first.log").read_text(encoding="utf-8", errors="replace")
            raise AssertionError(f"still running 60 s after Ctrl-C; its log ends:\n{log[-4000:]}") from None
    finally:
        stop_process(proc)
    assert all(not _alive(pid) for pid in children)
    assert _get(port, "/readyz") is None
    rerun = _demo(home, free_port(), "--no-serve", log=tmp_path / "rerun.log")
    try:
        rerun.wait(timeout=900)
    finally:
        stop_process(rerun)
    out = (tmp_path / "rerun.log").read_text(encoding="utf-8", errors="replace")
    assert rerun.returncode == 0, out[-3000:]
    assert "the search page is up at http://127.0.0.1:" in out
    assert "| trained tiny |" in out and "/api/corpora/posts/search" in out
    # the mask modality (issue 20): GrabCut's line on the posts, their mask clusters, mask rows in both tables
    assert re.search(r"corpus masks posts \(GrabCut\): 600 masks of 600 posts .* median IoU 0\.\d\d", out)
    assert "report clusters-mask:" in out
    assert "| mask | lstm | model |" in out and "| mask | mlp | single |" in out
    assert "Unable to join threads" not in out  # numba's TBB pool at the corpus checks' forks
