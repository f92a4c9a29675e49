"""Writes through the API with real processes (issue 19): an answered PUT survives ``kill -9`` and the
next ``corpus encode``; concurrent PUTs of one id leave one whole version; an encode running while
items are put loses none; two replicas on one PostgreSQL see each other's changes within seconds."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from processes import free_port, run_or_dump, stop_process
from sqlalchemy import select
from test_service_fixtures import add_shop, image_bytes, make_settings
from test_service_swap import TUWEN

from common.settings import Settings
from indexer import store
from indexer.vector_cache import digest_text

KEY = {"Authorization": "Bearer admin-key"}
START_TIMEOUT_S = 120
pytestmark = pytest.mark.slow


def _serve(stack: ExitStack, settings: Settings, log: Path) -> tuple[str, subprocess.Popen]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUWEN_")}
    env.update(TUWEN_HOME=str(settings.home_dir), TUWEN_API_KEY="admin-key", TUWEN_DEVICE="cpu")
    env.update(TUWEN_PRECISION="fp32", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    if settings.database_url:
        env["TUWEN_DATABASE_URL"] = settings.database_url
    out = stack.enter_context(open(log, "a"))  # noqa: SIM115 - closed by the stack
    proc = subprocess.Popen([TUWEN, "serve", "--port", str(port)], env=env, stdout=out, stderr=out)
    stack.callback(stop_process, proc)
    url = f"http://127.0.0.1:{port}"
    _wait(lambda: _generation(url) is not None, f"server {url} not serving shop: {log.read_text()[-800:]}")
    return url, proc


def _generation(url: str) -> str | None:
    try:
        r = httpx.get(f"{url}/api/corpora", timeout=5)
    except httpx.TransportError:
        return None
    shop = {c["name"]: c for c in r.json()}.get("shop") if r.status_code == 200 else None
    return shop["generation"] if shop and shop["encoded"] else None


def _wait(ok, message: str, timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        assert time.monotonic() < deadline, message
        time.sleep(0.2)


def _put(url: str, item_id: str, caption: str, image: bytes | None = None) -> httpx.Response:
    files = {"image": ("x.png", image, "image/png")} if image else None
    return httpx.put(
        f"{url}/api/corpora/shop/items/{item_id}",
        data={"caption": caption},
        files=files,
        headers=KEY,
        timeout=60,
    )


def _item(url: str, item_id: str) -> dict | None:
    r = httpx.get(f"{url}/api/corpora/shop/items/{item_id}", timeout=10)
    return r.json() if r.status_code == 200 else None


def _top(url: str, q: str) -> str:
    r = httpx.post(f"{url}/api/corpora/shop/search", json={"q": q, "target": "text", "k": 3}, timeout=30)
    return r.json()["results"][0]["id"]


def _encode(settings: Settings) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUWEN_")}
    env.update(TUWEN_HOME=str(settings.home_dir), TUWEN_DEVICE="cpu")
    if settings.database_url:
        env["TUWEN_DATABASE_URL"] = settings.database_url
    args = [TUWEN, "corpus", "encode", "shop", "--model", "tiny", "--precision", "fp32", "--workers", "0"]
    done = run_or_dump(args, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture
def shop(tmp_path) -> Settings:
    settings = make_settings(tmp_path / "home", precision="fp32")
    add_shop(settings, tmp_path / "shop", n=10)
    return settings


def test_an_answered_put_survives_kill_9_and_the_next_encode(shop, tmp_path):
    log = tmp_path / "serve.log"
    with ExitStack() as stack:
        url, proc = _serve(stack, shop, log)
        assert _put(url, "kept", "一只橙色的猫头鹰", image_bytes()).status_code == 200
        assert httpx.delete(f"{url}/api/corpora/shop/items/s3", headers=KEY).status_code == 200
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with ExitStack() as stack:
        url, _ = _serve(stack, shop, log)
        assert _item(url, "kept")["caption"] == "一只橙色的猫头鹰" and _item(url, "s3") is None
        assert _top(url, "一只橙色的猫头鹰") == "kept"
    _encode(shop)
    with ExitStack() as stack:
        url, _ = _serve(stack, shop, log)
        assert _item(url, "kept")["caption"] == "一只橙色的猫头鹰" and _item(url, "s3") is None


def test_concurrent_puts_of_one_id_leave_one_whole_version(shop, tmp_path):
    captions = [f"第{i}种颜色的帽子" for i in range(12)]
    with ExitStack() as stack:
        url, _ = _serve(stack, shop, tmp_path / "serve.log")
        answers: list[int] = []
        threads = [
            threading.Thread(target=lambda c=c: answers.append(_put(url, "same", c).status_code))
            for c in captions
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert answers == [200] * len(captions)
        shown = _item(url, "same")["caption"]
        with store.open_store(shop.store_url) as session:
            Item, C = store.CorpusItemRecord, store.CorpusChangeRecord
            row = session.execute(
                select(Item.caption, Item.caption_sha256).where(Item.item_id == "same")
            ).one()
            last = session.scalar(select(C.data).where(C.item_id == "same").order_by(C.seq.desc()).limit(1))
            saved = session.scalar(
                select(store.VectorRecord.sha256).where(store.VectorRecord.sha256 == row[1])
            )
        assert shown == row[0] and row[1] == digest_text(row[0]) and row[0] in last and saved == row[1]
        assert _top(url, shown) == "same"  # its vector is the shown caption's


def test_a_corpus_encode_while_items_are_put_loses_none(shop, tmp_path):
    with ExitStack() as stack:
        url, _ = _serve(stack, shop, tmp_path / "serve.log")
        before = _generation(url)
        put: list[str] = []
        stop = threading.Event()

        def writer() -> None:
            i = 0
            while not stop.is_set():
                if _put(url, f"w{i}", f"写入中的第{i}件商品").status_code == 200:
                    put.append(f"w{i}")
                i += 1

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            _encode(shop)
            _wait(lambda: _generation(url) != before, "the new generation was not loaded", timeout=60)
            time.sleep(0.5)
        finally:
            stop.set()
            thread.join()
        assert len(put) >= 3
        missing = [i for i in put if _item(url, i) is None]
        assert missing == []


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_replicas_on_postgresql_see_each_others_changes(database_url, tmp_path):
    settings = make_settings(tmp_path / "home", precision="fp32", database_url=database_url)
    add_shop(settings, tmp_path / "shop", n=10)
    with ExitStack() as stack:
        a, _ = _serve(stack, settings, tmp_path / "a.log")
        b, _ = _serve(stack, settings, tmp_path / "b.log")
        assert _put(a, "from-a", "一辆银色的自行车", image_bytes()).status_code == 200
        _wait(lambda: _item(b, "from-a") is not None, "replica b did not see a's put", timeout=5)
        assert _top(b, "一辆银色的自行车") == "from-a"
        assert httpx.delete(f"{b}/api/corpora/shop/items/from-a", headers=KEY).status_code == 200
        _wait(lambda: _item(a, "from-a") is None, "replica a did not see b's delete", timeout=5)
