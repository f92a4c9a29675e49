"""The mask modality (issue 20), analysis side: a corpus whose generation has a third set "masks"
(the embedding of each image with its background blanked) and each mask's share of the frame.
``clusters --modality mask``, ``trend --features mask``, ``classify`` (mask as a feature set) and
``--min-mask-area`` on all three; without masks nothing changes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from analysis_corpora import labelled_corpus, planted_corpus
from sklearn.metrics import adjusted_rand_score

from analysis.classify import run_classify
from analysis.clusters import cluster_corpus
from analysis.data import CorpusData, drop_small_masks
from analysis.options import ClassifyOptions, ClusterOptions, TrendOptions
from analysis.trend import run_trend
from common.errors import TuwenError

FAST = {"widths": (16,), "weight_decays": (1e-3,), "epochs": 30}


def quiet(_: str) -> None:
    pass


def with_masks(data: CorpusData, *, seed: int = 0, noise: float = 0.2) -> CorpusData:
    """``data`` plus mask embeddings (its image vectors, less noisy: the background is gone) and
    areas spread over 0–30 % of the frame, one item in six under 5 %."""
    rng = np.random.default_rng(seed)
    n = len(data)
    masks = data.image_vectors + noise * rng.normal(size=data.image_vectors.shape) / np.sqrt(
        data.image_vectors.shape[1]
    )
    data.mask_vectors = (masks / np.linalg.norm(masks, axis=1, keepdims=True)).astype(np.float32)
    data.mask_mask = np.ones(n, dtype=bool)
    data.mask_area = np.where(np.arange(n) % 6 == 0, 0.02, rng.uniform(0.05, 0.3, size=n))
    data.mask_area[1] = np.nan  # unknown: kept
    return data


def test_min_mask_area_drops_the_small_masks_and_says_how_many():
    data = with_masks(planted_corpus(n=60)[0])
    kept, note = drop_small_masks(data, 0.05)
    assert len(kept) == 50 and "10 of 60 items were dropped" in note
    assert kept.mask_vectors.shape == (50, 32) and len(kept.captions) == 50 and kept.ids[0] == data.ids[1]
    assert drop_small_masks(data, None) == (data, "")
    with pytest.raises(TuwenError, match="--min-mask-area: corpus planted has no mask areas"):
        drop_small_masks(planted_corpus(n=30)[0], 0.05)


def test_clusters_of_the_masks():
    data, garments = planted_corpus(n=240)
    data = with_masks(data)
    options = ClusterOptions(modality="mask", reduce="none", k="6", min_mask_area=0.05)
    result = cluster_corpus(data, options=options)
    assert len(result.rows) == 200 and any("40 of 240 items were dropped" in n for n in result.notes)
    assert adjusted_rand_score(garments[result.rows], result.labels) >= 0.6
    with pytest.raises(TuwenError, match="--modality mask: corpus planted has no mask embeddings"):
        cluster_corpus(planted_corpus(n=60)[0], options=ClusterOptions(modality="mask", reduce="none", k="3"))


def test_trend_on_mask_features(tmp_path):
    data, _ = planted_corpus(n=360)
    data = with_masks(data)
    data.times = [i // 3 for i in range(360)]  # 120 days
    data.attributes["hot"] = [int(i // 3 % 2) for i in range(360)]
    options = TrendOptions(
        label="hot", window=4, features=("mask", "image"), models=("lstm",), seeds=1, **FAST
    )
    result = run_trend(
        data, TrendOptions(**{**options.__dict__, "min_mask_area": 0.05}), out=tmp_path, say=quiet
    )
    rows = {(r.features, r.model): r for r in result["results"]}
    assert not rows[("mask", "lstm")].unavailable and rows[("mask", "logistic regression (window)")].test
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["settings"]["min_mask_area"] == 0.05
    assert "60 of 360 items were dropped" in (tmp_path / "index.html").read_text()


def test_classify_with_and_without_masks(tmp_path):
    data = labelled_corpus(n=180)
    plain = run_classify(
        data,
        ClassifyOptions(label="bright", folds=3, fusion=("late",), **FAST),
        out=tmp_path / "p",
        say=quiet,
    )
    assert not any(r.features == "mask" for r in plain["outcomes"])  # no mask column: nothing changes
    data = with_masks(data)
    options = ClassifyOptions(label="bright", folds=3, fusion=("late",), min_mask_area=0.05, **FAST)
    result = run_classify(data, options, out=tmp_path / "m", say=quiet)
    rows = {(r.features, r.model): r for r in result["outcomes"]}
    for model in ("logistic regression", "gradient boosting", "mlp"):
        assert rows[("mask", model)].summary("accuracy")[0] >= 0.8, result["table"]
    assert "30 of 180 items were dropped" in (tmp_path / "m" / "index.html").read_text()
