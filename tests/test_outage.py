"""When the database goes away (issue 24), with real processes: ``tuwen serve`` on a throwaway
PostgreSQL (and on SQLite), clients searching every way and one writing, the store taken away
mid-run and brought back.

Must hold: no 500 at any time; every read 200 before, during and after; writes (the admin reload)
503 with ``Retry-After`` and a detail naming the store while it is down, 2xx after; /readyz
``degraded`` (with the reason) during, ``ready`` after; the log says "store unreachable" once and
"store back" once, and no traceback. Each run prints the table of issue 24.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from processes import free_port, stop_process
from test_service_fixtures import add_shop, build_home, image_bytes, read

from app.main import create_app
from indexer import store

ADMIN_KEY = "outage-admin-key"
BEFORE_S, DOWN_S, AFTER_S = 4.0, 7.0, 6.0
GRACE_S = 2.5  # the probe notices within a second; a request on a dead connection reports at once
CLIENT_PAUSE_S = 0.05  # bounded load: each client waits this long between requests


def _request(url: str, *, body: bytes | None = None, headers: dict | None = None, method: str = "GET"):
    request = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=120) as r:  # 2 busy cores: slow is not failed
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def _multipart(data: bytes, fields: dict[str, str] | None = None) -> tuple[bytes, dict]:
    boundary = "tuwen-outage-boundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in (fields or {}).items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="q.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n".encode()
        + data
        + b"\r\n"
    )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def _calls(base: str, image: bytes) -> dict[str, tuple]:
    """Each kind of request as (url, body, headers, method): four reads and one write."""
    upload, upload_headers = _multipart(image)
    filtered = {
        "q": "红色连衣裙",
        "k": 5,
        "where": {"category": {"in": ["连衣裙", "衬衫"]}, "price": {"gte": 100}},
    }
    return {
        "text→image": (f"{base}/api/search/text?q=%E9%BB%91%E8%89%B2%E5%8C%85&k=5", None, {}, "GET"),
        "image→text": (f"{base}/api/search/image?k=5", upload, upload_headers, "POST"),
        "image→image": (f"{base}/api/search/image-to-image?k=5", upload, upload_headers, "POST"),
        "collection": (
            f"{base}/api/corpora/shop/search",
            json.dumps(filtered).encode(),
            {"Content-Type": "application/json"},
            "POST",
        ),
        "write (admin reload)": (
            f"{base}/api/admin/reload",
            b"",
            {"Authorization": f"Bearer {ADMIN_KEY}"},
            "POST",
        ),
    }


class Load:
    """One thread per kind of request, plus a readiness poller; every answer is recorded by phase."""

    def __init__(self, base: str, calls: dict[str, tuple]):
        self.base, self.calls = base, calls
        self.phase = "before"
        self.phase_started = time.monotonic()
        self.seen: list[tuple[str, float, str, int, dict, bytes]] = []  # phase, t in phase, kind, status, ...
        self.ready: list[tuple[str, float, str]] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._client, args=(k,)) for k in calls]
        self.threads.append(threading.Thread(target=self._readiness))

    def set_phase(self, phase: str) -> None:
        self.phase, self.phase_started = phase, time.monotonic()

    def _client(self, kind: str) -> None:
        url, body, headers, method = self.calls[kind]
        while not self.stop.is_set():
            phase, t0 = self.phase, time.monotonic() - self.phase_started
            try:
                status, got_headers, content = _request(url, body=body, headers=headers, method=method)
            except OSError as exc:  # a refused or reset connection is a failure too
                status, got_headers, content = -1, {}, repr(exc).encode()
            self.seen.append(
                (phase, t0, kind, status, {k.lower(): v for k, v in (got_headers or {}).items()}, content)
            )
            time.sleep(CLIENT_PAUSE_S)

    def _readiness(self) -> None:
        while not self.stop.is_set():
            status, _, content = _request(f"{self.base}/readyz")
            state = json.loads(content).get("status", "?") if status == 200 else f"http {status}"
            self.ready.append((self.phase, time.monotonic() - self.phase_started, state))
            time.sleep(0.2)

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)

    def table(self) -> str:
        counts = collections.Counter((phase, kind, status) for phase, _, kind, status, _, _ in self.seen)
        lines = [f"{'':22s} {'before':>16s} {'store down':>16s} {'after':>16s}"]
        for kind in self.calls:
            cells = []
            for phase in ("before", "down", "after"):
                by_status = {s: n for (p, k, s), n in counts.items() if p == phase and k == kind}
                cells.append(", ".join(f"{n}×{s}" for s, n in sorted(by_status.items())) or "-")
            lines.append(f"{kind:22s} " + " ".join(f"{c:>16s}" for c in cells))
        return "\n".join(lines)


def _serve(home: Path, log_path: Path, database_url: str | None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUWEN_")}
    env.update(HF_HUB_OFFLINE="1", TUWEN_PRECISION="fp32", TUWEN_API_KEY=ADMIN_KEY)
    if database_url:
        env["TUWEN_DATABASE_URL"] = database_url
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tuwen.cli", "serve", "--home", str(home), "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if _request(f"{base}/readyz")[0] == 200:
                return proc, base
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_process(proc)
            pytest.fail(f"tuwen serve did not become ready:\n{log_path.read_text()}")
        time.sleep(0.3)


def _outage(tmp_path: Path, small_corpus, *, database_url: str | None, take_away, bring_back) -> None:
    settings = build_home(tmp_path / "home", small_corpus[0], precision="fp32", database_url=database_url)
    add_shop(settings, tmp_path / "shop")
    image = next(
        read(p)
        for p in sorted((small_corpus[0] / "附件3" / "ImageData").glob("*.jpg"))
        if read(p)[:3] == b"\xff\xd8\xff"
    )
    log_path = tmp_path / "serve.log"
    proc, base = _serve(settings.home, log_path, database_url)
    try:
        calls = _calls(base, image)
        for url, body, headers, method in calls.values():  # warm: the first of each loads lazily
            assert _request(url, body=body, headers=headers, method=method)[0] == 200
        started_lines = len(log_path.read_text(errors="replace").splitlines())
        with Load(base, calls) as load:
            time.sleep(BEFORE_S)
            take_away(settings)
            load.set_phase("down")
            time.sleep(DOWN_S)
            bring_back(settings)
            load.set_phase("after")
            time.sleep(AFTER_S)
        log_lines = log_path.read_text(errors="replace").splitlines()[
            started_lines:
        ]  # the run's, not the stop's
    finally:
        stop_process(proc)
    _check(load, log_lines)


def _is_access_line(line: str) -> bool:
    return '"GET ' in line or '"POST ' in line  # uvicorn's access log: one line per request, by design


def _check(load: Load, log_lines: list[str]) -> None:
    said = [line for line in log_lines if not _is_access_line(line)]
    print("\n" + load.table())
    print(f"readiness: {collections.Counter((p, s) for p, _, s in load.ready)}")
    print(f"log lines during the run (access log aside): {len(said)}")
    print("\n".join(said))
    assert not [s for s in load.seen if s[3] == 500 or s[3] < 0], "a 500 or a failed connection"
    reads = [s for s in load.seen if not s[2].startswith("write")]
    assert reads and all(s[3] == 200 for s in reads), collections.Counter(
        (s[2], s[3]) for s in reads if s[3] != 200
    )
    writes = [s for s in load.seen if s[2].startswith("write")]
    down = [s for s in writes if s[0] == "down" and s[1] > GRACE_S]
    assert down and all(s[3] == 503 for s in down), [s[3] for s in down]
    for _, _, _, _, headers, content in down:
        assert headers.get("retry-after") == "5" and "the store" in json.loads(content)["detail"]
    assert all(s[3] == 200 for s in writes if s[0] == "before")
    recovered = [s for s in writes if s[0] == "after" and s[1] > GRACE_S]
    assert recovered and all(s[3] == 200 for s in recovered)
    assert any(s == "degraded" for p, t, s in load.ready if p == "down" and t > GRACE_S)
    assert load.ready[-1][2] == "ready" and all(s in ("ready", "degraded") for _, _, s in load.ready)
    assert sum("store unreachable" in line for line in said) == 1, said
    assert sum("store back" in line for line in said) == 1, said
    assert not any("Traceback" in line for line in said) and len(said) <= 4, said


@pytest.mark.slow
def test_postgresql_stopped_and_started_mid_run(tmp_path, small_corpus):
    from postgres import PostgresUnavailable, throwaway_postgres

    try:
        server = throwaway_postgres()
        pg = server.__enter__()
    except PostgresUnavailable as exc:
        pytest.skip(f"no throwaway PostgreSQL: {exc}")
    try:
        _outage(
            tmp_path,
            small_corpus,
            database_url=pg.url,
            take_away=lambda _settings: pg.stop(),
            bring_back=lambda _settings: pg.start(),
        )
    finally:
        server.__exit__(None, None, None)


def _sqlite_away(settings) -> None:
    """The store file unreadable: as root a mode does not stop reads, so a folder takes its place."""
    db = settings.home_dir / "store.db"
    db.rename(db.with_name("store.db.away"))
    db.mkdir()


def _sqlite_back(settings) -> None:
    db = settings.home_dir / "store.db"
    shutil.rmtree(db)
    db.with_name("store.db.away").rename(db)


@pytest.mark.slow
def test_sqlite_file_unreadable_mid_run(tmp_path, small_corpus):
    _outage(tmp_path, small_corpus, database_url=None, take_away=_sqlite_away, bring_back=_sqlite_back)


# --- In-process: a store that never answered, and a connection lost mid-request ---------------------


def test_the_service_starts_without_its_store_and_reads_answer(built_settings):
    nowhere = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/none"
    settings = built_settings.model_copy(update={"database_url": nowhere, "api_key": ADMIN_KEY})
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with TestClient(create_app(settings)) as c:
        ready = c.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "degraded"
        assert "PostgreSQL at 127.0.0.1" in ready.json()["store"]["reason"]
        hits = c.get("/api/search/text", params={"q": "黑色皮质双肩包", "k": 3}).json()["results"]
        assert c.get(hits[0]["url"]).status_code == 200  # a candidate image: its path is in the generation
        r = c.post("/api/search/image", files={"file": ("q.png", image_bytes(), "image/png")})
        assert r.status_code == 200 and all(h["caption"] for h in r.json()["results"])
        stats = c.get("/api/stats").json()
        assert stats["ready"] is True and stats["store_state"]["state"] == "degraded"
        reload = c.post("/api/admin/reload", headers=admin)
        assert reload.status_code == 503 and reload.headers["Retry-After"] == "5"
        assert "PostgreSQL at 127.0.0.1" in reload.json()["detail"]
        assert c.get("/api/images/not-a-candidate.jpg").status_code == 503  # only the store knows it
        assert c.get("/healthz").status_code == 200


def test_a_connection_lost_mid_request_is_a_503_said_once(built_settings, monkeypatch, caplog):
    from sqlalchemy.exc import OperationalError

    def lost(*_args, **_kwargs):
        raise OperationalError("SELECT", {}, Exception("server closed the connection unexpectedly"))

    with TestClient(create_app(built_settings)) as c:
        health = c.app.state.service.health
        probe = health.check
        monkeypatch.setattr(health, "check", lambda: True)  # the probe thread waits for this test
        monkeypatch.setattr(store, "get_image", lost)
        for _ in range(3):
            r = c.get("/api/images/not-a-candidate.jpg")
            assert r.status_code == 503 and r.headers["Retry-After"] == "5"
            assert "server closed the connection" in r.json()["detail"]
        assert c.get("/readyz").json()["status"] == "degraded"
        assert sum("store unreachable" in m for m in caplog.messages) == 1
        assert not any("Traceback" in m or "unhandled" in m for m in caplog.messages)
        probe()  # the probe: the store answers again
        assert c.get("/readyz").json()["status"] == "ready"
        assert sum("store back" in m for m in caplog.messages) == 1
