"""What the server keeps so that searches need no database (issue 24): memory per million items.

Builds the columns of N synthetic items (ids, Chinese captions, image paths, a time, a str field
of 20 values, a float and an int field), saves them as a generation does, then in a fresh process
loads them as the service does (``Columns.load(mmap=True)``), builds the id index a search uses
(``row_of``) and evaluates one filter over every row, reading the resident set size after each
step. The competition's text candidates are the same with captions only.

    python bench/bench_columns_memory.py --items 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

WORDS = [
    "红色",
    "蓝色",
    "白色",
    "黑色",
    "连衣裙",
    "牛仔裤",
    "衬衫",
    "外套",
    "夏日",
    "海边",
    "街拍",
    "复古",
    "简约",
    "宽松",
    "修身",
    "条纹",
    "格子",
    "碎花",
]


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def make_items(n: int, *, attributes: bool) -> list[SimpleNamespace]:
    from datetime import datetime, timedelta

    rng = random.Random(0)
    start = datetime(2024, 1, 1)
    return [
        SimpleNamespace(
            item_id=f"item-{i:09d}",
            caption="，".join(rng.choice(WORDS) for _ in range(6)),  # ~18 characters
            image_path=None if not attributes else f"/data/photos/{i // 1000:04d}/{i:09d}.jpg",
            time=start + timedelta(minutes=i) if attributes else None,
            attributes={"category": f"类目{i % 20}", "price": 10 + (i % 997) * 0.5, "likes": i % 5000}
            if attributes
            else {},
        )
        for i in range(n)
    ]


def build(folder: Path, n: int, attributes: bool) -> float:
    from indexer.collection import Columns

    fields = {"category": "str", "price": "float", "likes": "int"} if attributes else {}
    t0 = time.perf_counter()
    Columns.from_items(make_items(n, attributes=attributes), fields=fields, time_kind=None).save(folder)
    return time.perf_counter() - t0


def measure(folder: str) -> None:
    """In a fresh process: RSS before, after load, after row_of, after a filter over every row."""
    import numpy as np

    from indexer.collection import Columns, parse_where

    out = {"start_mb": rss_mb()}
    t0 = time.perf_counter()
    columns = Columns.load(folder, mmap=True)
    out["load_s"] = time.perf_counter() - t0
    out["loaded_mb"] = rss_mb()
    columns.row_of(columns.ids[-1])
    out["row_of_mb"] = rss_mb()
    if columns.fields:
        where = parse_where(
            {"category": "类目3", "price": {"gte": 100}}, fields=columns.fields, time_kind=columns.time_kind
        )
        out["passing"] = int(np.count_nonzero(where.mask(columns)))
    out["filtered_mb"] = rss_mb()
    print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(args.measure)
        return
    per_million = 1_000_000 / args.items
    with tempfile.TemporaryDirectory() as tmp:
        for label, attributes in (("corpus (caption, path, time, 3 fields)", True), ("captions only", False)):
            folder = Path(tmp) / label.split()[0]
            built = build(folder, args.items, attributes)
            disk = sum(p.stat().st_size for p in folder.iterdir()) / 2**20
            done = subprocess.run(
                [sys.executable, __file__, "--measure", str(folder)],
                capture_output=True,
                text=True,
                check=True,
            )
            m = json.loads(done.stdout)
            kept = (m["filtered_mb"] - m["start_mb"]) * per_million
            print(
                f"{label}: {args.items:,} items; built in {built:.1f} s, {disk:.0f} MB on disk; "
                f"loaded in {m['load_s']:.1f} s: +{(m['loaded_mb'] - m['start_mb']) * per_million:.0f} MB/M, "
                f"+ id index {(m['row_of_mb'] - m['loaded_mb']) * per_million:.0f} MB/M, "
                f"+ a filter's pages {(m['filtered_mb'] - m['row_of_mb']) * per_million:.0f} MB/M "
                f"= {kept:.0f} MB per million items"
            )


if __name__ == "__main__":
    main()
