"""The ceilings of this CPU for the image and text towers (issue 22), printed as a table.

    .venv/bin/python bench/bench_roofline.py                   # random:ViT-B-16, fp32 (+ bf16 where native)
    .venv/bin/python bench/bench_roofline.py --model random:ViT-L-14

The other benchmarks measure the same ceilings in their own run (``roofline.ceiling``) and print
"% of ceiling" beside their figures; this script shows the method's parts on their own.
"""

from __future__ import annotations

import argparse

import harness  # noqa: F401  (sys.path, HF_HUB_OFFLINE)
from harness import header, table
from roofline import WAYS, ceiling, gemm_rate, libraries, tower_shapes

from common.precision import cpu_supports_bf16
from models.factory import create_model_and_transforms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="random:ViT-B-16")
    parser.add_argument("--batch", type=int, default=32, help="image batch of the GEMM shapes")
    args = parser.parse_args()
    lm = create_model_and_transforms(args.model, device="cpu")
    dtypes = ["fp32"] + (["bf16"] if cpu_supports_bf16() else [])
    rows = []
    for dtype in dtypes:
        for what, batch in (("image", args.batch), ("text", 1)):
            c = ceiling(lm, what, dtype=dtype, batch=batch)
            shapes = tower_shapes(lm, what, c.batch)
            each = [
                f"{gemm_rate(shapes, dtype, among=(name,), ways=(way,)):.0f}"
                for name in libraries()
                for way in WAYS
            ]
            floor = f"{c.per_second:.2f} images/s" if what == "image" else f"{1000 * c.seconds:.1f} ms/query"
            memory = [f"{c.weight_mb:.0f}", f"{c.bandwidth_gbs:.0f}", c.bound]
            rows.append(
                [what, dtype, c.batch, f"{c.gflop:.2f}", *each, f"{c.gflops_rate:.0f}", *memory, floor]
            )
    print(header(f"Ceilings of this CPU, {args.model}"))
    rates = [f"{name} GFLOP/s ({way})" for name in libraries() for way in WAYS]
    columns = ["tower", "dtype", "GEMM batch", "GFLOP each", *rates, "best GFLOP/s"]
    print(table([*columns, "weights MB / batch", "read GB/s", "bound", "ceiling"], rows))
    print(
        "\n(threads): one product on every thread; (cores): one single-threaded product per core at "
        "once, as a bulk job runs its passes. best: per shape, the fastest library and way "
        "(FLOP-weighted harmonic mean over the shapes), measured again for the ceiling column; the "
        "other columns are separate runs. bound: the slower of the GEMMs at the best rate and "
        "reading the weights once per batch at the read bandwidth."
    )


if __name__ == "__main__":
    main()
