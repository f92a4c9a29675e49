"""Benchmark: fine-tuning (``training.train``) on the demo corpus and on ViT-B-16.

(a) ``tiny`` from scratch on the default demo corpus (1500 training pairs): held-out R@5 of the
    demo's query texts against its 192 candidate images (and query images against candidate
    texts), judged by ``ground_truth.json``, before and after ``tuwen.demo.training.train_demo``.
(b) a few training steps of ``random:ViT-B-16`` on this machine complete; peak memory (max RSS of a
    process that does only that).
(c) samples/s of our ``train`` with ``random:ViT-B-16`` at batch 32 against a plain PyTorch loop of
    the same loss (same model, batches, precision and thread count; no padding trimming, no
    DataLoader), in one process, after one warm-up step each. No GPU is lent in this session; on a
    CUDA machine the same script measures ``--precision amp``.

(d) ``tuwen train --nproc 2`` (2 gloo processes × batch B, DDP) against ``--nproc 1`` (batch 2B):
    samples/s per step (median after the first) and wall seconds including start-up, runs
    interleaved. On one CPU machine the 2 processes share its cores: no speed-up is expected; it
    shows the cost of the gathering and gradient averaging.

    .venv/bin/python bench/bench_train.py                  # ~10 min on 2 shared cores
    .venv/bin/python bench/bench_train.py --skip-vit       # (a) only, ~4 min
    .venv/bin/python bench/bench_train.py --ddp-only       # (d) only, ~3 min with tiny
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness  # noqa: F401  (sys.path, HF_HUB_OFFLINE)
from harness import ROOT, header, median, table


def demo_query_recall(*, settings, model: str, data_root: str | Path, k: int = 5) -> dict[str, float]:
    """R@k (0-1) of the demo's query texts against candidate images and of its query images against
    candidate texts, judged by ``ground_truth.json`` (same garment, colour and pattern)."""
    import numpy as np

    from indexer import store
    from models.encoder import Encoder
    from models.factory import create_model_and_transforms
    from training.metrics import topk

    truth = json.loads((Path(data_root) / "ground_truth.json").read_text(encoding="utf-8"))
    engine = store.make_engine(settings.store_url)
    try:
        with store.transaction(engine) as session:
            cand_images = [
                r
                for r in store.list_images(session, collection=store.IMAGE_CANDIDATES)
                if r.status == store.STATUS_OK
            ]
            query_images = [
                r
                for r in store.list_images(session, collection=store.IMAGE_QUERIES)
                if r.status == store.STATUS_OK
            ]
            cand_texts = store.list_texts(session, collection=store.TEXT_CANDIDATES)
            query_texts = store.list_texts(session, collection=store.TEXT_QUERIES)
    finally:
        engine.dispose()
    encoder = Encoder(
        create_model_and_transforms(model, device=settings.device, weights_dir=settings.weights_dir)
    )
    out = {}
    for name, queries, candidates, encode_q, encode_c, gold in (
        (
            "t2i",
            [t.text_id for t in query_texts],
            [r.image_id for r in cand_images],
            lambda: encoder.encode_texts([t.caption for t in query_texts]),
            lambda: encoder.encode_image_files([r.path for r in cand_images], workers=0)[0],
            truth["text_queries"],
        ),
        (
            "i2t",
            [r.image_id for r in query_images],
            [t.text_id for t in cand_texts],
            lambda: encoder.encode_image_files([r.path for r in query_images], workers=0)[0],
            lambda: encoder.encode_texts([t.caption for t in cand_texts]),
            truth["image_queries"],
        ),
    ):
        top = topk(encode_q(), encode_c(), k)
        hits = [
            bool(set(gold.get(q, [])) & {candidates[j] for j in row})
            for q, row in zip(queries, top, strict=True)
        ]
        out[name] = float(np.mean(hits)) if hits else 0.0
    return out


def part_demo(home: Path) -> tuple[list, dict]:
    from common.settings import Settings
    from indexer.ingest import ingest
    from tuwen.demo.corpus import generate_demo_corpus
    from tuwen.demo.training import DEMO_SETTINGS, train_demo

    data = home / "demo-data"
    generate_demo_corpus(data)
    settings = Settings(home=home)
    ingest(root=data, settings=settings, progress=False, echo=lambda _: None)
    before = demo_query_recall(settings=settings, model="tiny", data_root=data)
    started = time.perf_counter()
    result = train_demo(settings=settings, out=home / "runs" / "demo", progress=False, echo=lambda _: None)
    seconds = time.perf_counter() - started
    after = demo_query_recall(settings=settings, model=str(result.best_path), data_root=data)
    rows = [
        [
            "text→image R@5 (100 demo queries vs 192 candidate images)",
            f"{before['t2i']:.2f}",
            f"{after['t2i']:.2f}",
        ],
        [
            "image→text R@5 (demo query images vs 192 candidate texts)",
            f"{before['i2t']:.2f}",
            f"{after['i2t']:.2f}",
        ],
        [
            "val (held-out 10% of 附件1) R@5 t2i / i2t, %",
            "",
            f"{result.best['t2i']['r5']:.1f} / {result.best['i2t']['r5']:.1f}",
        ],
    ]
    info = {"seconds": seconds, "steps": result.steps, "samples_per_s": result.samples_per_s, **DEMO_SETTINGS}
    return rows, info


def part_vit_smoke(home: Path, steps: int, batch: int) -> dict:
    """Runs in its own process so that max RSS is this run's alone."""
    from common.settings import Settings
    from training.train import train

    started = time.perf_counter()
    result = train(
        settings=Settings(home=home),
        model="random:ViT-B-16",
        out=home / "runs" / "vit-smoke",
        epochs=1,
        batch_size=batch,
        val_fraction=0.0,
        stop_at_step=steps,
        progress=False,
        echo=lambda _: None,
    )
    return {
        "steps": result.steps,
        "seconds": time.perf_counter() - started,
        "samples_per_s": result.samples_per_s,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "checkpoint_gib": result.last_path.stat().st_size / 2**30,
    }


