"""Benchmark 3: latency of ``GET /api/search/text`` over HTTP, as ``tuwen serve`` answers it.

An index generation with ``--images`` synthetic clustered 512-d image candidates is written
directly (no encoding), its manifest naming ``random:ViT-B-16`` so the service loads a
ViT-B-16-sized text tower; ``tuwen serve`` then runs in a subprocess and httpx clients query it.

Every request is a distinct text (a cache miss: tokenise, text tower, search). Several server
configurations (``--configs``: backend, precision, query batching on or off; "today" is PyTorch
without batching) run at once on the same index and take turns phase by phase; with N clients each
sends requests back to back and throughput is counted over the phase. Peak RSS per server.

    .venv/bin/python bench/bench_http.py --converted /tmp/tuwen-bench-converted   # ~3-5 min
    .venv/bin/python bench/bench_http.py --clients 1,8 --configs "today=torch:auto:0,new=auto:auto:32"
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
from roofline import Ceiling, ceiling

from common.backend import resolve_backend
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


def wait_ready(base: str, proc: subprocess.Popen, timeout: float = 300, *, log: Path | None = None) -> None:
    """Wait for ``/readyz``; a server that exits first is reported with the end of ``log``."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            said = log.read_text(errors="replace").strip().splitlines()[-4:] if log and log.exists() else []
            raise SystemExit(f"tuwen serve exited with {proc.returncode}:\n" + "\n".join(said))
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


DEFAULT_CONFIGS = "today=torch:auto:0,default=auto:auto:32,openvino int8=openvino:int8:32"


def parse_configs(text: str) -> dict[str, dict[str, str]]:
    """``NAME=BACKEND:PRECISION:BATCH_MAX`` items: the server environment of each configuration."""
    out = {}
    for item in text.split(","):
        name, spec = item.split("=")
        backend, precision, batch = spec.split(":")
        out[name] = {
            "TUWEN_BACKEND": backend,
            "TUWEN_PRECISION": precision,
            "TUWEN_QUERY_BATCH_MAX": str(max(int(batch), 1)),  # 1 = no batching (today)
        }
    return out


def start_servers(
    home: Path, configs: dict, converted: Path | None
) -> dict[str, tuple[str, subprocess.Popen]]:
    """One ``tuwen serve`` per configuration on the same index, each in its own home (shared index)."""
    if converted is not None:
        converted.mkdir(parents=True, exist_ok=True)  # the first run converts into it
    servers, logs = {}, []
    try:
        for i, (name, extra) in enumerate(configs.items()):
            server_home = home.parent / f"home-{i}"
            server_home.mkdir()
            (server_home / "index").symlink_to(home / "index")
            if converted is not None:
                (server_home / "converted").symlink_to(converted.resolve())
            port = free_port()
            env = {**os.environ, "HF_HUB_OFFLINE": "1", "TUWEN_HOME": str(server_home), **extra}
            tuwen = Path(sys.executable).with_name("tuwen")
            logs.append(server_home / "serve.log")  # its error, should it exit
            with logs[-1].open("w") as log:
                proc = subprocess.Popen(
                    [str(tuwen), "serve", "--home", str(server_home), "--port", str(port)],
                    cwd=ROOT,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                )
            servers[name] = (f"http://127.0.0.1:{port}", proc)
        for (base, proc), log in zip(servers.values(), logs, strict=True):
            wait_ready(base, proc, timeout=900, log=log)
    except BaseException:  # one server failed: stop the others, which would outlive this process
        stop_servers(servers)
        raise
    return servers


