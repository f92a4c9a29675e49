"""Load test (issue 6): 16 concurrent clients against a real ``tuwen serve`` for 60 s.

Builds its own index first: a generated demo corpus (``tuwen.demo.corpus``), ingested and
indexed with ``--model`` (``tiny`` by default; ``random:ViT-B-16`` for a real-sized model), in a
temporary ``TUWEN_HOME``. Then ``tuwen serve`` runs as a subprocess on 127.0.0.1 (a free port;
nothing leaves the loopback) and ``--clients`` threads, each with its own keep-alive connection,
send requests back to back until ``--seconds`` have passed: text searches (varied captions,
varied k) and uploads of real photo-like JPEGs (60-120 kB, image-to-text and image-to-image
alternately), about 3:1. Every answer is checked (200, JSON, k results); anything else counts
as an error. The server's resident memory (VmRSS of its process) is sampled every second:
start (ready, before load), peak, end, and the least-squares slope over the second half of the
run, which is ~0 when memory is flat. The server is stopped at the end whatever happens.

    .venv/bin/python bench/bench_load.py                       # ~1.5 min (60 s of load)
    .venv/bin/python bench/bench_load.py --seconds 20 --model random:ViT-B-16
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import harness  # noqa: F401  (sys.path, HF_HUB_OFFLINE)
import httpx
import numpy as np
from bench_http import free_port, wait_ready
from harness import ROOT, header, table
from photos import make_captions, make_photos

TEXT, IMAGE, IMAGE2IMAGE = "GET /api/search/text", "POST /api/search/image", "POST /api/search/image-to-image"
K_CHOICES = (1, 5, 10, 20)


@dataclass
class Record:
    """What every client thread appends to (list.append is atomic under the GIL)."""

    latencies: dict[str, list[float]] = field(
        default_factory=lambda: {e: [] for e in (TEXT, IMAGE, IMAGE2IMAGE)}
    )
    errors: dict[str, list[str]] = field(default_factory=lambda: {e: [] for e in (TEXT, IMAGE, IMAGE2IMAGE)})


def build_home(home: Path, work: Path, *, model: str, candidates_per_item: int) -> str:
    """Demo corpus -> store -> index generation in ``home``; a one-line description of it."""
    from common.settings import Settings
    from indexer.build import index_corpus
    from indexer.ingest import ingest
    from tuwen.demo.corpus import generate_demo_corpus

    settings = Settings(home=home, database_url=None, api_key=None, require_key_for_search=False)
    generate_demo_corpus(
        work / "corpus", seed=0, n_train=20, candidates_per_item=candidates_per_item, image_size=128
    )
    ingest(root=work / "corpus", settings=settings, progress=False, echo=lambda _: None)
    index_corpus(settings=settings, model=model, progress=False, echo=lambda _: None)
    from indexer.index_files import load_current

    counts = {name: len(vs.ids) for name, vs in load_current(settings.index_dir).sets.items()}
    return ", ".join(f"{n:,} {name}" for name, n in counts.items())


def start_server(home: Path, port: int, log: Path) -> subprocess.Popen:
    # only TUWEN_HOME from here: the caller's TUWEN_* (a database URL, keys) must not leak in
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUWEN_")}
    env.update(HF_HUB_OFFLINE="1", TUWEN_HOME=str(home))
    tuwen = Path(sys.executable).with_name("tuwen")
    with open(log, "wb") as out:
        return subprocess.Popen(
            [str(tuwen), "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def sample_rss(pid: int, stop: threading.Event, out: list[tuple[float, float]]) -> None:
    t0 = time.monotonic()
    while not stop.is_set():
        mb = rss_mb(pid)
        if mb is not None:
            out.append((time.monotonic() - t0, mb))
        stop.wait(1.0)


def one_request(
    http: httpx.Client, rng: random.Random, n: int, captions, photos
) -> tuple[str, int, httpx.Response]:
    """A text search 3 times in 4, else an upload (image-to-text and image-to-image in turn)."""
    k = rng.choice(K_CHOICES)
    if rng.random() < 0.75:
        return TEXT, k, http.get("/api/search/text", params={"q": rng.choice(captions), "k": k})
    endpoint = IMAGE if n % 2 == 0 else IMAGE2IMAGE
    files = {"file": ("photo.jpg", rng.choice(photos), "image/jpeg")}
    return endpoint, k, http.post(endpoint.split(" ")[1], params={"k": k}, files=files)


def client(
    base: str, seed: int, deadline: float, captions: list[str], photos: list[bytes], rec: Record
) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=base, timeout=60) as http:
        n = 0
        while time.monotonic() < deadline:
            start = time.perf_counter()
            endpoint = TEXT
            try:
                endpoint, k, r = one_request(http, rng, n, captions, photos)
                ok = r.status_code == 200 and len(r.json()["results"]) == k
                problem = "" if ok else f"{r.status_code} {r.text[:200]}"
            except Exception as exc:  # noqa: BLE001 - a failed request is an error to count, not a crash
                problem = repr(exc)
            elapsed = (time.perf_counter() - start) * 1000
            n += endpoint != TEXT
            if problem:
                rec.errors[endpoint].append(problem)
            else:
                rec.latencies[endpoint].append(elapsed)


def slope_mb_per_min(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of RSS over time, in MB per minute."""
    if len(samples) < 3:
        return float("nan")
    t, mb = np.array(samples).T
    return float(np.polyfit(t / 60, mb, 1)[0])


