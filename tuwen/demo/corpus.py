"""A synthetic captioned-image corpus in the competition's 附件 layout, deterministic from a seed.

Garments × colours × patterns drawn with Pillow, captioned in Chinese ("红色条纹连衣裙").
Training pairs (附件1), candidate images and query texts (附件2), query images and candidate
texts (附件3), plus ``ground_truth.json`` beside them naming the relevant candidates of each
query (same garment, colour and pattern). With ``quirks`` it also carries what real data
carries: a missing image, a GIF and an RGBA PNG named ``.jpg``, grayscale, a 1-pixel-high
image, a quoted caption with a comma and a newline, and a GBK-encoded query file.
"""

from __future__ import annotations

import csv
import io
import json
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

GARMENTS = {  # name: measure word
    "连衣裙": "条",
    "衬衫": "件",
    "T恤": "件",
    "裤子": "条",
    "半身裙": "条",
    "帽子": "顶",
}
COLOURS = {
    "红色": (215, 30, 35),
    "蓝色": (30, 70, 210),
    "绿色": (25, 150, 60),
    "黄色": (245, 205, 20),
    "黑色": (25, 25, 25),
    "白色": (250, 250, 250),
    "紫色": (125, 45, 170),
    "橙色": (245, 125, 15),
}
PATTERNS = ["纯色", "条纹", "格子", "波点"]
TEMPLATES = [
    "{c}{p}{g}",
    "一{m}{c}{p}{g}",
    "{c}的{p}{g}",
    "这{m}{g}是{c}{p}的",
    "{c}{p}{g}，简约百搭",
    "女士{c}{p}{g}新款",
    "夏季{c}{p}{g}",
    "{p}{g}，颜色是{c}",
]
DEFAULT_ENCODINGS = {
    "ImageWordData.csv": "utf-8-sig",
    "word_test.csv": "gbk",
    "word_data.csv": "utf-8",
    "image_data.csv": "utf-8",
    "image_test.csv": "utf-8",
}


@dataclass(frozen=True)
class Item:
    garment: str
    colour: str
    pattern: str

    @property
    def key(self) -> str:
        return f"{self.colour}{self.pattern}{self.garment}"


def all_items() -> list[Item]:
    return [Item(g, c, p) for g in GARMENTS for c in COLOURS for p in PATTERNS]


def caption(item: Item, rng: random.Random) -> str:
    pattern = "" if item.pattern == "纯色" and rng.random() < 0.5 else item.pattern
    template = rng.choice(TEMPLATES)
    return template.format(c=item.colour, p=pattern, g=item.garment, m=GARMENTS[item.garment])


