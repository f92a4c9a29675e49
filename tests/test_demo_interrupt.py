"""The demo's ``Interruption``: a Ctrl-C that Python loses (raised inside a ``__del__``, or
swallowed by code that should not) still stops the demo, through its cleanup when it can, by a
forced exit with 130 when it cannot. Each case runs in a child process that gets a real SIGINT."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PRELUDE = """
import sys, time
from tuwen.demo.steps import Interruption
print("ready", flush=True)
"""


def _run(body: str, *, deadline: float = 60) -> tuple[int, str, float]:
    """Run PRELUDE + body, send SIGINT once it says ``ready``; returns (rc, output, seconds to exit)."""
    script = PRELUDE + textwrap.dedent(body)
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # inherited ignored, as under a script's ``cmd &``: Interruption must claim it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.3)
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=deadline)
        return proc.returncode, out, time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_an_interrupt_lost_once_is_raised_again_and_the_cleanup_runs():
    rc, out, seconds = _run(
        """
        with Interruption(force=lambda: print("forced", flush=True), repeat_s=0.5, deadline_s=20) as stop:
            try:
                try:
                    time.sleep(30)
                except KeyboardInterrupt:
                    print("lost one", flush=True)  # as a __del__ would lose it
                time.sleep(30)
                print("went on", flush=True)
            except KeyboardInterrupt:
                stop.cleaning_up()
                print("cleaned up", flush=True)
                sys.exit(130)
        """
    )
    assert rc == 130, out
    assert "lost one" in out and "cleaned up" in out and "went on" not in out and "forced" not in out
    assert seconds < 10, seconds


def test_a_demo_that_swallows_every_interrupt_is_stopped_at_the_deadline():
    rc, out, seconds = _run(
        """
        with Interruption(force=lambda: print("forced", flush=True), repeat_s=0.5, deadline_s=3):
            for _ in range(200):
                try:
                    time.sleep(0.2)
                except KeyboardInterrupt:
                    pass
            print("finished", flush=True)
        """
    )
    assert rc == 130, out
    assert "forced" in out and "finished" not in out
    assert "still running 3 s after the interrupt" in out and "Thread" in out  # the stacks
    assert 2.5 < seconds < 15, seconds


def test_a_prompt_cleanup_exits_without_the_watchdog():
    rc, out, seconds = _run(
        """
        with Interruption(force=lambda: print("forced", flush=True), repeat_s=0.5, deadline_s=3) as stop:
            try:
                time.sleep(30)
            except KeyboardInterrupt:
                stop.cleaning_up()
                print("cleaned up", flush=True)
        print("returned", flush=True)
        """
    )
    assert rc == 0, out
    assert "cleaned up" in out and "returned" in out and "forced" not in out
    assert seconds < 3, seconds
