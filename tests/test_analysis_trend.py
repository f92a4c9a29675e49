"""``analyze trend``: periods, the leak-free chronological split, baselines beside the sequence models,
the planted demo trend, missing modalities and clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.data import CorpusData
from analysis.options import TrendOptions
from analysis.trend import (
    build_series,
    chronological_split,
    period_of,
    run_trend,
    window_inputs,
)
from common.errors import TuwenError
from tuwen.cli import main


def trend(data: CorpusData, *, out, say=lambda _: None, **options) -> dict:
    """``run_trend`` with the options as keywords."""
    return run_trend(data, TrendOptions(**options), out=out, say=say)


def synthetic(
    *, periods: int = 60, per: int = 4, dim: int = 8, seed: int = 0, images: bool = True, texts: bool = True
) -> CorpusData:
    """Items over integer days; the label of a day is random (nothing to predict)."""
    rng = np.random.default_rng(seed)
    n = periods * per
    times = [p for p in range(periods) for _ in range(per)]
    day_label = rng.integers(0, 2, periods)

    def vectors(present: bool):
        if not present:
            return None, None
        v = rng.normal(size=(n, dim)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True), np.ones(n, bool)

    image, image_mask = vectors(images)
    text, text_mask = vectors(texts)
    return CorpusData(
        name="synthetic",
        ids=[str(i) for i in range(n)],
        captions=[f"第{t}天 {'红色' if t % 2 else '蓝色'}连衣裙" for t in times],
        image_paths=[None] * n,
        times=times,
        attributes={
            "hot": [int(day_label[t]) for t in times],
            "likes": [float(day_label[t] * 100 + i % 3) for i, t in enumerate(times)],
            "tag": ["a"] * n,
            "always": [1] * n,
        },
        image_vectors=image,
        image_mask=image_mask,
        text_vectors=text,
        text_mask=text_mask,
        model_id="synthetic",
    )


def test_periods_of_dates_and_integers():
    assert period_of("2024-05-03", period="day") == (
        period_of("2024-05-03T23:59:00", period="auto")[0],
        "2024-05-03",
    )
    assert period_of("2024-05-03", period="week")[1] == "2024-W18"
    assert period_of("2024-05-31", period="month") == period_of("2024-05-01T08:00:00Z", period="month")
    assert period_of(17, period="auto") == (17, "17")
    assert period_of(15, period="week") == (2, "week 2")
    with pytest.raises(TuwenError, match="--period month needs dates"):
        period_of(17, period="month")
    with pytest.raises(TuwenError, match="neither an ISO date"):
        period_of("yesterday", period="day")


def test_series_rules_and_threshold():
    data = CorpusData(
        name="s",
        ids=list("abcdef"),
        captions=[None] * 6,
        image_paths=[None] * 6,
        times=["2024-01-01", "2024-01-01", "2024-01-01", "2024-01-02", "2024-01-02", None],
        attributes={"x": [1, 0, 0, 1, None, 1], "score": [0.9, 0.1, 0.2, 0.7, 0.8, 0.1]},
    )
    any_rule = build_series(data, label="x", rule="any")
    assert any_rule.keys == ["2024-01-01", "2024-01-02"]
    assert any_rule.labels.tolist() == [1, 1]
    np.testing.assert_allclose(any_rule.shares, [1 / 3, 1.0])  # the missing value is not counted
    assert build_series(data, label="x", rule="majority").labels.tolist() == [0, 1]
    assert "1 items without a time" in any_rule.notes[0]
    assert build_series(data, label="score", threshold=0.5).labels.tolist() == [0, 1]


@settings(max_examples=200, deadline=None)
@given(
    n_periods=st.integers(min_value=2, max_value=400),
    window=st.integers(min_value=2, max_value=40),
    test_fraction=st.floats(min_value=0.01, max_value=0.99),
)
def test_chronological_split_never_leaks(n_periods, window, test_fraction):
    try:
        train_t, test_t = chronological_split(n_periods=n_periods, window=window, test_fraction=test_fraction)
    except TuwenError:
        return  # too short for this window: refused, never a leaking split
    train_periods = {int(p) for t in train_t for p in range(t - window + 1, t + 1)}
    test_periods = {int(p) for t in test_t for p in range(t - window + 1, t + 1)}
    assert not train_periods & test_periods
    assert max(train_periods) < min(test_periods)
    assert min(train_periods) >= 0 and max(test_periods) == n_periods - 1
    assert len(train_t) >= 2 and len(test_t) >= 2
    # The windows the models see are exactly those periods.
    x = np.arange(n_periods, dtype=float)[:, None]
    inputs = window_inputs(x, test_t, window=window)[:, :, 0]
    assert inputs.min() >= min(test_periods) and (inputs < test_t[:, None]).all()


def test_bad_parameters_name_what_is_wrong(tmp_path):
    data = synthetic(periods=30)
    cases = [
        (dict(window=31), "longer than the series: it has 30 periods"),
        (dict(label="always"), "one class"),
        (dict(label="nope"), "unknown field --label 'nope'.*hot"),
        (dict(label="likes"), "numeric with values other than 0/1.*--threshold"),
        (dict(label="tag"), "holds text"),
        (dict(features=("image", "sound")), "--features: unknown sound"),
        (dict(models=("gru",)), "--models: unknown gru"),
        (dict(test_fraction=1.5), "--test-fraction"),
        (dict(window=1), "--window must be at least 2"),
        (
            dict(
                data=CorpusData(
                    name="x",
                    ids=["a"],
                    captions=[None],
                    image_paths=[None],
                    times=[None],
                    attributes={"hot": [1]},
                )
            ),
            "no item with a time",
        ),
    ]
    for overrides, message in cases:
        kwargs = dict(data=data, label="hot", out=tmp_path / "r", window=5, seeds=1, epochs=2)
        with pytest.raises(TuwenError, match=message):
            trend(**{**kwargs, **overrides})


def test_threshold_turns_a_numeric_field_into_labels(tmp_path):
    data = synthetic(periods=40)  # likes = 100 * hot + (0, 1 or 2)
    common = dict(data=data, window=5, features=("image",), models=("lstm",), seeds=1, epochs=3)
    by_likes = trend(label="likes", threshold=50, out=tmp_path / "likes", **common)
    by_hot = trend(label="hot", out=tmp_path / "hot", **common)
    assert by_likes["table"] == by_hot["table"]
    with pytest.raises(TuwenError, match="one class"):  # nobody has more than 102 likes
        trend(label="likes", threshold=150, out=tmp_path / "high", **common)


def test_text_only_corpus_marks_the_image_rows_unavailable(tmp_path):
    data = synthetic(periods=40, images=False)
    result = trend(data, label="hot", out=tmp_path / "r", window=5, seeds=2, epochs=5)
    rows = {(r["features"], r["model"]): r for r in result["table"]}
    for features in ("image", "both"):
        for model in ("lstm", "transformer"):
            assert rows[(features, model)]["accuracy"].startswith("unavailable")
    assert "±" in rows[("text", "lstm")]["accuracy"] and "±" in rows[("tfidf", "transformer")]["f1"]
    assert rows[("text", "lstm")]["runs"] == "2"
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["unavailable"] == {
        "image": "the corpus has no image embeddings",
        "both": "needs both image and caption embeddings",
    }
    for name in ("results.csv", "results.md", "test_period.png", "index.html"):
        assert (tmp_path / "r" / name).stat().st_size > 0
    # Baselines come first, in their fixed order.
    assert [r["model"] for r in result["table"][:2]] == ["majority class", "same as last period"]


def test_tfidf_is_fitted_on_training_periods_only():
    from analysis.trend import feature_sets

    data = synthetic(periods=40, images=False, texts=False)
    series = build_series(data, label="hot")
    before, missing = feature_sets(data, series, wanted=["tfidf", "text"], n_train_periods=30)
    assert set(missing) == {"text"}
    # A word that appears only in the test periods must change nothing: it is not in the vocabulary.
    data.captions = [c if t < 30 else c + " 独有词" for c, t in zip(data.captions, data.times, strict=True)]
    after, _ = feature_sets(data, series, wanted=["tfidf"], n_train_periods=30)
    np.testing.assert_array_equal(before["tfidf"], after["tfidf"])
    # …whereas the same word in the training periods does.
    data.captions = [c + " 独有词" for c in data.captions]
    shifted, _ = feature_sets(data, series, wanted=["tfidf"], n_train_periods=30)
    assert shifted["tfidf"].shape[1] > before["tfidf"].shape[1]


def demo_series_data(*, days: int = 365, images: bool = False) -> CorpusData:
    """The demo trend series (``tuwen.demo.series``) with captions encoded by the ``tiny`` model."""
    import random

    from models.encoder import Encoder
    from models.factory import create_model_and_transforms
    from tuwen.demo.corpus import draw_item
    from tuwen.demo.series import trend_rows

    rows = trend_rows(seed=0, days=days)
    n = len(rows)
    encoder = Encoder(create_model_and_transforms("tiny", device="cpu"), precision="fp32")
    image_vectors = None
    if images:
        rng = random.Random(1)
        pictures = [draw_item(r["_item"], rng, 64) for r in rows]
        image_vectors = np.concatenate([encoder.encode_pil(pictures[i : i + 64]) for i in range(0, n, 64)])
    return CorpusData(
        name="demo-trend",
        ids=[r["id"] for r in rows],
        captions=[r["caption"] for r in rows],
        image_paths=[None] * n,
        times=[r["time"] for r in rows],
        attributes={"hot": [r["hot"] for r in rows], "likes": [r["likes"] for r in rows]},
        image_vectors=image_vectors,
        image_mask=np.ones(n, bool) if images else None,
        text_vectors=encoder.encode_texts([r["caption"] for r in rows]),
        text_mask=np.ones(n, bool),
        model_id="tiny",
    )


@pytest.mark.slow
def test_planted_trend_is_found_and_the_baselines_are_not_fooled(tmp_path, one_thread):
    """The demo's label follows the *rise* of the dress share over the previous days. The feature-free
    baselines must stay near chance (the label flips too often for "same as last period"); the rise is
    a linear function of the window, so the logistic regression on the whole window finds it as the
    LSTM does, and the verdict must name it as the strongest baseline."""
    data = demo_series_data()
    result = trend(
        data, label="hot", out=tmp_path / "r", features=("text", "tfidf"), models=("lstm",), seeds=3
    )
    rows = {(r.features, r.model): r for r in result["results"]}
    feature_free = max(
        rows[("—", m)].summary("accuracy")[0] for m in ("majority class", "same as last period")
    )
    assert feature_free <= 0.65
    best_model = max((r for r in result["results"] if not r.baseline), key=lambda r: r.summary("accuracy")[0])
    assert best_model.summary("accuracy")[0] >= feature_free + 0.10, result["table"]
    window_lr = max(
        rows[(f, "logistic regression (window)")].summary("accuracy")[0] for f in ("text", "tfidf")
    )
    assert window_lr >= feature_free + 0.10, result["table"]
    assert result["verdict"].best_baseline.startswith("logistic regression (window)")


@pytest.mark.slow
def test_cli_end_to_end_on_an_unseen_captions_only_corpus(tmp_path, capsys):
    """corpus add → corpus encode --model tiny → analyze trend / classify, exit 0, tables with every row."""
    rng = np.random.default_rng(7)
    lines = []
    for day in range(48):
        for k in range(3):
            sale = int(rng.random() < (0.8 if (day // 4) % 2 else 0.2))
            word = "打折" if sale else "原价"
            lines.append(
                json.dumps(
                    {
                        "id": f"p{day}-{k}",
                        "caption": f"第{day}天的{word}外套",
                        "day_no": day,
                        "time": day,
                        "sale": sale,
                    },
                    ensure_ascii=False,
                )
            )
    corpus = tmp_path / "posts.jsonl"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    home = ["--home", str(tmp_path / "home")]
    assert main(["corpus", "add", "unseen", str(corpus), *home]) == 0
    assert main(["corpus", "encode", "unseen", "--model", "tiny", *home]) == 0
    capsys.readouterr()
    trend_args = [
        "--label",
        "sale",
        "--window",
        "4",
        "--seeds",
        "2",
        "--epochs",
        "5",
        "--out",
        str(tmp_path / "t"),
    ]
    assert main(["analyze", "trend", "unseen", *trend_args, *home]) == 0
    trend_table = capsys.readouterr().out
    classify_args = ["--label", "sale", "--folds", "3", "--out", str(tmp_path / "c")]
    assert main(["analyze", "classify", "unseen", *classify_args, *home]) == 0
    classify_table = capsys.readouterr().out
    for row in ("majority class", "same as last period", "| text | lstm", "| tfidf | transformer"):
        assert row in trend_table
    assert "| tfidf | logistic regression (window) | baseline |" in trend_table
    assert trend_table.count("±") >= 4 * 6 and "| image | lstm | model | unavailable" in trend_table
    assert "| text (clip) | mlp | single |" in classify_table and classify_table.count("±") >= 3 * 2
    assert "| text (tfidf) | gradient boosting | baseline |" in classify_table
    assert "| image | mlp | single | unavailable" in classify_table
    for folder in ("t", "c"):
        assert json.loads((tmp_path / folder / "report.json").read_text())["corpus"] == "unseen"
    assert main(["analyze", "trend", "unseen", "--label", "nope", *home]) == 2
    assert "unknown field --label 'nope'" in capsys.readouterr().err