def _silhouette(
    draw: ImageDraw.ImageDraw, garment: str, box: tuple[float, float, float, float], fill: int
) -> None:
    """Draw the garment's shape into a mask (``fill`` inside, 0 for cut-outs)."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0

    def p(fx: float, fy: float) -> tuple[float, float]:
        return (x0 + fx * w, y0 + fy * h)

    if garment == "连衣裙":
        draw.polygon([p(0.35, 0), p(0.65, 0), p(0.7, 0.3), p(0.95, 1), p(0.05, 1), p(0.3, 0.3)], fill=fill)
    elif garment == "半身裙":
        draw.polygon([p(0.3, 0.25), p(0.7, 0.25), p(0.95, 0.9), p(0.05, 0.9)], fill=fill)
    elif garment in ("衬衫", "T恤"):
        sleeve = 0.55 if garment == "衬衫" else 0.3
        draw.polygon(
            [
                p(0.3, 0.05),
                p(0.7, 0.05),
                p(1, 0.15 + sleeve * 0.2),
                p(0.9, sleeve),
                p(0.75, 0.3),
                p(0.75, 1),
                p(0.25, 1),
                p(0.25, 0.3),
                p(0.1, sleeve),
                p(0, 0.15 + sleeve * 0.2),
            ],
            fill=fill,
        )
        if garment == "衬衫":
            draw.polygon([p(0.4, 0.05), p(0.5, 0.22), p(0.6, 0.05)], fill=0)  # V-neck
    elif garment == "裤子":
        draw.polygon(
            [p(0.2, 0), p(0.8, 0), p(0.9, 1), p(0.58, 1), p(0.5, 0.35), p(0.42, 1), p(0.1, 1)], fill=fill
        )
    elif garment == "帽子":
        draw.pieslice([p(0.2, 0.2), p(0.8, 0.9)], 180, 360, fill=fill)
        draw.rectangle([p(0, 0.53), p(1, 0.65)], fill=fill)
    else:
        raise ValueError(garment)


def draw_item(item: Item, rng: random.Random, size: int = 128) -> Image.Image:
    """One picture of ``item`` with random placement, scale, background and pattern phase."""
    return draw_item_with_mask(item, rng, size)[0]


def draw_item_with_mask(item: Item, rng: random.Random, size: int = 128) -> tuple[Image.Image, Image.Image]:
    """``draw_item``'s picture and the garment's silhouette it was drawn through (an ``L`` mask, 255 =
    garment): the segmentation truth. The same random draws as ``draw_item``, so the same picture."""
    background = tuple(rng.randint(170, 225) for _ in range(3))
    scale = rng.uniform(0.6, 0.85)
    w = h = size * scale
    x0 = rng.uniform(0, size - w)
    y0 = rng.uniform(0, size - h)
    box = (x0, y0, x0 + w, y0 + h)
    mask = Image.new("L", (size, size), 0)
    _silhouette(ImageDraw.Draw(mask), item.garment, box, 255)
    colour = COLOURS[item.colour]
    fabric = Image.new("RGB", (size, size), colour)
    lum = sum(colour) / 3
    ink = (20, 20, 20) if lum > 150 else (245, 245, 245)
    d = ImageDraw.Draw(fabric)
    step = rng.randint(9, 13)
    phase = rng.randint(0, step)
    if item.pattern == "条纹":
        for y in range(phase - step, size, step):
            d.rectangle([0, y, size, y + step // 2 - 1], fill=ink)
    elif item.pattern == "格子":
        for v in range(phase - step, size, step):
            d.rectangle([0, v, size, v + 2], fill=ink)
            d.rectangle([v, 0, v + 2, size], fill=ink)
    elif item.pattern == "波点":
        r = step // 4 + 1
        for y in range(phase - step, size, step):
            for x in range((y // step % 2) * step // 2, size, step):
                d.ellipse([x - r, y - r, x + r, y + r], fill=ink)
    image = Image.new("RGB", (size, size), background)
    image.paste(fabric, (0, 0), mask)
    return image, mask


def _write_csv(path: Path, header: list[str], rows: list[list[str]], encoding: str) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.write_bytes(buf.getvalue().encode(encoding))


def generate_demo_corpus(
    out: str | Path,
    *,
    seed: int = 0,
    n_train: int = 1500,
    candidates_per_item: int = 1,
    n_text_queries: int = 100,
    n_image_queries: int = 100,
    image_size: int = 128,
    quirks: bool = True,
    encodings: dict[str, str] | None = None,
) -> dict:
    """Write the corpus under ``out`` and return a summary (counts, quirks, paths)."""
    rng = random.Random(seed)
    root = Path(out)
    dirs = {k: root / k / "ImageData" for k in ("附件1", "附件2", "附件3")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    draw = _Drawer(rng, image_size)
    train_rows = _training_pairs(draw, dirs["附件1"], n_train)
    cand_images, cand_items = _candidate_images(draw, dirs["附件2"], candidates_per_item)
    text_queries = [
        (f"Word-2{i + 1:09d}", caption(item, rng), item)
        for i, item in ((i, rng.choice(all_items())) for i in range(n_text_queries))
    ]
    cand_texts = _candidate_texts(rng, candidates_per_item)
    image_queries = _query_images(draw, dirs["附件3"], n_image_queries)
    quirk_notes: dict[str, str] = {}
    if quirks:
        quirk_notes = _add_quirks(root, dirs, train_rows, cand_images, image_queries, rng, image_size)
    tables = {
        ("附件1", "ImageWordData.csv"): (["image_id", "caption"], train_rows),
        ("附件2", "image_data.csv"): (["image_id"], [[i] for i in cand_images]),
        ("附件2", "word_test.csv"): (["text_id", "caption"], [[t, c] for t, c, _ in text_queries]),
        ("附件3", "image_test.csv"): (["image_id"], [[i] for i, _ in image_queries]),
        ("附件3", "word_data.csv"): (["text_id", "caption"], [[t, c] for t, c, _ in cand_texts]),
    }
    enc = {**DEFAULT_ENCODINGS, **(encodings or {})}
    for (folder, name), (header, rows) in tables.items():
        _write_csv(root / folder / name, header, rows, enc[name])
    truth = {
        "text_queries": {
            t: sorted(i for i, it in cand_items.items() if it == item) for t, _, item in text_queries
        },
        "image_queries": {i: sorted(t for t, _, it in cand_texts if it == item) for i, item in image_queries},
    }
    (root / "ground_truth.json").write_text(json.dumps(truth, ensure_ascii=False, indent=1))
    return {
        "root": str(root),
        "train_pairs": len(train_rows),
        "candidate_images": len(cand_images),
        "text_queries": len(text_queries),
        "image_queries": len(image_queries),
        "candidate_texts": len(cand_texts),
        "quirks": quirk_notes,
    }


class _Drawer:
    """Draws an item's photo with the corpus's one random stream and saves it as a JPEG."""

    def __init__(self, rng: random.Random, size: int):
        self.rng, self.size = rng, size

    def save(self, item, folder: Path, image_id: str) -> None:
        draw_item(item, self.rng, self.size).save(folder / image_id, format="JPEG", quality=90)


def _training_pairs(draw: _Drawer, folder: Path, n: int) -> list[list[str]]:
    """附件1: (image id, caption) rows, shuffled relative to file order on purpose."""
    rows = []
    for i in range(n):
        item = draw.rng.choice(all_items())
        image_id = f"Image1{i + 1:07d}-0000.jpg"
        draw.save(item, folder, image_id)
        rows.append([image_id, caption(item, draw.rng)])
    draw.rng.shuffle(rows)
    return rows


def _candidate_images(draw: _Drawer, folder: Path, per_item: int) -> tuple[list[str], dict]:
    """附件2: every item drawn ``per_item`` times; ids shuffled, and the item of each id."""
    items = all_items()
    ids, item_of = [], {}
    for k in range(per_item):
        for j, item in enumerate(items):
            image_id = f"Image2{k * len(items) + j + 1:07d}-0000.jpg"
            draw.save(item, folder, image_id)
            ids.append(image_id)
            item_of[image_id] = item
    draw.rng.shuffle(ids)
    return ids, item_of


def _candidate_texts(rng: random.Random, per_item: int) -> list[tuple]:
    """附件3: a caption of every item ``per_item`` times, shuffled: (text id, caption, item)."""
    items = all_items()
    texts = [
        (f"Word-3{k * len(items) + j + 1:09d}", caption(item, rng), item)
        for k in range(per_item)
        for j, item in enumerate(items)
    ]
    rng.shuffle(texts)
    return texts


def _query_images(draw: _Drawer, folder: Path, n: int) -> list[tuple]:
    """附件3: (image id, item) of the query images."""
    queries = []
    for i in range(n):
        item = draw.rng.choice(all_items())
        image_id = f"Image3{i + 1:07d}-0000.jpg"
        draw.save(item, folder, image_id)
        queries.append((image_id, item))
    return queries


def _add_quirks(
    root: Path,
    dirs: dict[str, Path],
    train_rows: list[list[str]],
    cand_images: list[str],
    image_queries: list,
    rng: random.Random,
    size: int,
) -> dict[str, str]:
    """Make a few files what real data makes them; returns {what: image id}."""
    notes = {}
    item = all_items()[0]
    # A training row whose image is missing.
    missing = "Image19999999-0000.jpg"
    train_rows.append([missing, caption(item, rng)])
    notes["train_missing"] = missing
    # A GIF, an RGBA PNG, a grayscale JPEG and a 1-pixel-high JPEG, all named .jpg.
    gif_id, png_id, gray_id, strip_id = (row[0] for row in train_rows[:4])
    draw_item(item, rng, size).convert("P").save(dirs["附件1"] / gif_id, format="GIF")
    rgba = draw_item(item, rng, size).convert("RGBA")
    rgba.putalpha(200)
    rgba.save(dirs["附件1"] / png_id, format="PNG")
    Image.open(dirs["附件1"] / gray_id).convert("L").save(dirs["附件1"] / gray_id, format="JPEG")
    Image.new("RGB", (size, 1), (200, 30, 30)).save(dirs["附件1"] / strip_id, format="JPEG")
    notes.update(train_gif=gif_id, train_rgba_png=png_id, train_gray=gray_id, train_one_pixel_high=strip_id)
    # A quoted caption with a comma and a newline.
    train_rows[4][1] = train_rows[4][1] + "，\n第二行, with comma"
    notes["train_multiline_caption"] = train_rows[4][0]
    # A candidate PNG named .jpg; a missing query image and a GIF query named .jpg.
    cand_png = cand_images[0]
    Image.open(dirs["附件2"] / cand_png).save(dirs["附件2"] / cand_png, format="PNG")
    notes["candidate_png"] = cand_png
    query_missing = image_queries[0][0]
    (dirs["附件3"] / query_missing).unlink()
    notes["query_missing"] = query_missing
    query_gif = image_queries[1][0]
    Image.open(dirs["附件3"] / query_gif).convert("P").save(dirs["附件3"] / query_gif, format="GIF")
    notes["query_gif"] = query_gif
    return notes
