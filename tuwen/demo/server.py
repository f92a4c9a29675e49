"""The demo's search page: ``tuwen serve`` as a child process, started as soon as a first index
exists and stopped on every way out of ``run_demo`` (Ctrl-C included).

A child process rather than uvicorn in a thread: the page keeps answering while the demo's own
process is busy fine-tuning and encoding (no shared GIL, its own torch threads), and it can be
stopped for sure (terminate, then kill after a bounded wait), which a uvicorn thread cannot. It
shares the demo's process group, so a Ctrl-C in the terminal reaches both; the ``finally`` in
``run_demo`` stops it when only the demo got the signal. Its log goes to ``demo-serve.log`` in the
demo home, so request lines do not interleave with the numbered steps.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from common.settings import Settings


class DemoServer:
    """``tuwen serve --home HOME --host HOST --port PORT`` in a child process."""

    def __init__(self, *, settings: Settings, host: str, port: int) -> None:
        self.settings, self.host, self.port = settings, host, port
        self.url = f"http://{host}:{port}"
        self.log = Path(settings.home_dir) / "demo-serve.log"
        self.process: subprocess.Popen | None = None

    def start(self, *, timeout: float = 120.0) -> dict:
        """Start the child and wait (bounded) until ``/readyz`` answers 200; returns its body."""
        command = [sys.executable, "-m", "tuwen.cli", "serve", "--home", str(self.settings.home_dir)]
        command += ["--host", self.host, "--port", str(self.port)]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the search page exited ({self.process.returncode}): {self._log_tail()}")
            ready = self._try("/readyz")
            if ready is not None:
                return ready
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(
            f"the search page did not answer /readyz within {timeout:.0f} s: {self._log_tail()}"
        )

    def wait_for_generation(self, name: str, *, timeout: float = 120.0) -> dict | None:
        """Wait (bounded) until the page serves the index generation ``name`` (the hot swap);
        returns its ``/readyz`` (generation, model id) or None."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready = self._try("/readyz")
            if ready is not None and ready.get("generation") == name:
                return ready
            time.sleep(0.5)
        return None

    def get(self, path: str) -> dict:
        return self._request(urllib.request.Request(self.url + path, headers=self._headers()))

    def post(self, path: str, body: dict) -> dict:
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        headers = {**self._headers(), "Content-Type": "application/json"}
        return self._request(urllib.request.Request(self.url + path, data=data, headers=headers))

    def stop(self, *, timeout: float = 10.0) -> None:
        """Terminate the child, kill it after ``timeout`` seconds; idempotent."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL the child without waiting (the demo's last resort, from its watchdog thread)."""
        process = self.process
        if process is not None and process.poll() is None:
            process.kill()

    def _headers(self) -> dict:
        key = self.settings.api_key
        return {"Authorization": f"Bearer {key}"} if key else {}

    @staticmethod
    def _request(request: urllib.request.Request, timeout: float = 30.0) -> dict:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read().decode("utf-8"))

    def _try(self, path: str) -> dict | None:
        try:
            return self.get(path)
        except (OSError, urllib.error.URLError, ValueError):
            return None

    def _log_tail(self, lines: int = 8) -> str:
        try:
            return " | ".join(self.log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
        except OSError:
            return f"(no log at {self.log})"


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it when the demo dies, even by SIGKILL (Linux only)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


POSTS_QUERY = {"q": "连衣裙", "where": {"category": "裙装", "time": {"gte": "2025-10-01"}}, "k": 3}


def filtered_search(server: DemoServer, body: dict = POSTS_QUERY) -> tuple[str, list[dict]]:
    """One filtered search of the demo posts through the running server's collection API;
    returns the request as one line and the hits (id, score, caption, time)."""
    answer = server.post("/api/corpora/posts/search", body)
    line = f"POST {server.url}/api/corpora/posts/search {json.dumps(body, ensure_ascii=False)}"
    return line, answer.get("results", [])
