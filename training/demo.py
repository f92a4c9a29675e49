"""Training ``tiny`` from scratch on the demo corpus (``tuwen demo``), with settings tuned to reach
text→image R@5 ≥ 0.9 on the demo's held-out queries in a few CPU minutes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from indexer import store
from models.encoder import Encoder
from models.factory import create_model_and_transforms
from training.metrics import topk
from training.train import TrainResult, train
from tuwen.settings import Settings

# Measured by bench/bench_train.py on the default demo corpus (1500 pairs); see its table.
DEMO_SETTINGS = {"epochs": 25, "batch_size": 64, "lr": 2e-3, "warmup": 50, "val_fraction": 0.1, "seed": 0}


def train_demo(
    *, settings: Settings, out: str | Path, epochs: int | None = None, progress: bool = True, echo=None
) -> TrainResult:
    kwargs = {**DEMO_SETTINGS, **({"epochs": epochs} if epochs else {})}
    return train(settings=settings, model="tiny", out=out, progress=progress, echo=echo, **kwargs)


def train_demo_model(*, settings: Settings, out: str | Path, epochs: int | None = None) -> Path:
    """The path of ``best.pt`` of ``tiny`` trained on the ingested demo corpus."""
    return train_demo(settings=settings, out=out, epochs=epochs).best_path


def demo_query_recall(
    *, settings: Settings, model: str, data_root: str | Path, k: int = 5
) -> dict[str, float]:
    """R@k (0-1) of the demo's query texts against candidate images and of its query images against
    candidate texts, judged by ``ground_truth.json`` (same garment, colour and pattern)."""
    truth = json.loads((Path(data_root) / "ground_truth.json").read_text(encoding="utf-8"))
    engine = store.make_engine(settings.store_url)
    try:
        with store.transaction(engine) as session:
            cand_images = [
                r for r in store.list_images(session, collection=store.IMAGE_CANDIDATES) if r.status == "ok"
            ]
            query_images = [
                r for r in store.list_images(session, collection=store.IMAGE_QUERIES) if r.status == "ok"
            ]
            cand_texts = store.list_texts(session, collection=store.TEXT_CANDIDATES)
            query_texts = store.list_texts(session, collection=store.TEXT_QUERIES)
    finally:
        engine.dispose()
    encoder = Encoder(create_model_and_transforms(model, device=settings.device))
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
