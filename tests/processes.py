"""Helpers for tests that start servers or clusters as their own processes on 127.0.0.1."""

from __future__ import annotations

import signal
import socket
import subprocess


def free_port() -> int:
    """A port of 127.0.0.1 nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen, *, timeout: float = 15) -> None:
    """SIGTERM, then SIGKILL if it is still there after ``timeout`` seconds; always reaped."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_or_dump(args: list[str], *, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """``subprocess.run`` with output captured as text; if it is still running after ``timeout``
    seconds it gets SIGABRT, which Python's faulthandler (switched on here) answers with every
    thread's stack on stderr, and the test fails with that: a hang says where it hangs."""
    proc = subprocess.Popen(
        args,
        env={**env, "PYTHONFAULTHANDLER": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        try:
            out, err = proc.communicate(timeout=30)
        finally:
            proc.kill()
        raise AssertionError(f"{args} still running after {timeout} s; its stacks:\n{err[-6000:]}") from None
    return subprocess.CompletedProcess(args, proc.returncode, out, err)