def pct(values: list[float], q: float) -> str:
    return f"{np.percentile(values, q):.1f}" if values else "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0, help="length of the load phase (default 60)")
    ap.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    ap.add_argument("--model", default="tiny", help="model to index and serve with (default tiny)")
    ap.add_argument("--candidates-per-item", type=int, default=4, help="demo corpus size (192 items each)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="tuwen-load-") as tmp:
        work, home = Path(tmp), Path(tmp) / "home"
        built = time.monotonic()
        index_desc = build_home(home, work, model=args.model, candidates_per_item=args.candidates_per_item)
        built = time.monotonic() - built
        captions = make_captions(4000, seed=3)
        photos = [p.read_bytes() for p in make_photos(work / "photos", 24, seed=3)]
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        proc = start_server(home, port, work / "serve.log")
        rss: list[tuple[float, float]] = []
        stop = threading.Event()
        rec = Record()
        try:
            wait_ready(base, proc, timeout=300, log=work / "serve.log")
            sampler = threading.Thread(target=sample_rss, args=(proc.pid, stop, rss), daemon=True)
            sampler.start()
            time.sleep(1.5)  # the start sample, before any load
            start = time.monotonic()
            deadline = start + args.seconds
            threads = [
                threading.Thread(target=client, args=(base, i, deadline, captions, photos, rec), daemon=True)
                for i in range(args.clients)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=args.seconds + 120)
            wall = time.monotonic() - start
            time.sleep(1.5)  # the end sample, after the load
            stop.set()
            sampler.join(timeout=5)
            alive = proc.poll() is None
        finally:
            stop.set()
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        server_log = (work / "serve.log").read_text(errors="replace")

    rows = []
    for endpoint in (TEXT, IMAGE, IMAGE2IMAGE):
        lat, errs = rec.latencies[endpoint], rec.errors[endpoint]
        rows.append(
            [endpoint, len(lat) + len(errs), f"{(len(lat) + len(errs)) / wall:.1f}"]
            + [pct(lat, q) for q in (50, 95, 99)]
            + [f"{max(lat):.0f}" if lat else "-", len(errs)]
        )
    all_lat = [x for v in rec.latencies.values() for x in v]
    n_err = sum(len(v) for v in rec.errors.values())
    n_all = len(all_lat) + n_err
    rows.append(
        ["all", n_all, f"{n_all / wall:.1f}"]
        + [pct(all_lat, q) for q in (50, 95, 99)]
        + [f"{max(all_lat):.0f}" if all_lat else "-", n_err]
    )
    load = [(t, mb) for t, mb in rss if t >= 1.0]
    in_load = [(t, mb) for t, mb in rss if 1.5 <= t <= 1.5 + wall]
    second_half = [(t, mb) for t, mb in in_load if t >= 1.5 + wall / 2]
    start_mb, end_mb = rss[0][1], rss[-1][1]
    peak_mb = max(mb for _, mb in load) if load else float("nan")
    steady_mb = float(np.median([mb for _, mb in second_half])) if second_half else float("nan")

    print(
        header(
            f"Load: {args.clients} clients for {args.seconds:.0f} s, `tuwen serve` with {args.model}, "
            f"text:image about 3:1"
        )
    )
    print(table(["endpoint", "requests", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "errors"], rows))
    print()
    print(
        table(
            ["server RSS", "start MB", "peak MB", "end MB", "median 2nd half MB", "slope 2nd half MB/min"],
            [
                [
                    "",
                    f"{start_mb:.0f}",
                    f"{peak_mb:.0f}",
                    f"{end_mb:.0f}",
                    f"{steady_mb:.0f}",
                    f"{slope_mb_per_min(second_half):+.1f}",
                ]
            ],
        )
    )
    print(
        f"\nindex: {index_desc} (built in {built:.0f} s); {len(photos)} upload JPEGs "
        f"({min(map(len, photos)) // 1024}-{max(map(len, photos)) // 1024} kB), {len(captions)} captions, "
        f"k in {K_CHOICES}; server: one uvicorn process on 127.0.0.1, {len(rss)} RSS samples (1/s); "
        f"clients: {args.clients} threads in this process (httpx, one keep-alive connection each), "
        f"on the same cores as the server; server alive at the end: {alive}; "
        f"tracebacks in the server log: {server_log.count('Traceback')}."
    )
    every = max(1, round(len(rss) / 12))
    print(f"RSS MB, about every {every} s: " + ", ".join(f"{mb:.0f}" for _, mb in rss[::every]))
    if n_err:
        first = next(e for v in rec.errors.values() for e in v)
        print(f"\n{n_err} errors; first: {first}")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
