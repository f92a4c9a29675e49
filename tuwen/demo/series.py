"""Two small JSONL corpora (captions, images, attributes) with structure planted for the
supervised studies, drawn with the demo corpus's garments (``tuwen.demo.corpus``).

``trend.jsonl`` — a day-by-day series for ``analyze trend``: ``posts_per_day`` posts a day over
``days`` days, field ``day`` as ``time``. Each day draws its share of dresses (连衣裙) at random,
independently of every other day. A day is "hot" when the dress share **rose** over the two days
before it: (share[d-1] + share[d-2]) > (share[d-3] + share[d-4]). Each post of a hot day gets
``hot = 1`` with probability 0.85 (0.15 on other days) and ``likes`` above 200 exactly when
``hot = 1``. So the label of a day is predictable from the order of the previous days' dress shares,
which captions name and images show, but not from the last day's label (the rise flips often: about
58 % agreement) nor from the mean of the window (the mean holds no order).

``fusion.jsonl`` — posts for ``analyze classify``: the image shows a plain red or blue garment,
the caption names only its colour and maybe a word. ``bestseller = 1`` when ``g + w > 0``, with
``g = +1`` for a dress, skirt or hat and ``-1`` otherwise (seen only in the image), and ``w = +2``
for a caption with "新款", ``-2`` with "清仓", ``0`` without either (half the posts; seen only in
the text). The caption alone decides the half with a word and guesses the rest (≈ 75 %); the image
alone knows ``g``, which decides only the half without a word (≈ 65 % with the untrained ``tiny``
model, whose image tower tells the garments apart only roughly); only both together can reach
100 % (≈ 85 % with ``tiny``). ``garment`` (6 classes) is kept as a multi-class attribute.

Both files carry a ``mask`` column: ``masks/<id>.png``, the silhouette each garment was drawn through.
Drawn masks rather than ``tuwen corpus masks`` (GrabCut), for two reasons. The demo posts already show
GrabCut and how close it comes to these silhouettes; here the ``mask`` column shows the other way in,
the one a team with its own segmentation tool takes, and with exact masks the studies' mask rows
show what the modality itself gives (the garment's shape without background), not GrabCut's
misses. And GrabCut on these 5,180 pictures would add about a minute (~11 ms each) to the demo.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from tuwen.demo.corpus import COLOURS, GARMENTS, PATTERNS, Item, caption, draw_item_with_mask

TREND_STYLE = "连衣裙"
FUSION_POSITIVE_GARMENTS = ("连衣裙", "半身裙", "帽子")
FUSION_WORDS = {"新款": 2, "清仓": -2}
FUSION_COLOURS = ("红色", "蓝色")  # few colours, so the untrained tiny image tower sees the garment's shape
FUSION_TEMPLATES = ["{c}{p}款式{w}", "这件是{c}的{w}", "{c}，{p}{w}", "今日穿搭：{c}{p}{w}", "{w}{c}{p}单品"]


def trend_rows(*, seed: int = 0, days: int = 365, posts_per_day: int = 12) -> list[dict]:
    """The rows of ``trend.jsonl`` (with ``_item`` for drawing); see the module docstring."""
    rng = random.Random(seed)
    others = [g for g in GARMENTS if g != TREND_STYLE]
    shares: list[float] = []
    rows: list[dict] = []
    for day in range(days):
        target = rng.uniform(0.05, 0.75)
        dresses = sum(rng.random() < target for _ in range(posts_per_day))
        garments = [TREND_STYLE] * dresses + [rng.choice(others) for _ in range(posts_per_day - dresses)]
        rng.shuffle(garments)
        shares.append(dresses / posts_per_day)
        if day >= 4:
            rising = shares[day - 1] + shares[day - 2] > shares[day - 3] + shares[day - 4]
        else:
            rising = rng.random() < 0.5
        for k, garment in enumerate(garments):
            item = Item(garment, rng.choice(list(COLOURS)), rng.choice(PATTERNS))
            hot = int(rng.random() < (0.85 if rising else 0.15))
            likes = rng.randint(201, 2000) if hot else rng.randint(0, 200)
            rows.append(
                {
                    "id": f"d{day:04d}-{k:02d}",
                    "caption": caption(item, rng),
                    "time": day,
                    "hot": hot,
                    "likes": likes,
                    "_item": item,
                }
            )
    return rows


def fusion_rows(*, seed: int = 0, n: int = 800) -> list[dict]:
    """The rows of ``fusion.jsonl`` (with ``_item`` for drawing); see the module docstring."""
    rng = random.Random(seed)
    words = list(FUSION_WORDS)
    rows = []
    for i in range(n):
        garment = rng.choice(list(GARMENTS))
        item = Item(garment, rng.choice(FUSION_COLOURS), "纯色")
        word = rng.choice(words) if rng.random() < 0.5 else ""
        g = 1 if garment in FUSION_POSITIVE_GARMENTS else -1
        w = FUSION_WORDS.get(word, 0)
        template = rng.choice(FUSION_TEMPLATES)
        text = template.format(
            c=item.colour, p=rng.choice(["", "简约", "百搭"]), w=f"，{word}" if word else ""
        )
        rows.append(
            {
                "id": f"f{i:05d}",
                "caption": text.strip("，"),
                "bestseller": int(g + w > 0),
                "garment": garment,
                "_item": item,
            }
        )
    return rows


def write_jsonl_corpus(
    rows: list[dict],
    *,
    out: str | Path,
    name: str,
    seed: int = 0,
    image_size: int = 64,
    images: bool = True,
    masks: bool = False,
) -> Path:
    """Draw each row's ``_item`` to ``images/<id>.jpg`` (relative to the file), with ``masks`` its
    silhouette to ``masks/<id>.png`` as the ``mask`` column; write ``<name>.jsonl``."""
    root = Path(out)
    folder = root / "images"
    folder.mkdir(parents=True, exist_ok=True)
    if masks:
        (root / "masks").mkdir(exist_ok=True)
    rng = random.Random(seed + 1)
    path = root / f"{name}.jsonl"
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            record = {k: v for k, v in row.items() if k != "_item"}
            if images:
                image = f"images/{row['id']}.jpg"
                picture, silhouette = draw_item_with_mask(row["_item"], rng, image_size)
                picture.save(root / image, format="JPEG", quality=90)
                record["image"] = image
                if masks:
                    record["mask"] = f"masks/{row['id']}.png"
                    silhouette.save(root / record["mask"])
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def generate_demo_series(
    out: str | Path, *, seed: int = 0, days: int = 365, posts_per_day: int = 12, n_fusion: int = 800
) -> dict:
    """Write ``trend.jsonl`` and ``fusion.jsonl`` with their images and masks under ``out``; returns
    their paths."""
    trend = write_jsonl_corpus(
        trend_rows(seed=seed, days=days, posts_per_day=posts_per_day),
        out=out,
        name="trend",
        seed=seed,
        masks=True,
    )
    fusion = write_jsonl_corpus(
        fusion_rows(seed=seed, n=n_fusion), out=out, name="fusion", seed=seed, masks=True
    )
    return {"trend": str(trend), "fusion": str(fusion)}