def stop_servers(servers: dict[str, tuple[str, subprocess.Popen]]) -> None:
    for _base, proc in servers.values():
        proc.terminate()
    for _base, proc in servers.values():
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def rss_mb(pid: int) -> str:
    """Peak (VmHWM) / current (VmRSS) resident memory of a process, MB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key = line.split(":")[0]
        if key in ("VmHWM", "VmRSS"):
            values[key] = int(line.split()[1]) / 1024
    return f"{values.get('VmHWM', 0):.0f} / {values.get('VmRSS', 0):.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=50_000)
    ap.add_argument("--requests", type=int, default=48, help="requests per phase")
    ap.add_argument("--clients", default="1,8,16", help="comma list of concurrent clients")
    ap.add_argument("--configs", default=DEFAULT_CONFIGS, help="NAME=BACKEND:PRECISION:BATCH_MAX,...")
    ap.add_argument("--converted", type=Path, default=None, help="converted towers to reuse (int8 needs one)")
    args = ap.parse_args()
    configs = parse_configs(args.configs)
    clients_list = [int(c) for c in args.clients.split(",")]

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        index_desc = write_generation(home / "index", args.images)
        servers = start_servers(home, configs, args.converted)
        try:
            rows, stats = run_phases(servers, args.requests, clients_list)
            rss = {name: rss_mb(proc.pid) for name, (_b, proc) in servers.items()}
        finally:
            stop_servers(servers)
    encoder_rows, query_ceiling = in_process(make_captions(args.requests, seed=2), configs, args.converted)
    floor_ms = 1000 * query_ceiling.seconds
    for row in rows:  # p50 over the query ceiling, for one client (more clients queue on 2 cores)
        row.append(f"{float(row[3]) / floor_ms:.2f}x" if row[1] == 1 else "")
    print(
        header(f"HTTP GET /api/search/text, {MODEL} text tower, {args.images:,} images, top-10, cache misses")
    )
    print(
        table(
            [
                "server",
                "clients",
                "n",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "requests/s",
                "p50 vs today",
                "req/s vs today",
                "p50 / query ceiling",
            ],
            rows,
        )
    )
    print()
    print(
        table(
            ["server", "backend", "precision (texts)", "RSS MB peak / end", "text cache"],
            [
                [
                    name,
                    resolve_backend(configs[name]["TUWEN_BACKEND"], device_type="cpu"),
                    configs[name]["TUWEN_PRECISION"],
                    rss[name],
                    stats[name]["text_cache"],
                ]
                for name in configs
            ],
        )
    )
    print()
    print(
        table(
            [
                "in-process text encoding, 1 query",
                "n",
                "p50 ms",
                "p95 ms",
                "speed-up (median)",
                "min cos to torch fp32",
            ],
            encoder_rows,
        )
    )
    print(
        f"\nindex: {index_desc}; servers: one `tuwen serve` (uvicorn, one process) per configuration, all "
        "on 127.0.0.1 and the same index, running at once and queried in turns (phase by phase, order "
        "rotating); clients in this process (httpx, one connection per client); every request a distinct "
        "text (a cache miss); configurations: "
        + "; ".join(f"{n}: {describe_config(c)}" for n, c in configs.items())
        + ". Peak RSS: VmHWM of the server process at the end.\nQuery ceiling measured in this run: "
        + query_ceiling.describe()
        + f" (the median request's {query_ceiling.gflop:.2f} GFLOP; tokens counted as cn_clip's tokenizer "
        "gives them, padding trimmed)"
    )


def describe_config(env: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in env.items())


def run_phases(servers: dict, requests: int, clients_list: list[int]) -> tuple[list[list[object]], dict]:
    """Miss phases for every server and client count, servers taking turns; rows with ratios to the first."""
    names = list(servers)
    unique = [
        f"{c}{i}"
        for i, c in enumerate(make_captions(requests * len(names) * (len(clients_list) + 1) + 8, seed=1))
    ]
    warm, unique = unique[:8], unique[8:]
    for base, _proc in servers.values():
        phase(base, warm, 1)  # first requests build kernels; all servers get the same warm-up texts
    rows = []
    for turn, clients in enumerate(clients_list):
        results = {}
        for name in names[turn % len(names) :] + names[: turn % len(names)]:
            texts, unique = unique[:requests], unique[requests:]
            results[name] = phase(servers[name][0], texts, clients)
        base_lat, base_rps = results[names[0]]
        for name in names:
            lat, rps = results[name]
            rows.append(
                [
                    name,
                    clients,
                    len(lat),
                    *_stats(lat),
                    f"{rps:.1f}",
                    f"{pct(base_lat, 50) / pct(lat, 50):.2f}x",
                    f"{rps / base_rps:.2f}x",
                ]
            )
    stats = {name: httpx.get(f"{base}/api/stats", timeout=10).json() for name, (base, _p) in servers.items()}
    return rows, stats


def in_process(texts: list[str], configs: dict, converted: Path | None) -> tuple[list[list[object]], Ceiling]:
    """The text tower alone, one query at a time, in turns: cn_clip's README way (fp32, padded to 52
    tokens) and each configuration's encoder; min cosine of each to PyTorch fp32. Also the query
    ceiling (issue 22) at the median length of these texts, fp32, measured now."""
    import numpy as np
    import torch
    from cn_clip.clip import tokenize

    from common.errors import TuwenError
    from common.settings import Settings
    from models.encoder import Encoder
    from models.factory import create_model_and_transforms
    from models.tokens import CONTEXT_LENGTH

    loaded = create_model_and_transforms(MODEL, device="cpu")
    reference = Encoder(loaded, precision="fp32", backend="torch").encode_texts(texts)
    fns = {
        "README (torch fp32, 52 tokens)": lambda t: loaded.model.encode_text(tokenize([t], CONTEXT_LENGTH))
    }
    encoders = {}
    for name, env in configs.items():
        try:
            enc = Encoder(
                loaded,
                precision=env["TUWEN_PRECISION"],
                backend=env["TUWEN_BACKEND"],
                cache_dir=converted or Settings().converted_dir,
            )
        except TuwenError as exc:
            print(f"in-process {name}: skipped ({exc})")
            continue
        key = f"{name}: {enc.backend} {enc.text_precision}"
        encoders[key] = enc
        fns[key] = lambda t, enc=enc: enc.encode_texts([t])
    times: dict[str, list[float]] = {name: [] for name in fns}
    with torch.no_grad():
        for fn in fns.values():
            fn(texts[0])
        for text in texts:
            for name, fn in fns.items():
                start = time.perf_counter()
                fn(text)
                times[name].append((time.perf_counter() - start) * 1000)
    base = next(iter(times.values()))
    rows = []
    for name, lat in times.items():
        ratio = sorted(b / x for b, x in zip(base, lat, strict=True))[len(lat) // 2]
        cos = (
            "1.00000 (reference: fp32)"
            if name not in encoders
            else f"{float(np.sum(encoders[name].encode_texts(texts) * reference, axis=1).min()):.5f}"
        )
        rows.append([name, len(lat), f"{pct(lat, 50):.1f}", f"{pct(lat, 95):.1f}", f"{ratio:.2f}x", cos])
    lengths = sorted(int((tokenize([t], CONTEXT_LENGTH) != 0).sum()) for t in texts)
    return rows, ceiling(loaded, "text", dtype="fp32", tokens=lengths[len(lengths) // 2])


def _stats(lat: list[float]) -> list[str]:
    return [f"{pct(lat, 50):.1f}", f"{pct(lat, 95):.1f}", f"{pct(lat, 99):.1f}"]


if __name__ == "__main__":
    main()
