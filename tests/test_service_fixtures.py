"""Helpers and fixtures shared by the service tests (imported by test_api*.py, test_service*.py,
test_browser*.py): real indexes built with ``tiny`` on the ``small_corpus`` fixture."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from conftest import copy_home
from PIL import Image

from common.precision import cpu_supports_bf16
from common.settings import Settings
from indexer.build import index_corpus
from indexer.index_files import load_current
from indexer.ingest import ingest
from models.encoder import Encoder
from models.factory import create_model_and_transforms
from models.imageio import open_image
from models.registry import ARCHS
from models.torch_model import build_model


def make_settings(home: Path, **overrides) -> Settings:
    """Settings for ``home`` that ignore any TUWEN_* security variables of the caller's shell."""
    fields = {
        "home": home,
        "database_url": None,
        "api_key": None,
        "require_key_for_search": False,
        "cors_origins": [],
        "max_upload_mb": 10.0,
        "max_query_chars": 1000,
        "device": "cpu",
    }
    return Settings(**{**fields, **overrides})


def build_home(home: Path, corpus_root: Path, *, model: str = "tiny", **overrides) -> Settings:
    """Ingest ``corpus_root`` into ``home`` and index it with ``model`` (a few seconds with tiny)."""
    settings = make_settings(home, **overrides)
    ingest(root=corpus_root, settings=settings, workers=1, progress=False)
    index_corpus(settings=settings, model=model, workers=0, progress=False)
    return settings


def other_tiny_checkpoint(path: Path, *, seed: int = 7) -> Path:
    """A checkpoint of the tiny architecture with other random weights: a second, different model."""
    model = build_model(ARCHS["tiny"], seed=seed)
    torch.save({"state_dict": model.state_dict(), "model_arch": "tiny"}, path)
    return path


def built_copy(built: Settings, home: Path, **overrides) -> Settings:
    """Settings of a copy at ``home`` of the built home ``built`` (the session's ``built_settings``),
    for a test that changes it: the same as ``build_home(home, corpus)`` without building again."""
    return make_settings(copy_home(built.home, home), **overrides)


def read(path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def expected_top(settings: Settings, vector: np.ndarray, candidates: str, k: int) -> list[str]:
    """Brute-force top-k ids for ``vector`` against the live generation's stored vectors."""
    loaded = load_current(settings.index_dir)
    vs = loaded.sets[candidates]
    scores = vs.vectors @ vector.reshape(-1)
    return [vs.ids[i] for i in np.argsort(-scores, kind="stable")[:k]]


def assert_exact_top(settings: Settings, vector: np.ndarray, candidates: str, got: list[str]) -> None:
    """``got`` is the brute-force top ``len(got)`` for an image ``vector``, up to swaps of near-ties.

    Why not ``== expected_top``: on a CPU with native bf16 the server encodes images in bf16 on its
    backend (OpenVINO) and the test in bf16 on PyTorch; the two differ by ~1e-3 in cosine, so two
    candidates that close may trade places. Each rank's exact score must still be the exact
    ranking's score at that rank (within the tolerance), and the ids distinct: nothing else passes.
    """
    vs = load_current(settings.index_dir).sets[candidates]
    scores = vs.vectors @ vector.reshape(-1)
    by_id = dict(zip(vs.ids, scores.tolist(), strict=True))
    best = np.sort(scores)[::-1][: len(got)]
    tol = 2e-2 if cpu_supports_bf16() else 1e-5
    assert len(set(got)) == len(got)
    for rank, (item, exact) in enumerate(zip(got, best, strict=True)):
        assert abs(by_id[item] - exact) <= tol, (
            rank,
            item,
            by_id[item],
            exact,
            expected_top(settings, vector, candidates, len(got)),
        )


def encoder_for(spec: str, *, precision: str = "auto") -> Encoder:
    return Encoder(create_model_and_transforms(spec, device="cpu"), precision=precision)


def image_vector(encoder: Encoder, data: bytes) -> np.ndarray:
    res = encoder.loaded.arch.resolution
    return encoder.encode_pil([open_image(data, draft_size=(res, res))])[0]


def image_bytes(mode: str = "RGB", size: tuple[int, int] = (48, 48), fmt: str = "PNG", **save) -> bytes:
    """A small generated image in ``mode`` and ``fmt`` (a gradient, so it is not blank)."""
    xs, ys = np.meshgrid(np.linspace(0, 255, size[0]), np.linspace(0, 255, size[1]))
    rgb = Image.fromarray(np.stack([xs, ys, np.full_like(xs, 90.0)], axis=-1).astype("uint8"), "RGB")
    img = rgb.convert(mode) if mode != "P" else rgb.convert("P", palette=Image.Palette.ADAPTIVE)
    buf = io.BytesIO()
    img.save(buf, fmt, **save)
    return buf.getvalue()


def test_image_bytes_helper_makes_decodable_images():
    for mode, fmt in [("RGB", "JPEG"), ("CMYK", "JPEG"), ("RGBA", "PNG"), ("P", "PNG"), ("L", "PNG")]:
        with Image.open(io.BytesIO(image_bytes(mode, fmt=fmt))) as img:
            assert (img.format, img.mode, img.size) == (fmt, mode, (48, 48))


# --- A user corpus ("shop"): items with images, captions, times and typed attributes -----------

SHOP_CATEGORIES = ("连衣裙", "牛仔裤", "衬衫", "外套")
SHOP_COLOURS = {"红色": (200, 30, 30), "蓝色": (30, 60, 200), "白色": (235, 235, 235), "黑色": (20, 20, 20)}


def write_shop(folder: Path, *, n: int = 40, seed: int = 3) -> Path:
    """``shop.csv`` and its images in ``folder``: id, image, caption, time, category, price, brand."""
    import random

    rng = random.Random(seed)
    (folder / "photos").mkdir(parents=True, exist_ok=True)
    lines = ["id,image,caption,time,category,price,brand"]
    for i in range(n):
        colour, rgb = rng.choice(list(SHOP_COLOURS.items()))
        category = SHOP_CATEGORIES[i % len(SHOP_CATEGORIES)]
        img = Image.new("RGB", (40, 40), rgb)
        img.paste(tuple(rng.randrange(256) for _ in range(3)), (rng.randrange(20), rng.randrange(20), 30, 30))
        img.save(folder / "photos" / f"s{i}.jpg")
        day = f"2024-{1 + i % 12:02d}-{1 + i % 27:02d}"
        price = f"{50 + (i * 37) % 400}.5"
        lines.append(f"s{i},s{i}.jpg,{colour}{category} 款{i},{day},{category},{price},{'ab'[i % 2]}")
    (folder / "shop.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder / "shop.csv"


def add_shop(
    settings: Settings, folder: Path, *, name: str = "shop", n: int = 40, encode: bool = True
) -> None:
    """Add the shop corpus to ``settings``'s store and (by default) encode it with tiny."""
    from indexer.corpus.add import add_corpus
    from indexer.corpus.encode import encode_corpus

    csv = write_shop(folder, n=n)
    add_corpus(settings=settings, name=name, file=csv, images=folder / "photos", workers=1, progress=False)
    if encode:
        encode_corpus(settings=settings, name=name, model="tiny", workers=0, progress=False)
