"""Issue 19's load: 8 clients searching while 2 clients put and delete items, against the same 8
clients searching alone (``tuwen serve`` on 127.0.0.1, bounded by ``--seconds`` per phase).

A "shop" corpus of ``--items`` photo-like JPEGs with captions and attributes is added and encoded
with ``--model`` in a temporary ``TUWEN_HOME``; ``tuwen serve`` (with an admin key) runs as a
subprocess. Phase 1: ``--searchers`` threads send filtered and unfiltered text searches back to
back. Phase 2: the same, plus ``--writers`` threads that PUT new items (a JPEG, a caption, an
attribute) and DELETE some of them. Every answer must be 200; anything else is a failure.

    .venv/bin/python bench/bench_writes.py                     # ~3 min (2 x 60 s of load)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import harness  # noqa: F401  (sys.path, HF_HUB_OFFLINE)
import httpx
from bench_http import free_port
from harness import header, table
from photos import make_captions, make_photos

TUWEN = str(Path(sys.executable).parent / "tuwen")
KEY = "bench-admin-key"


def build(work: Path, items: int, model: str) -> dict:
    photos = make_photos(work / "photos", items + 60, seed=0)
    captions = make_captions(items + 60, seed=0)
    rows = [
        {
            "id": f"p{i}",
            "image": str(photos[i]),
            "caption": captions[i],
            "category": "ab"[i % 2],
            "price": i % 300,
        }
        for i in range(items)
    ]
    (work / "shop.jsonl").write_text(
        "\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8"
    )
    env = {**os.environ, "TUWEN_HOME": str(work / "home"), "TUWEN_API_KEY": KEY}
    subprocess.run(
        [TUWEN, "corpus", "add", "shop", str(work / "shop.jsonl")], env=env, check=True, capture_output=True
    )
    subprocess.run(
        [TUWEN, "corpus", "encode", "shop", "--model", model], env=env, check=True, capture_output=True
    )
    return {"env": env, "photos": photos[items:], "captions": captions}


def searcher(
    url: str, captions: list[str], stop: threading.Event, lat: list[float], fails: list[str]
) -> None:
    rng = random.Random(threading.get_ident())
    with httpx.Client(timeout=60) as c:
        while not stop.is_set():
            body = {"q": rng.choice(captions)[:12], "k": 10}
            if rng.random() < 0.5:
                body["where"] = {"category": rng.choice("ab"), "price": {"lt": rng.randrange(50, 300)}}
            start = time.perf_counter()
            r = c.post(f"{url}/api/corpora/shop/search", json=body)
            lat.append(time.perf_counter() - start)
            if r.status_code != 200:
                fails.append(f"search {r.status_code}: {r.text[:200]}")


def writer(url: str, n: int, data: dict, stop: threading.Event, counts: dict, fails: list[str]) -> None:
    rng = random.Random(n)
    headers = {"Authorization": f"Bearer {KEY}"}
    i = 0
    with httpx.Client(timeout=120, headers=headers) as c:
        while not stop.is_set():
            item = f"w{n}-{i}"
            photo = data["photos"][(n * 100 + i) % len(data["photos"])]
            form = {
                "caption": rng.choice(data["captions"]),
                "attributes": json.dumps({"category": "ab"[i % 2]}),
            }
            r = c.put(
                f"{url}/api/corpora/shop/items/{item}",
                data=form,
                files={"image": ("p.jpg", photo.read_bytes())},
            )
            counts["put"] += r.status_code == 200
            if r.status_code != 200:
                fails.append(f"put {r.status_code}: {r.text[:200]}")
            if i % 3 == 2:  # delete one of the earlier ones
                r = c.delete(f"{url}/api/corpora/shop/items/w{n}-{i - 2}")
                counts["delete"] += r.status_code == 200
                if r.status_code != 200:
                    fails.append(f"delete {r.status_code}: {r.text[:200]}")
            i += 1


def phase(url: str, data: dict, *, searchers: int, writers: int, seconds: float) -> dict:
    stop = threading.Event()
    lat: list[float] = []
    fails: list[str] = []
    counts = {"put": 0, "delete": 0}
    threads = [
        threading.Thread(target=searcher, args=(url, data["captions"], stop, lat, fails))
        for _ in range(searchers)
    ]
    threads += [
        threading.Thread(target=writer, args=(url, n, data, stop, counts, fails)) for n in range(writers)
    ]
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    lat.sort()
    q = lambda p: f"{1000 * lat[min(len(lat) - 1, int(p * len(lat)))]:.0f}" if lat else "-"  # noqa: E731
    return {"searches": len(lat), "p50": q(0.5), "p95": q(0.95), "fails": fails, **counts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--searchers", type=int, default=8)
    parser.add_argument("--writers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-writes-"))
    data = build(work, args.items, args.model)
    port = free_port()
    with open(work / "serve.log", "w") as log:
        server = subprocess.Popen(
            [TUWEN, "serve", "--port", str(port)], env=data["env"], stdout=log, stderr=log
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if any(c["name"] == "shop" and c["encoded"] for c in httpx.get(f"{url}/api/corpora").json()):
                    break
            except (httpx.TransportError, ValueError, TypeError):
                pass
            time.sleep(0.5)
        alone = phase(url, data, searchers=args.searchers, writers=0, seconds=args.seconds)
        mixed = phase(url, data, searchers=args.searchers, writers=args.writers, seconds=args.seconds)
    finally:
        server.terminate()
        server.wait(timeout=30)
    rows = [
        [f"{args.searchers} searching", alone["searches"], alone["p50"], alone["p95"], "-",
         len(alone["fails"])],
        [f"{args.searchers} searching + {args.writers} putting/deleting", mixed["searches"], mixed["p50"],
         mixed["p95"], f"{mixed['put']} / {mixed['delete']}", len(mixed["fails"])],
    ]  # fmt: skip
    print(
        header(
            f"Searches beside writes, {args.items}-item corpus, {args.model}, {args.seconds:.0f} s per phase"
        )
        + "\n"
        + table(["load", "searches", "p50 ms", "p95 ms", "puts / deletes", "failed requests"], rows)
    )
    for f in (alone["fails"] + mixed["fails"])[:10]:
        print("failure:", f)


if __name__ == "__main__":
    main()
