"""The supervised toolkit alone (``analysis.supervised``), and checks of both supervised studies that
cannot be gamed: a label decided by caption words or by an image property must be found (>= 0.9 by
every row on those features), and a pure-noise label must leave every row, networks included, within
chance ± 2 spreads, with a verdict that says so."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from analysis_corpora import labelled_corpus, labelled_series

from analysis.classify import run_classify
from analysis.options import ClassifyOptions, SupervisedOptions, TrendOptions, parse_list
from analysis.supervised import (
    GatedFusion,
    LSTMNet,
    MLPNet,
    Row,
    TransformerNet,
    fit_network,
    judge,
    logistic_cv,
    predict_proba,
    spread,
    tune_network,
)
from analysis.trend import run_trend
from common.errors import TuwenError

FAST = SupervisedOptions(label="x", epochs=60, patience=5, widths=(8, 16), weight_decays=(1e-4, 1e-2))


def quiet(_: str) -> None:
    pass


def test_every_network_gives_one_logit_per_class():
    x, window = torch.zeros(5, 12), torch.zeros(5, 4, 12)
    assert MLPNet(12, 3, 8)(x).shape == (5, 3)
    assert LSTMNet(12, 2, 8)(window).shape == (5, 2)
    assert TransformerNet(12, 2, 8, steps=4)(window).shape == (5, 2)
    fusion = GatedFusion(12, 6, 4, 8)
    assert fusion(x, torch.zeros(5, 6)).shape == (5, 4) and fusion.gate.shape == (5,)


def separable(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(int)


def test_early_stopping_keeps_the_best_epoch_and_the_grid_chooses_by_validation():
    x, y = separable()
    fit, val = ((x[:150],), y[:150]), ((x[150:],), y[150:])
    fitted = fit_network(
        lambda w: MLPNet(6, 2, w), fit, val, width=8, weight_decay=1e-4, options=FAST, seed=0
    )
    assert 1 <= fitted.epochs <= FAST.epochs and fitted.val_prob.shape == (50, 2)
    assert (predict_proba(fitted.net, val[0]).argmax(1) == y[150:]).mean() >= 0.9
    tuned = tune_network(lambda w: MLPNet(6, 2, w), fit, val, options=FAST, seed=0)
    losses = [
        fit_network(
            lambda w: MLPNet(6, 2, w), fit, val, width=w, weight_decay=wd, options=FAST, seed=0
        ).val_loss
        for w in FAST.widths
        for wd in FAST.weight_decays
    ]
    assert tuned.val_loss == pytest.approx(min(losses))
    no_val = tune_network(lambda w: MLPNet(6, 2, w), fit, None, options=FAST, seed=0)
    assert no_val.epochs == FAST.epochs and no_val.val_prob is None  # nothing to stop or choose by


def test_logistic_regression_chooses_c_inside_the_training_rows():
    x, y = separable(300)
    splits = [(np.arange(100, 300), np.arange(100)), (np.arange(200), np.arange(200, 300))]
    model, c = logistic_cv(x, y, cs=(0.001, 10.0), splits=splits)
    assert c == 10.0 and model.score(x, y) >= 0.95  # a clean boundary wants little regularisation


def test_one_list_parser():
    assert parse_list(" a, b,,a ", allowed=("a", "b"), option="--x") == ("a", "b")
    assert parse_list(["b"], allowed=("a", "b"), option="--x") == ("b",)
    for bad, message in (("", "--x: unknown empty list"), ("a,c", "--x: unknown c")):
        with pytest.raises(TuwenError, match=message):
            parse_list(bad, allowed=("a", "b"), option="--x")


def test_the_verdict_is_one_type_and_names_the_strongest_baseline():
    rows = [
        Row("—", "majority class", "baseline", test=[{"accuracy": 0.5}] * 3),
        Row("a", "logistic regression", "baseline", test=[{"accuracy": 0.9}] * 3),
        Row("a", "mlp", "model", test=[{"accuracy": 0.8}, {"accuracy": 0.85}, {"accuracy": 0.9}]),
    ]
    verdict = judge(
        rows, metric="accuracy", chance=0.5, n_eval=100, spread_name="fold", model_kinds=("model",)
    )
    assert verdict.best_baseline == "logistic regression on a" and not verdict.model_beats_baseline
    assert verdict.above_chance == ("logistic regression on a", "mlp on a")
    assert "does NOT beat the best baseline" in str(verdict)


def within_chance(rows: list[Row], verdict) -> list[str]:
    """Rows whose test accuracy lies further than 2 spreads from chance (either side)."""
    return [
        f"{r.name}: {r.summary('accuracy')}"
        for r in rows
        if not r.unavailable
        and abs(r.summary("accuracy")[0] - verdict.chance) > 2 * spread(r, "accuracy", verdict.chance_spread)
    ]


@pytest.fixture(scope="module")
def corpus():
    return labelled_corpus(n=300)


def classify(corpus, label: str, tmp_path):
    options = ClassifyOptions(label=label, folds=3, fusion=("late",))
    return run_classify(corpus, options, out=tmp_path / label, say=quiet)


@pytest.mark.parametrize(("label", "features"), [("words", "text (tfidf)"), ("bright", "image")])
def test_classify_finds_a_label_decided_by_words_or_by_the_image(corpus, tmp_path, label, features):
    result = classify(corpus, label, tmp_path)
    rows = [r for r in result["outcomes"] if r.features == features]
    assert {r.model for r in rows} == {"logistic regression", "gradient boosting", "mlp"}
    for row in rows:
        assert row.summary("accuracy")[0] >= 0.9, result["table"]
    assert "lie above chance" in result["verdict"].sentences[0]


def test_classify_on_noise_stays_at_chance_and_says_so(corpus, tmp_path):
    result = classify(corpus, "noise", tmp_path)
    verdict = result["verdict"]
    assert within_chance(result["outcomes"], verdict) == [], result["table"]
    assert verdict.above_chance == () and str(verdict).startswith("No row beats chance")


def trend(label: str, tmp_path):
    options = TrendOptions(label=label, window=4, features=("tfidf", "text"), models=("lstm",), seeds=2)
    return run_trend(labelled_series(), options, out=tmp_path / label, say=quiet)


def test_trend_finds_a_label_decided_by_the_previous_periods_words(tmp_path):
    result = trend("next", tmp_path)
    rows = {(r.features, r.model): r for r in result["results"]}
    for key in (("tfidf", "logistic regression (window)"), ("tfidf", "lstm")):
        assert rows[key].summary("accuracy")[0] >= 0.9, result["table"]
    assert (
        rows[("—", "same as last period")].summary("accuracy")[0] <= 0.7
    )  # the label itself holds no memory


def test_trend_on_noise_stays_at_chance_and_says_so(tmp_path):
    result = trend("noise", tmp_path)
    verdict = result["verdict"]
    assert within_chance(result["results"], verdict) == [], result["table"]
    assert verdict.above_chance == () and str(verdict).startswith("No row beats chance")
