"""Two ``tuwen serve`` processes sharing one PostgreSQL store and one index folder, queried without
pause while ``tuwen index`` (a third process) rebuilds to another model: no request fails and every
answer is what exactly one generation gives (the checking helpers are test_service_swap's)."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from conftest import copy_home
from processes import free_port, stop_process
from test_service_fixtures import build_home, encoder_for, other_tiny_checkpoint, read
from test_service_swap import QUERY, TUWEN, K, _expected, _tuwen_index, answers

from indexer.index_files import current_generation

START_TIMEOUT_S = 90
SWAP_TIMEOUT_S = 60
REPLICAS = 2


def _start_replica(stack: ExitStack, *, home: Path, database_url: str, log: Path) -> str:
    """``tuwen serve`` on a free port of 127.0.0.1 as its own process; its base URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUWEN_")}
    # fp32 queries on both sides: bf16 kernels of two backends may swap near-ties (see test_service_swap)
    env.update(TUWEN_HOME=str(home), TUWEN_DATABASE_URL=database_url, TUWEN_DEVICE="cpu", HF_HUB_OFFLINE="1")
    env.update(TUWEN_PRECISION="fp32")
    env.update(OMP_NUM_THREADS="1")  # two servers, the indexer and the clients share 2 cores
    out = stack.enter_context(open(log, "w"))  # noqa: SIM115 - closed by the stack
    proc = subprocess.Popen([TUWEN, "serve", "--port", str(port)], env=env, stdout=out, stderr=out)
    stack.callback(stop_process, proc)
    return f"http://127.0.0.1:{port}"


def _wait_ready(urls: list[str], logs: list[Path]) -> str:
    """Wait until every replica answers /readyz; the generation they all serve."""
    deadline = time.monotonic() + START_TIMEOUT_S
    ready: dict[str, str] = {}
    while len(ready) < len(urls):
        assert time.monotonic() < deadline, "replicas not ready: " + " | ".join(
            p.read_text()[-500:] for p in logs
        )
        for url in urls:
            try:
                r = httpx.get(f"{url}/readyz", timeout=5)
            except httpx.TransportError:
                continue
            if r.status_code == 200:
                ready[url] = r.json()["generation"]
        time.sleep(0.3)
    assert len(set(ready.values())) == 1, ready
    return next(iter(ready.values()))


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_replicas_swap_on_their_own_without_failures_or_mixing(
    database_url, tmp_path, small_corpus, built_settings
):
    copy_home(built_settings.converted_dir, tmp_path / "home" / "converted")  # tiny's, converted once
    settings = build_home(tmp_path / "home", small_corpus[0], database_url=database_url)
    checkpoint = other_tiny_checkpoint(tmp_path / "other-tiny.pt")
    texts = [QUERY, "白色运动鞋"]
    images = [read(p) for p in sorted((small_corpus[0] / "附件3" / "ImageData").glob("*.jpg"))]
    images = [data for data in images if data[:3] == b"\xff\xd8\xff"][:1]  # a real JPEG
    inputs = [("text", "image_candidates", texts), ("image", "text_candidates", images)]
    inputs.append(("image2image", "image_candidates", images))
    keys = [(kind, i) for kind, _, values in inputs for i in range(len(values))]
    seen: list[tuple[str, tuple, str, list[str]]] = []  # (replica, (kind, input index), generation, ids)
    failures: list[str] = []
    stop = threading.Event()

    def ask(c: httpx.Client, url: str, kind: str, i: int) -> None:
        if kind == "text":
            r = c.get(f"{url}/api/search/text", params={"q": texts[i], "k": K})
        else:
            path = "/api/search/image" if kind == "image" else "/api/search/image-to-image"
            r = c.post(f"{url}{path}", params={"k": K}, files={"file": ("q.jpg", images[i], "image/jpeg")})
        if r.status_code != 200:
            failures.append(f"{url} {kind} {r.status_code} {r.text[:200]}")
            return
        body = r.json()
        seen.append(
            (
                url,
                (kind, i),
                body["generation"],
                [h.get("image_id") or h.get("text_id") for h in body["results"]],
            )
        )

    def client_loop(urls: list[str], kind: str, i: int) -> None:
        with httpx.Client(timeout=30) as c:
            turn = 0
            while not stop.is_set():  # round robin over the replicas, as a proxy would
                try:
                    ask(c, urls[turn % len(urls)], kind, i)
                except Exception as exc:  # noqa: BLE001 - any failure is the finding
                    failures.append(repr(exc))
                turn += 1

    def wait_served(urls: list[str], generation: str) -> None:
        deadline = time.monotonic() + SWAP_TIMEOUT_S
        while not failures:
            served = {(url, key) for url, key, g, _ in seen[-300:] if g == generation}
            if served >= {(url, key) for url in urls for key in keys}:
                return
            assert time.monotonic() < deadline, f"{generation} not served by every replica and endpoint"
            time.sleep(0.1)

    with ExitStack() as stack:
        logs = [tmp_path / f"replica-{n}.log" for n in range(REPLICAS)]
        urls = [_start_replica(stack, home=settings.home, database_url=database_url, log=log) for log in logs]
        gens = [_wait_ready(urls, logs)]
        expected = {gens[0]: _expected(settings, gens[0], encoder_for("tiny", precision="fp32"), inputs)}
        threads = [threading.Thread(target=client_loop, args=(urls, kind, i)) for kind, i in keys]
        stack.callback(lambda: [t.join(timeout=60) for t in threads])
        stack.callback(stop.set)
        for t in threads:
            t.start()
        wait_served(urls, gens[0])
        _tuwen_index(settings.home, str(checkpoint), database_url=database_url)
        gens.append(current_generation(settings.index_dir).name)
        other = encoder_for(str(checkpoint), precision="fp32")
        expected[gens[1]] = _expected(settings, gens[1], other, inputs)
        wait_served(urls, gens[1])

    assert not failures, failures[:3]
    assert {(url, g) for url, _, g, _ in seen} == {(url, g) for url in urls for g in gens}
    # a mix (the other model's query on tiny's vectors, or the reverse) gives other ids than either alone
    assert all(expected[gens[0]][key] != expected[gens[1]][key] for key in keys)
    wrong = [(url, key, g, ids) for url, key, g, ids in seen if not answers(expected[g][key], ids)]
    assert not wrong, wrong[:3]
