"""Print the tables of docs/scaling.md: the FAISS index ``tuwen index`` would choose for 1M, 100M
and 1B images (``indexer.faiss_factory.choose_factory``, called, not re-derived) with its memory,
and encoding hours from per-GPU rates (published figures, labelled) and this machine's CPU rate.

    PYTHONPATH=$PWD .venv/bin/python scripts/scaling_plan.py

Index memory = n x (bytes per code of the factory's storage, read from FAISS + 8-byte id in the
inverted lists) + the coarse quantizer (nlist centroids as floats + HNSW32 level-0 links). The
formula matches the measured 993 MiB per 1M for IVF4096_HNSW32,SQfp16 at 512-d (bench/RESULTS.md).
"""

from __future__ import annotations

import argparse

import faiss

from indexer.faiss_factory import choose_factory

SIZES = {"1M": 10**6, "100M": 10**8, "1B": 10**9}
DIMS = {"ViT-B-16": 512, "ViT-L-14": 768, "ViT-H-14": 1024}
RAM_GIB = (64, 256, 1024)  # the tuner's default budget is a quarter of the machine's RAM
HNSW_M = 32
GIB = 1 << 30

# images/s per GPU (or per machine), with where each figure comes from
RATES = [
    ("this VM, 2 shared CPU cores, bf16 (measured, bench/RESULTS.md)", "ViT-B-16", 4.0),
    ("T4, batch 1, fp16 (published: Chinese-CLIP README, 11.1 ms)", "ViT-B-16", 1000 / 11.1),
    ("A100, ViT-B/16 alone (published: clip-retrieval, 1,100/s)", "ViT-B-16", 1100.0),
    ("A100 in an 8-GPU node, ViT-B/16 (published: clip-retrieval, 7,000/s per node)", "ViT-B-16", 875.0),
    ("A100, ViT-L/14 (published: clip-retrieval, 312/s; 2,500/s per 8-GPU node)", "ViT-L-14", 312.0),
]
GPU_COUNTS = (1, 8, 32, 128)


def index_memory(n: int, dim: int, factory: str) -> int:
    """Bytes of the index ``factory`` over ``n`` vectors (what the server keeps in RAM)."""
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:  # Flat: the vectors themselves
        return n * dim * 4
    quantizer = ivf.nlist * (dim * 4 + 2 * HNSW_M * 4)
    return n * (ivf.code_size + 8) + quantizer


def index_table() -> list[str]:
    rows = [
        "| images | model (dim) | server RAM | factory chosen | index GiB | float vectors (.npy) GiB |",
        "|---|---|---|---|---|---|",
    ]
    for size_name, n in SIZES.items():
        for model, dim in DIMS.items():
            for ram in RAM_GIB:
                factory = choose_factory(n, dim, max_memory=ram * GIB // 4)
                gib = index_memory(n, dim, factory) / GIB
                rows.append(
                    f"| {size_name} | {model} ({dim}) | {ram} GiB | `{factory}` | {gib:,.1f} | "
                    f"{n * dim * 4 / GIB:,.0f} |"
                )
    return rows


def _hours(h: float) -> str:
    return "<0.1" if h < 0.1 else f"{h:,.1f}" if h < 100 else f"{h:,.0f}"


def hours_table() -> list[str]:
    rows = [
        "| rate (images/s per device) | model | "
        + " | ".join(f"{s}: h on {g}" for s in SIZES for g in GPU_COUNTS)
        + " |",
        "|---|---|" + "---|" * (len(SIZES) * len(GPU_COUNTS)),
    ]
    for source, model, rate in RATES:
        cells = [_hours(n / (rate * g) / 3600) for n in SIZES.values() for g in GPU_COUNTS]
        rows.append(f"| {source}: {rate:,.0f} | {model} | " + " | ".join(cells) + " |")
    return rows


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    print("\n".join(index_table()))
    print()
    print("\n".join(hours_table()))


if __name__ == "__main__":
    main()
