"""``analyze classify``: single modalities against early/late/attention fusion with stratified k-fold,
the majority baseline in the same table, missing modalities and clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from analysis.classify import KIND_ORDER, class_labels, late_weight, pool, run_classify
from analysis.data import CorpusData
from analysis.options import ClassifyOptions
from common.errors import TuwenError


def quiet(_: str) -> None:
    pass


def classify(data: CorpusData, *, out, say=quiet, **options) -> dict:
    """``run_classify`` with the options as keywords, the networks' grid cut to one point unless given
    (tests/test_analysis_supervised.py runs the whole grid)."""
    options = {"widths": (16,), "weight_decays": (1e-3,), **options}
    return run_classify(data, ClassifyOptions(**options), out=out, say=say)


def accuracy(row: dict) -> float:
    """The mean of a table row's test accuracy ("0.912 ± 0.010")."""
    return float(row["accuracy"].split(" ± ")[0])


def synthetic(*, n: int = 120, dim: int = 6, seed: int = 0, images: bool = True) -> CorpusData:
    """Three classes: the image vectors show the class, the text vectors are noise, captions name it."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    image = rng.normal(size=(n, dim)).astype(np.float32)
    image[:, 0] += 4 * (y == 1)
    image[:, 1] += 4 * (y == 2)
    text = rng.normal(size=(n, dim)).astype(np.float32)
    names = ["红色", "蓝色", "绿色"]
    return CorpusData(
        name="synthetic",
        ids=[str(i) for i in range(n)],
        captions=[f"一件{names[k]}衣服" if i % 4 else "一件衣服" for i, k in enumerate(y)],
        image_paths=[None] * n,
        times=[None] * n,
        attributes={
            "colour": [names[k] for k in y],
            "rare": ["x"] * (n - 3) + ["y"] * 3,
            "same": [1] * n,
            "partial": [None if i % 5 == 0 else names[k] for i, k in enumerate(y)],
        },
        image_vectors=image if images else None,
        image_mask=np.ones(n, bool) if images else None,
        text_vectors=text,
        text_mask=np.ones(n, bool),
        model_id="synthetic",
    )


def test_pool_weights_the_modalities():
    p_image = np.array([[0.9, 0.1], [0.2, 0.8]])
    p_text = np.array([[0.3, 0.7], [0.6, 0.4]])
    np.testing.assert_allclose(pool(p_image, p_text, 1.0), p_image, atol=1e-6)
    np.testing.assert_allclose(pool(p_image, p_text, 0.0), p_text, atol=1e-6)
    half = pool(p_image, p_text, 0.5)
    np.testing.assert_allclose(half.sum(axis=1), 1.0)
    # Geometric mean: sqrt(.9*.3) vs sqrt(.1*.7), renormalised.
    assert half[0, 0] == pytest.approx(np.sqrt(0.27) / (np.sqrt(0.27) + np.sqrt(0.07)))


def test_late_weight_trusts_the_informative_modality():
    rng = np.random.default_rng(0)
    y = np.arange(150) % 3
    sure = np.full((150, 3), 0.1)
    sure[np.arange(150), y] = 0.8  # knows the class
    sure[::7] = sure[::7][:, ::-1]  # …mostly
    unsure = rng.dirichlet(np.ones(3), size=150)  # knows nothing
    assert late_weight(sure, unsure, y) >= 0.7
    assert late_weight(unsure, sure, y) <= 0.3


def test_multiclass_report_with_baseline_first(tmp_path):
    data = synthetic()
    result = classify(data, label="colour", out=tmp_path / "r", folds=3, fusion=("early", "late"))
    rows = {(r["features"], r["model"]): r for r in result["table"]}
    assert result["table"][0]["model"] == "majority class"
    assert [r["kind"] for r in result["table"]] == sorted(
        (r["kind"] for r in result["table"]), key=KIND_ORDER.get
    )
    for model in ("logistic regression", "gradient boosting", "mlp"):
        # trees on 80 training rows (leaves of 20) are the weakest; labelled_corpus tests them at 300
        assert accuracy(rows[("image", model)]) >= (0.6 if model == "gradient boosting" else 0.85), model
        assert accuracy(rows[("text (clip)", model)]) <= 0.55, model
        assert "train accuracy" in rows[("image", model)]
    assert accuracy(rows[("—", "majority class")]) == pytest.approx(1 / 3, abs=0.01)
    pair = "image + text (clip)"
    assert {(pair, "early fusion (mlp)"), (pair, "late fusion"), (pair, "logistic regression")} <= set(rows)
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["classes"] == ["红色", "绿色", "蓝色"]
    assert len(report["results"][0]["runs"]) == 3
    assert report["verdict"]["above_chance"] and report["verdict"]["best_baseline"]
    assert "lie above chance" in report["verdict"]["sentences"][0]
    for name in ("results.csv", "results.md", "confusion_matrix.png", "index.html"):
        assert (tmp_path / "r" / name).stat().st_size > 0


def test_missing_labels_are_left_out():
    labels = class_labels(synthetic(), label="partial", folds=3)
    assert len(labels.rows) == 120 - 24 and 0 not in labels.rows


def test_text_only_corpus_marks_image_and_fusion_unavailable(tmp_path):
    data = synthetic(images=False)
    result = classify(
        data, label="colour", out=tmp_path / "r", folds=3, fusion=("early", "late", "attention")
    )
    rows = {(r["features"], r["model"]): r for r in result["table"]}
    for model in ("logistic regression", "gradient boosting", "mlp"):
        assert rows[("image", model)]["accuracy"] == "unavailable: the corpus has no image embeddings"
    for fusion in ("early fusion (mlp)", "late fusion", "attention fusion"):
        assert rows[("image + text (clip)", fusion)]["macro_f1"].startswith("unavailable")
    assert accuracy(rows[("text (tfidf)", "logistic regression")]) >= 0.6  # three captions in four name it


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"label": "nope"}, "unknown field --label 'nope'"),
        ({"label": "same"}, "single class"),
        ({"label": "rare"}, "fewer items than --folds 5.*'y': 3"),
        ({"fusion": ("early", "sideways")}, "--fusion: unknown sideways"),
        ({"text": "bert"}, "--text must be one of"),
        ({"folds": 1}, "--folds must be at least 2"),
    ],
)
def test_bad_parameters_name_what_is_wrong(tmp_path, overrides, message):
    kwargs = {"label": "colour", "out": tmp_path / "r", "folds": 5}
    with pytest.raises(TuwenError, match=message):
        classify(synthetic(), **{**kwargs, **overrides})


def demo_fusion_data(n: int = 800) -> CorpusData:
    """The demo fusion corpus (``tuwen.demo.series``), drawn and encoded by the ``tiny`` model."""
    import random

    from models.encoder import Encoder
    from models.factory import create_model_and_transforms
    from tuwen.demo.corpus import draw_item
    from tuwen.demo.series import fusion_rows

    rows = fusion_rows(seed=0, n=n)
    encoder = Encoder(create_model_and_transforms("tiny", device="cpu"), precision="fp32")
    rng = random.Random(1)
    pictures = [draw_item(r["_item"], rng, 64) for r in rows]
    return CorpusData(
        name="demo-fusion",
        ids=[r["id"] for r in rows],
        captions=[r["caption"] for r in rows],
        image_paths=[None] * n,
        times=[None] * n,
        attributes={"bestseller": [r["bestseller"] for r in rows], "garment": [r["garment"] for r in rows]},
        image_vectors=np.concatenate([encoder.encode_pil(pictures[i : i + 64]) for i in range(0, n, 64)]),
        image_mask=np.ones(n, bool),
        text_vectors=encoder.encode_texts([r["caption"] for r in rows]),
        text_mask=np.ones(n, bool),
        model_id="tiny",
    )


@pytest.mark.slow
def test_planted_fusion_beats_either_modality(tmp_path, one_thread):
    """``bestseller`` needs the garment (image only) where the caption has no word: both fusions must
    beat the better single modality by 0.05 accuracy, and no caption names the garment."""
    data = demo_fusion_data()
    assert not any(g in c for c in data.captions for g in ("连衣裙", "半身裙", "帽子", "衬衫", "T恤", "裤子"))
    options = ClassifyOptions(label="bestseller", fusion=("early", "late"))  # the whole grid
    result = run_classify(data, options, out=tmp_path / "r", say=quiet)
    acc = {o.name: o.summary("accuracy")[0] for o in result["outcomes"]}
    single = max(acc["mlp on image"], acc["mlp on text (clip)"], acc["mlp on text (tfidf)"])
    assert acc["majority class"] <= 0.55 and single <= 0.80
    assert acc["early fusion (mlp) on image + text (clip)"] >= single + 0.05, result["table"]
    assert acc["late fusion on image + text (clip)"] >= single + 0.05, result["table"]
    assert result["verdict"].sentences[2].startswith("The best fusion beats the better single modality")
