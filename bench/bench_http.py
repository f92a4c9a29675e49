"""Benchmark 3: latency of ``GET /api/search/text`` over HTTP, as ``tuwen serve`` answers it.

An index generation with ``--images`` synthetic clustered 512-d image candidates is written
directly (no encoding), its manifest naming ``random:ViT-B-16`` so the service loads a
ViT-B-16-sized text tower; ``tuwen serve`` then runs in a subprocess and httpx clients query it.

Cache misses use distinct query texts (each is encoded: tokenise, text tower, search);
cache hits repeat texts already asked (LRU cache of text embeddings: search only). One client
sends requests back to back; with ``--clients`` concurrent clients each does the same, and
throughput is counted over the whole phase.

    .venv/bin/python bench/bench_http.py                    # ~1-2 min
    .venv/bin/python bench/bench_http.py --requests 200 --clients 8 --images 200000
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import harness  # noqa: F401  (sys.path, HF_HUB_OFFLINE)
import httpx
from bench_search import make_data
from harness import ROOT, header, table
from photos import make_captions

from indexer import index_files
from indexer.faiss_factory import build_index, search_params

MODEL = "random:ViT-B-16"


def write_generation(index_dir: Path, n: int) -> str:
    from models.factory import RANDOM_SEED

    corpus, _ = make_data("clustered", n, 1)
    tmp = index_files.new_generation_dir(index_dir)
    index_files.save_vectors(tmp, "image_candidates", [f"img{i:06d}.jpg" for i in range(n)], corpus)
    index, factory = build_index(corpus)
    index_files.save_faiss(tmp, "image_candidates", index)
    manifest = {
        "model_spec": MODEL,
        "model_id": f"{MODEL}@seed{RANDOM_SEED}",
        "arch": "ViT-B-16",
        "embed_dim": 512,
        "index_factories": {"image_candidates": factory},
        "counts": {"image_candidates": n},
    }
    index_files.publish_generation(index_dir, tmp, manifest)
    return f"{factory} {search_params(index) or ''}".strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(base: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"tuwen serve exited with {proc.returncode}")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit("tuwen serve did not become ready")


def timed_queries(base: str, texts: list[str], out: list[float]) -> None:
    with httpx.Client(base_url=base, timeout=120) as client:
        for text in texts:
            start = time.perf_counter()
            r = client.get("/api/search/text", params={"q": text, "k": 10})
            elapsed = (time.perf_counter() - start) * 1000
            if r.status_code != 200 or len(r.json()["results"]) != 10:
                raise SystemExit(f"bad answer {r.status_code}: {r.text[:200]}")
            out.append(elapsed)


def phase(base: str, texts: list[str], clients: int) -> tuple[list[float], float]:
    """Latencies (ms) of all requests and requests/s, ``clients`` threads splitting ``texts``."""
    results: list[list[float]] = [[] for _ in range(clients)]
    threads = [
        threading.Thread(target=timed_queries, args=(base, texts[i::clients], results[i]))
        for i in range(clients)
    ]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    latencies = [x for r in results for x in r]
    return latencies, len(latencies) / wall


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=50_000)
    ap.add_argument("--requests", type=int, default=48, help="requests per phase")
    ap.add_argument("--clients", type=int, default=8, help="concurrent clients of the concurrent phases")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        index_desc = write_generation(home / "index", args.images)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TUWEN_HOME": str(home)}
        tuwen = Path(sys.executable).with_name("tuwen")
        proc = subprocess.Popen(
            [str(tuwen), "serve", "--home", str(home), "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_ready(base, proc)
            # distinct texts: a caption plus a number, so no two requests share a cache entry
            unique = [f"{c}{i}" for i, c in enumerate(make_captions(6 * args.requests + 8, seed=1))]
            warm, unique = unique[:8], unique[8:]
            phase(base, warm, 1)  # first requests build the oneDNN kernels
            rows = []
            for clients in (1, args.clients):
                misses, unique = unique[: args.requests], unique[args.requests :]
                lat, rps = phase(base, misses, clients)
                rows.append(["miss (encode + search)", clients, len(lat), *_stats(lat), f"{rps:.1f}"])
                hits = [warm[i % len(warm)] for i in range(args.requests)]
                lat, rps = phase(base, hits, clients)
                rows.append(["hit (cached embedding)", clients, len(lat), *_stats(lat), f"{rps:.1f}"])
            stats = httpx.get(f"{base}/api/stats", timeout=10).json()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        encoder_rows = in_process(unique[: args.requests])
    print(header(f"HTTP GET /api/search/text, {MODEL} text tower, {args.images:,} images, top-10"))
    print(
        table(
            ["requests", "clients", "n", "p50 ms", "p95 ms", "p99 ms", "requests/s"],
            [[r[0], r[1], r[2], *r[3:6], r[6]] for r in rows],
        )
    )
    print()
    print(
        table(
            ["in-process text encoding, 1 query", "n", "p50 ms", "p95 ms", "speed-up (median)"], encoder_rows
        )
    )
    print(
        f"\nindex: {index_desc}; server: `tuwen serve` (uvicorn, one process) on 127.0.0.1, clients in "
        f"this process (httpx, one connection per client); server's text cache: {stats.get('text_cache')}."
    )


def in_process(texts: list[str]) -> list[list[object]]:
    """The text tower alone, one query at a time: cn_clip's README way (fp32, padded to 52 tokens)
    and the service's (Encoder default: fp32 texts on CPU, padding trimmed), in turns."""
    import torch
    from cn_clip.clip import tokenize

    from models.encoder import Encoder
    from models.factory import create_model_and_transforms
    from models.tokens import CONTEXT_LENGTH

    loaded = create_model_and_transforms(MODEL, device="cpu")
    encoder = Encoder(loaded)

    def readme(text: str) -> None:
        with torch.no_grad():
            loaded.model.encode_text(tokenize([text], CONTEXT_LENGTH))

    def ours(text: str) -> None:
        encoder.encode_texts([text])

    readme(texts[0]), ours(texts[0])
    times: dict[str, list[float]] = {
        "README (fp32, 52 tokens)": [],
        f"service ({encoder.text_precision}, trimmed)": [],
    }
    for text in texts:
        for name, fn in zip(times, (readme, ours), strict=True):
            start = time.perf_counter()
            fn(text)
            times[name].append((time.perf_counter() - start) * 1000)
    base = times["README (fp32, 52 tokens)"]
    rows = []
    for name, lat in times.items():
        ratio = sorted(b / x for b, x in zip(base, lat, strict=True))[len(lat) // 2]
        rows.append([name, len(lat), f"{pct(lat, 50):.1f}", f"{pct(lat, 95):.1f}", f"{ratio:.2f}x"])
    return rows


def _stats(lat: list[float]) -> list[str]:
    return [f"{pct(lat, 50):.1f}", f"{pct(lat, 95):.1f}", f"{pct(lat, 99):.1f}"]


if __name__ == "__main__":
    main()
