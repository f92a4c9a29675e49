"""A synthetic social-posts corpus (小红书-like) for ``tuwen corpus add`` and the analysis studies.

``posts.jsonl`` beside ``images/``: one post a line with ``id``, ``image``, ``caption`` (a title, a
date like ``05-17`` and ``#hashtags``), ``time`` (an ISO date over twelve months) and attributes
``likes`` (int), ``category`` (string) and ``garment`` (the planted truth). The pictures are the
demo corpus's garments (``tuwen.demo.corpus.draw_item``); ``silhouettes/<id>.png`` holds the mask
each was drawn through, the truth to score ``tuwen corpus masks`` against (no ``mask`` column: the
demo makes the posts' masks with GrabCut).

Planted structure, for the tests and the demo to recover: each garment is a style; the share of
``RISING`` (连衣裙) rises month by month from about 5 % to about 45 % while the others share the rest
evenly. Deterministic for a seed.
"""

from __future__ import annotations

import json
import random
from datetime import date, timedelta
from pathlib import Path

import numpy as np

from indexer.corpus import CorpusItem
from indexer.corpus.masks import decode_mask
from tuwen.demo.corpus import COLOURS, GARMENTS, PATTERNS, Item, draw_item_with_mask

RISING = "连衣裙"
SILHOUETTES = "silhouettes"  # the drawn garments' masks, <id>.png
CATEGORIES = {
    "连衣裙": "裙装",
    "半身裙": "裙装",
    "衬衫": "上衣",
    "T恤": "上衣",
    "裤子": "裤装",
    "帽子": "配饰",
}
STYLE_TAGS = {  # hashtags a poster of each garment picks from
    "连衣裙": ["法式连衣裙", "温柔风", "约会穿搭"],
    "半身裙": ["半身裙", "通勤穿搭", "显瘦"],
    "衬衫": ["衬衫", "职场穿搭", "简约风"],
    "T恤": ["T恤", "休闲风", "夏日穿搭"],
    "裤子": ["阔腿裤", "显高", "日常穿搭"],
    "帽子": ["帽子", "配饰", "出街"],
}
TITLES = [
    "{c}{p}{g}｜今天的穿搭",
    "这{m}{g}也太好看了吧",
    "{c}{g}怎么搭？一周不重样",
    "入手了一{m}{c}{g}",
    "{p}{g}，简约又百搭",
    "被问了无数次的{c}{g}",
]


def rising_share(month: int, months: int) -> float:
    """The planted share of ``RISING`` in month ``month`` (0-based) of ``months``."""
    return 0.05 + 0.40 * month / max(months - 1, 1)


def _garment(month: int, months: int, rng: random.Random) -> str:
    others = [g for g in GARMENTS if g != RISING]
    if rng.random() < rising_share(month, months):
        return RISING
    return rng.choice(others)


def post_caption(item: Item, day: date, rng: random.Random) -> str:
    """A title, the date as ``MM-DD`` and 1–4 hashtags (one post in ten has none)."""
    title = rng.choice(TITLES).format(
        c=item.colour,
        p="" if item.pattern == "纯色" else item.pattern,
        g=item.garment,
        m=GARMENTS[item.garment],
    )
    if rng.random() < 0.1:
        return f"{title} {day:%m-%d}"
    tags = rng.sample(STYLE_TAGS[item.garment], k=rng.randint(1, 3))
    if rng.random() < 0.3:
        tags.append(f"{item.colour}{item.garment}")
    return f"{title} {day:%m-%d} " + " ".join(f"#{t}" for t in tags)


def generate_demo_posts(
    out: str | Path,
    *,
    seed: int = 0,
    n_posts: int = 600,
    months: int = 12,
    start: date = date(2025, 1, 1),
    image_size: int = 96,
    silhouettes: bool = True,
) -> dict:
    """Write ``posts.jsonl`` and ``images/`` under ``out``; returns a summary (counts, shares)."""
    rng = random.Random(seed)
    root = Path(out)
    (root / "images").mkdir(parents=True, exist_ok=True)
    if silhouettes:
        (root / SILHOUETTES).mkdir(exist_ok=True)
    per_month: dict[int, dict[str, int]] = {}
    lines = []
    for i in range(n_posts):
        month = i * months // n_posts  # the same number of posts every month, in time order
        day = _month_start(start, month) + timedelta(days=rng.randrange(28))
        item = Item(_garment(month, months, rng), rng.choice(list(COLOURS)), rng.choice(PATTERNS))
        name = f"post{i + 1:05d}.jpg"
        image, mask = draw_item_with_mask(item, rng, image_size)
        image.save(root / "images" / name, format="JPEG", quality=88)
        if silhouettes:
            mask.save(root / SILHOUETTES / f"post{i + 1:05d}.png")
        likes = int(rng.lognormvariate(4.0, 1.0)) + (40 if item.garment == RISING else 0)
        post = {
            "id": f"post{i + 1:05d}",
            "image": f"images/{name}",
            "caption": post_caption(item, day, rng),
            "time": day.isoformat(),
            "likes": likes,
            "category": CATEGORIES[item.garment],
            "garment": item.garment,
        }
        lines.append(json.dumps(post, ensure_ascii=False))
        counts = per_month.setdefault(month, {})
        counts[item.garment] = counts.get(item.garment, 0) + 1
    path = root / "posts.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    shares = {m: round(c.get(RISING, 0) / max(sum(c.values()), 1), 3) for m, c in sorted(per_month.items())}
    return {"file": str(path), "posts": n_posts, "rising": RISING, "rising_share_by_month": shares}


def _month_start(start: date, month: int) -> date:
    year, index = divmod(start.month - 1 + month, 12)
    return date(start.year + year, index + 1, 1)


def grabcut_summary(items: list[CorpusItem], silhouettes: Path, *, small: float = 0.05) -> dict:
    """What ``tuwen corpus masks`` gave on the posts: how many masks, their median share of the frame,
    how many cover under ``small`` of it (what ``--min-mask-area`` would drop) and, for the posts whose
    drawn silhouette is in ``silhouettes``, the median IoU of mask and silhouette and the share at 0.8+."""
    areas = [i.mask_area for i in items if i.mask_area is not None]
    ious = []
    for item in items:
        truth = silhouettes / f"{item.item_id}.png"
        if item.mask_path and item.mask_area is not None and truth.is_file():
            made, drawn = decode_mask(Path(item.mask_path).read_bytes()), decode_mask(truth.read_bytes())
            union = (made | drawn).sum()
            ious.append(float((made & drawn).sum() / union) if union else 1.0)
    return {
        "posts": len(items),
        "masks": len(areas),
        "median_area": float(np.median(areas)) if areas else None,
        "small": sum(a < small for a in areas),
        "median_iou": float(np.median(ious)) if ious else None,
        "iou_0.8": float(np.mean([v >= 0.8 for v in ious])) if ious else None,
    }
