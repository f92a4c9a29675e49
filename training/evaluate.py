"""``tuwen eval``: recall of a model on the held-out pairs, and cn_clip-format prediction files.

The split is rebuilt from the run's ``config.json`` (seed, val fraction), so ``tuwen eval`` on a
run's checkpoint scores exactly the images the run held out.

cn_clip's scorers (``cn_clip/eval/evaluation.py``, ``evaluation_tr.py``) require integer ids, so the
files use: ``text_id`` = position of the pair among the store's readable training pairs (CSV order),
``image_id`` = position of the image among the split's distinct images (first appearance).
``id_map.json`` beside them maps both back to the competition's ids.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import TuwenError
from common.runs import read_run_config
from common.runtime import decode_workers
from common.settings import Settings
from models.encoder import open_encoder
from models.factory import LoadedModel, create_model_and_transforms
from training.data import Pair, load_pairs, pairs_fingerprint, select_split
from training.metrics import TOP_K, Rankings, metrics, rank

log = logging.getLogger(__name__)
DEFAULT_VAL_FRACTION, DEFAULT_SEED = 0.1, 0


@dataclass
class SplitFeatures:
    pairs: list[Pair]
    image_ids: list[str]  # distinct images of the split, first appearance order
    text_image: list[int]  # per pair: index of its image in image_ids
    text_features: np.ndarray
    image_features: np.ndarray


def encode_split(
    loaded: LoadedModel,
    pairs: Sequence[Pair],
    *,
    precision: str,
    batch_size: int = 64,
    workers: int = 2,
    backend: str = "torch",
    cache_dir: Path | None = None,
) -> SplitFeatures:
    """Features of the split's captions and distinct images (the model is left in eval mode)."""
    first: dict[str, str] = {}
    for p in pairs:
        first.setdefault(p.image_id, p.path)
    image_ids = list(first)
    position = {image_id: i for i, image_id in enumerate(image_ids)}
    encoder = open_encoder(loaded, precision=precision, backend=backend, cache_dir=cache_dir, bulk=True)
    texts = encoder.encode_texts([p.caption for p in pairs], batch_size=batch_size)
    images, _errors = encoder.encode_image_files(list(first.values()), batch_size=batch_size, workers=workers)
    return SplitFeatures(list(pairs), image_ids, [position[p.image_id] for p in pairs], texts, images)


def score(features: SplitFeatures) -> tuple[dict, Rankings]:
    rankings = rank(features.text_features, features.image_features, features.text_image, k=TOP_K)
    return metrics(rankings), rankings


def write_predictions(out: Path, features: SplitFeatures, rankings: Rankings) -> list[Path]:
    """cn_clip-format jsonl files: ground truth and top-10 predictions for both directions."""
    out.mkdir(parents=True, exist_ok=True)
    text_ids = [p.index for p in features.pairs]
    rows = {
        "t2i_ground_truth.jsonl": [
            {"text_id": text_ids[t], "text": p.caption, "image_ids": [features.text_image[t]]}
            for t, p in enumerate(features.pairs)
        ],
        "t2i_predictions.jsonl": [
            {"text_id": text_ids[t], "image_ids": [int(i) for i in top]} for t, top in enumerate(rankings.t2i)
        ],
        "i2t_ground_truth.jsonl": [
            {"image_id": i, "text_ids": [text_ids[t] for t in sorted(gold)]}
            for i, gold in enumerate(rankings.image_gold)
        ],
        "i2t_predictions.jsonl": [
            {"image_id": i, "text_ids": [text_ids[int(t)] for t in top]} for i, top in enumerate(rankings.i2t)
        ],
    }
    paths = []
    for name, lines in rows.items():
        path = out / name
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines), encoding="utf-8")
        paths.append(path)
    id_map = {
        "text_ids": {str(p.index): {"image_id": p.image_id, "caption": p.caption} for p in features.pairs},
        "image_ids": {str(i): image_id for i, image_id in enumerate(features.image_ids)},
    }
    path = out / "id_map.json"
    path.write_text(json.dumps(id_map, ensure_ascii=False, indent=1), encoding="utf-8")
    paths.append(path)
    if len(features.image_ids) < TOP_K or len(features.pairs) < TOP_K:
        log.warning(
            "fewer than %d candidates: cn_clip's scorers require exactly %d predictions", TOP_K, TOP_K
        )
    return paths


def resolve_split(
    settings: Settings, model: str, *, split: str, val_fraction: float | None, seed: int | None
) -> tuple[list[Pair], dict]:
    """The pairs of ``split`` as the run of ``model`` drew them (its config.json's seed and val
    fraction unless given), and ``{"val_fraction", "seed", "pairs"}`` (every readable pair)."""
    config = read_run_config(model)
    val_fraction = (
        val_fraction if val_fraction is not None else config.get("val_fraction", DEFAULT_VAL_FRACTION)
    )
    seed = seed if seed is not None else config.get("seed", DEFAULT_SEED)
    pairs = load_pairs(settings)
    if config.get("pairs_fingerprint") and config["pairs_fingerprint"] != pairs_fingerprint(pairs):
        log.warning("the store's training pairs changed since this run: the held-out split is not the same")
    chosen = select_split(pairs, split=split, val_fraction=val_fraction, seed=seed)
    if not chosen:
        raise TuwenError(f"the {split!r} split is empty (val fraction {val_fraction}): nothing to evaluate")
    return chosen, {"val_fraction": val_fraction, "seed": seed, "pairs": pairs}


def encode_with(
    settings: Settings,
    model: str,
    pairs: Sequence[Pair],
    *,
    precision: str = "auto",
    batch_size: int = 64,
    workers: int | None = None,
) -> SplitFeatures:
    """``encode_split`` with ``model`` loaded from its spec (the one place eval builds a model)."""
    loaded = create_model_and_transforms(model, device=settings.device, weights_dir=settings.weights_dir)
    return encode_split(
        loaded,
        pairs,
        precision=precision,
        batch_size=batch_size,
        workers=decode_workers(workers),
        backend=settings.backend,
        cache_dir=settings.converted_dir,
    )


def evaluate(
    *,
    settings: Settings,
    model: str,
    split: str = "val",
    predictions_out: str | Path | None = None,
    val_fraction: float | None = None,
    seed: int | None = None,
    precision: str = "auto",
    batch_size: int = 64,
    workers: int | None = None,
) -> dict:
    """``{"t2i": {"r1","r5","r10","mr"}, "i2t": {...}}`` in percent, on the run's held-out split."""
    chosen, _ = resolve_split(settings, model, split=split, val_fraction=val_fraction, seed=seed)
    features = encode_with(
        settings, model, chosen, precision=precision, batch_size=batch_size, workers=workers
    )
    result, rankings = score(features)
    if predictions_out is not None:
        write_predictions(Path(predictions_out), features, rankings)
    return result