def plain_loop(home: Path, *, batch: int, steps: int, threads: int) -> list[float]:
    """What a user writes from cn_clip's code without its DDP launcher: fixed batches, same loss."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from cn_clip.clip import tokenize

    from common.precision import resolve_precision
    from common.settings import Settings
    from models.factory import create_model_and_transforms
    from models.imageio import open_image
    from training.data import load_pairs
    from training.step import Amp

    torch.set_num_threads(threads)
    loaded = create_model_and_transforms("random:ViT-B-16", device="cpu")
    model = loaded.model.train()
    pairs = load_pairs(Settings(home=home))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.001)
    amp = Amp(resolve_precision("auto", torch.device("cpu")), torch.device("cpu"))
    times = []
    for s in range(steps):
        chunk = pairs[s * batch : (s + 1) * batch]
        tick = time.perf_counter()
        images = torch.from_numpy(np.stack([loaded.preprocess(open_image(p.path)) for p in chunk]))
        texts = tokenize([p.caption for p in chunk], 52)
        optimizer.zero_grad()
        with amp.autocast():
            img, txt, scale = model(images, texts)
        logits = scale.float() * img.float() @ txt.float().t()
        labels = torch.arange(len(chunk))
        loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, 4.6052)
        times.append(len(chunk) / (time.perf_counter() - tick))
    return times


def part_throughput(home: Path, *, batch: int, steps: int) -> dict:
    from common.settings import Settings
    from training.train import train

    result = train(
        settings=Settings(home=home),
        model="random:ViT-B-16",
        out=home / "runs" / "vit-speed",
        epochs=1,
        batch_size=batch,
        val_fraction=0.0,
        stop_at_step=steps,
        progress=False,
        echo=lambda _: None,
    )
    log = [json.loads(line) for line in (result.last_path.parent / "metrics.jsonl").read_text().splitlines()]
    ours = [r["samples_per_s"] for r in log if r["kind"] == "train"]
    config = json.loads((result.last_path.parent / "config.json").read_text())
    threads = int(config["threads"])  # the plain loop gets the same number of threads
    plain = plain_loop(home, batch=batch, steps=steps, threads=threads)
    return {"ours": ours, "plain": plain, "threads": threads, "precision": config["precision"]}


def ddp_run(home: Path, *, nproc: int, model: str, batch: int, steps: int, tag: str) -> dict:
    """One ``tuwen train --nproc N`` through the CLI in a fresh process; per-step samples/s from
    its metrics.jsonl (over all processes: global batch / step time)."""
    out = home / "runs" / f"ddp-{nproc}-{tag}"
    cmd = [sys.executable, "-m", "tuwen.cli", "train", "--home", str(home), "--model", model]
    cmd += ["--out", str(out), "--nproc", str(nproc), "--batch-size", str(batch), "--epochs", "1"]
    cmd += ["--val-fraction", "0", "--precision", "fp32", "--stop-at-step", str(steps), "--no-progress"]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=1800)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"--nproc {nproc} failed:\n{proc.stderr[-3000:]}")
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    per_step = [r["samples_per_s"] for r in log if r["kind"] == "train"][1:]  # first step: warm-up
    return {"wall_s": wall, "samples_per_s": median(per_step), "steps": len(per_step) + 1}


def part_ddp(home: Path, *, model: str, batch: int, steps: int, rounds: int) -> list[list[str]]:
    from common.settings import Settings
    from indexer.ingest import ingest
    from tuwen.demo.corpus import generate_demo_corpus

    data = home / "demo-data"
    if not data.exists():
        generate_demo_corpus(data)
        ingest(root=data, settings=Settings(home=home), progress=False, echo=lambda _: None)
    runs: dict[int, list[dict]] = {1: [], 2: []}
    for r in range(rounds):  # interleaved: 1, 2, 1, 2, ...
        for nproc in (1, 2):
            per_process = batch * 2 // nproc  # the same global batch
            runs[nproc].append(
                ddp_run(home, nproc=nproc, model=model, batch=per_process, steps=steps, tag=str(r))
            )
    rows = []
    for nproc in (1, 2):
        rate = median([x["samples_per_s"] for x in runs[nproc]])
        wall = median([x["wall_s"] for x in runs[nproc]])
        rows.append(
            [
                f"{nproc} process{'es' if nproc > 1 else ''} × batch {batch * 2 // nproc}",
                f"{rate:.1f}",
                f"{wall:.0f}",
            ]
        )
    one, two = (median([x["samples_per_s"] for x in runs[n]]) for n in (1, 2))
    rows.append(["ratio 2 processes / 1", f"{two / one:.2f}", ""])
    return rows


def subprocess_part(part: str, home: Path, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--part", part, "--home", str(home), "--vit-steps", str(args.vit_steps)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=3600)
    if proc.returncode != 0:
        raise SystemExit(f"{part} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-vit", action="store_true", help="only (a)")
    parser.add_argument("--vit-steps", type=int, default=3, help="training steps of ViT-B-16 in (b) and (c)")
    parser.add_argument("--ddp-only", action="store_true", help="only (d)")
    parser.add_argument("--ddp-model", default="tiny", help="model of (d): tiny or random:ViT-B-16")
    parser.add_argument("--ddp-batch", type=int, default=32, help="per process in (d) with 2 processes")
    parser.add_argument("--ddp-steps", type=int, default=8)
    parser.add_argument("--ddp-rounds", type=int, default=2)
    parser.add_argument("--part", help=argparse.SUPPRESS)
    parser.add_argument("--home", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part == "vit-smoke":
        print(json.dumps(part_vit_smoke(Path(args.home), args.vit_steps, batch=8)))
        return
    if args.part == "throughput":
        print(json.dumps(part_throughput(Path(args.home), batch=32, steps=args.vit_steps)))
        return

    if args.ddp_only:
        with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
            rows = part_ddp(
                Path(tmp),
                model=args.ddp_model,
                batch=args.ddp_batch,
                steps=args.ddp_steps,
                rounds=args.ddp_rounds,
            )
        print(header(f"Fine-tuning on 2 processes (DDP, gloo) vs 1, {args.ddp_model}, same global batch"))
        print(
            f"(d) {args.ddp_model}, fp32, {args.ddp_steps} steps per run, median over steps after the first "
            f"and over {args.ddp_rounds} interleaved runs each; wall = whole command with start-up:\n"
        )
        print(table(["processes", "samples/s per step", "wall s"], rows))
        return

    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        home = Path(tmp)
        rows, info = part_demo(home)
        smoke = speed = None
        if not args.skip_vit:
            smoke = subprocess_part("vit-smoke", home, args)
            speed = subprocess_part("throughput", home, args)
    print(header("Fine-tuning: tiny on the demo corpus, ViT-B-16 smoke and throughput"))
    print(
        f"(a) tiny from scratch, train_demo(): {info['epochs']} epochs × batch {info['batch_size']}, "
        f"lr {info['lr']}, warm-up {info['warmup']}: {info['steps']} steps in {info['seconds']:.0f} s "
        f"(including per-epoch validation), {info['samples_per_s']:.0f} samples/s\n"
    )
    print(table(["held-out recall", "before (untrained tiny)", "after training"], rows))
    if smoke:
        print(
            f"\n(b) random:ViT-B-16, batch 8, {smoke['steps']} steps on CPU: completed in "
            f"{smoke['seconds']:.0f} s "
            f"(with model build and a {smoke['checkpoint_gib']:.1f} GiB last.pt), "
            f"{smoke['samples_per_s']:.2f} samples/s, peak memory (max RSS) {smoke['peak_rss_gib']:.1f} GiB"
        )
    if speed:
        ours, plain = speed["ours"][1:], speed["plain"][1:]  # first step is warm-up
        print(
            f"\n(c) random:ViT-B-16, batch 32, precision {speed['precision']}, {speed['threads']} thread(s), "
            f"median of {len(ours)} step(s) after one warm-up step each, same process:\n"
        )
        print(
            table(
                ["loop", "samples/s"],
                [
                    [
                        "tuwen train (DataLoader, padding trimmed, cn_clip param groups)",
                        f"{median(ours):.2f}",
                    ],
                    ["plain PyTorch loop, same loss", f"{median(plain):.2f}"],
                    ["ratio ours / plain", f"{median(ours) / median(plain):.2f}"],
                ],
            )
        )
    print(
        "\nGPU: none lent in this session (not measured); "
        "on CUDA the default precision is amp (fp16 + GradScaler)."
    )


if __name__ == "__main__":
    main()
