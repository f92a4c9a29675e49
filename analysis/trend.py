"""``tuwen analyze trend NAME --label FIELD``: will the label be positive in the next period?

Items are grouped into periods by ``time``; a period's features are the mean embedding of its
items per modality (or the mean jieba TF-IDF row of its captions), its label is whether the share
of items with a positive ``FIELD`` passes the ``--rule``. The previous ``window - 1`` periods'
features predict the last period's label. The split is chronological and strict: every training
window lies wholly in the first periods and every test window wholly in the last ones, so no
period is seen by both (the first ``window - 1`` test periods serve only as inputs).

Every sequence model (LSTM, Transformer) is trained with several seeds and reported as mean ±
standard deviation beside the baselines a careful analyst would run first: the training majority
class, "same as the last period", and per feature set a logistic regression on the whole window with
its C chosen by a time-ordered inner cross-validation. The networks are standardised, stopped early
and tuned (width, weight decay) on the last training windows only (``analysis.supervised``); the
table shows train beside test accuracy. The study this redoes reported accuracies near the
majority-class rate without saying so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from functools import partial
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from sklearn.decomposition import PCA
from sklearn.model_selection import TimeSeriesSplit
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits
from torch import nn

from analysis.data import CorpusData, drop_small_masks
from analysis.features import attribute_values, positive_flags, tfidf_features
from analysis.options import RULES, SEQUENCE_MODELS, TrendOptions, parse_list
from analysis.options import TREND_FEATURES as FEATURE_SETS
from analysis.options import TREND_PERIODS as PERIODS
from analysis.report import Report, use_cjk_font
from analysis.supervised import (
    LSTMNet,
    Row,
    TransformerNet,
    Verdict,
    best,
    class_proba,
    judge,
    logistic_cv,
    one_hot,
    predict_proba,
    score,
    tune_network,
)
from common.console import say as _say
from common.errors import TuwenError

METRICS = ("accuracy", "f1", "roc_auc")
LOGISTIC = "logistic regression (window)"


@dataclass
class Series:
    """One row per period with a label, in time order."""

    keys: list[str]  # a readable name per period ("2024-05-03", "2024-W18", "2024-05", "17")
    members: list[np.ndarray]  # item positions per period
    shares: np.ndarray  # share of labelled items with a positive field
    labels: np.ndarray  # 0/1 by the rule
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.keys)


def period_of(value: str | int | datetime | date, *, period: str) -> tuple[int, str]:
    """(sort key, name) of the period holding ``value`` (an integer, ISO string or datetime)."""
    if isinstance(value, bool):
        raise TuwenError(f"time {value!r} is neither a date nor an integer")
    if isinstance(value, int):
        if period in ("auto", "day"):
            return value, str(value)
        if period == "week":
            return value // 7, f"week {value // 7}"
        raise TuwenError("--period month needs dates, and this corpus's times are integers (use day or week)")
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise TuwenError(f"time {value!r} is neither an ISO date nor an integer") from None
    day = value.date() if isinstance(value, datetime) else value
    if period in ("auto", "day"):
        return day.toordinal(), day.isoformat()
    if period == "week":
        year, week, _ = day.isocalendar()
        return year * 100 + week, f"{year}-W{week:02d}"
    return day.year * 12 + day.month - 1, f"{day.year}-{day.month:02d}"


def build_series(
    data: CorpusData,
    *,
    label: str,
    period: str = "auto",
    threshold: float | None = None,
    rule: str = "majority",
) -> Series:
    """Group the items into periods and give each period its 0/1 label."""
    if period not in PERIODS:
        raise TuwenError(f"--period must be one of {', '.join(PERIODS)}, not {period!r}")
    if rule not in RULES:
        raise TuwenError(f"--rule must be one of {', '.join(RULES)}, not {rule!r}")
    flags = positive_flags(attribute_values(data.attributes, field=label), field=label, threshold=threshold)
    groups: dict[int, tuple[str, list[int]]] = {}
    untimed = 0
    for i, value in enumerate(data.times):
        if value is None:
            untimed += 1
            continue
        key, name = period_of(value, period=period)
        groups.setdefault(key, (name, []))[1].append(i)
    if not groups:
        raise TuwenError(f"corpus {data.name!r} has no item with a time: analyze trend needs a `time` field")
    notes = [f"{untimed} items without a time were left out."] if untimed else []
    keys, members, shares = [], [], []
    unlabelled = 0
    for key in sorted(groups):
        name, rows = groups[key]
        labelled = flags[rows][~np.isnan(flags[rows])]
        if not len(labelled):
            unlabelled += 1
            continue
        keys.append(name)
        members.append(np.asarray(rows, dtype=int))
        shares.append(float(labelled.mean()))
    if unlabelled:
        notes.append(f"{unlabelled} periods without a labelled item were left out.")
    share_arr = np.asarray(shares, dtype=float)
    labels = (share_arr > 0).astype(int) if rule == "any" else (share_arr > 0.5).astype(int)
    return Series(keys, members, share_arr, labels, notes)


def chronological_split(
    *, n_periods: int, window: int, test_fraction: float
) -> tuple[np.ndarray, np.ndarray]:
    """Target periods of the training windows and of the test windows.

    The first ``n_train`` periods hold every training window (inputs and target), the rest every
    test window, so no period belongs to both; a window ending at ``t`` covers ``t-window+1 .. t``.
    """
    if window < 2:
        raise TuwenError(f"--window must be at least 2 (inputs + target), not {window}")
    if not 0 < test_fraction < 1:
        raise TuwenError(f"--test-fraction must lie between 0 and 1, not {test_fraction}")
    if window > n_periods:
        raise TuwenError(f"--window {window} is longer than the series: it has {n_periods} periods")
    n_test = int(round(test_fraction * n_periods))
    n_train = n_periods - n_test
    if n_test < window + 1 or n_train < window + 1:
        raise TuwenError(
            f"{n_periods} periods split {n_train}/{n_test} leave fewer than 2 whole windows of "
            f"{window} on one side: lower --window or change --test-fraction"
        )
    return np.arange(window - 1, n_train), np.arange(n_train + window - 1, n_periods)


def window_inputs(features: np.ndarray, targets: np.ndarray, *, window: int) -> np.ndarray:
    """(n_targets, window - 1, d): the features of the periods before each target."""
    offsets = np.arange(-(window - 1), 0)
    return features[targets[:, None] + offsets[None, :]]


def period_means(vectors: np.ndarray, mask: np.ndarray | None, members: Sequence[np.ndarray]) -> np.ndarray:
    """Mean of each period's usable rows (zero where a period has none)."""
    out = np.zeros((len(members), vectors.shape[1]), dtype=np.float32)
    for p, rows in enumerate(members):
        if mask is not None:
            rows = rows[mask[rows]]
        if len(rows):
            out[p] = vectors[rows].mean(axis=0)
    return out


def feature_sets(
    data: CorpusData, series: Series, *, wanted: Sequence[str], n_train_periods: int
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Per wanted set its (periods, d) matrix, or a reason it is unavailable."""
    available: dict[str, np.ndarray] = {}
    missing: dict[str, str] = {}
    if data.has_images:
        available["image"] = period_means(data.image_vectors, data.image_mask, series.members)
    if data.has_texts:
        available["text"] = period_means(data.text_vectors, data.text_mask, series.members)
    if data.has_masks:
        available["mask"] = period_means(data.mask_vectors, data.mask_mask, series.members)
    if "image" in available and "text" in available:
        available["both"] = np.concatenate([available["image"], available["text"]], axis=1)
    if "tfidf" in wanted and any(c and c.strip() for c in data.captions):
        fit_rows = np.concatenate(series.members[:n_train_periods])
        rows = tfidf_features(captions=data.captions, fit_rows=fit_rows)
        available["tfidf"] = period_means(rows, None, series.members)
    reasons = {
        "image": "the corpus has no image embeddings",
        "text": "the corpus has no caption embeddings",
        "both": "needs both image and caption embeddings",
        "tfidf": "the corpus has no captions",
        "mask": "the corpus has no mask embeddings (a `mask` column, then `tuwen corpus encode`)",
    }
    chosen = {}
    for name in wanted:
        if name in available:
            chosen[name] = available[name]
        else:
            missing[name] = reasons[name]
    return chosen, missing


def prepare(features: np.ndarray, *, n_train_periods: int, components: int) -> np.ndarray:
    """Standardise (and reduce to ``components`` principal axes) with statistics of the training periods."""
    train = features[:n_train_periods]
    scaler = StandardScaler().fit(train)
    out = scaler.transform(features)
    k = min(components, train.shape[0] - 1, train.shape[1]) if components else 0
    if k >= 1:
        pca = PCA(n_components=k, random_state=0).fit(scaler.transform(train))
        out = pca.transform(out) / np.sqrt(pca.explained_variance_[:1])  # keep the scale near 1
    return out.astype(np.float32)


@dataclass(frozen=True)
class Split:
    """Target periods: training (``fit`` then ``val``, chronological, inside it) and test."""

    train: np.ndarray
    test: np.ndarray
    fit: np.ndarray
    val: np.ndarray | None  # None when the training part is too short to carve one


def inner_split(
    train_t: np.ndarray, *, val_fraction: float, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None]:
    """The last ``val_fraction`` of the training targets validate (early stopping, the grid); every
    window of the fit part ends before them. None when either part would be too small or one-class."""
    n_val = max(2, int(round(val_fraction * len(train_t))))
    fit, val = train_t[:-n_val], train_t[-n_val:]
    if len(fit) < 2 or len(np.unique(labels[fit])) < 2:
        return train_t, None
    return fit, val


def feature_free_rows(labels: np.ndarray, split: Split) -> list[Row]:
    """The training majority class, and "same as the last period"."""
    majority = int(labels[split.train].mean() >= 0.5)
    rules = {
        "majority class": lambda t: np.full(len(t), majority),
        "same as last period": lambda t: labels[t - 1],
    }
    rows = []
    for name, rule in rules.items():
        test_p, train_p = one_hot(rule(split.test), 2), one_hot(rule(split.train), 2)
        rows.append(
            Row(
                "—",
                name,
                "baseline",
                [score(labels[split.test], test_p, METRICS)],
                [score(labels[split.train], train_p, METRICS)],
                test_p[:, 1],
            )
        )
    return rows


def logistic_row(name: str, x: np.ndarray, labels: np.ndarray, split: Split, options: TrendOptions) -> Row:
    """Logistic regression on the whole window (its periods side by side, so order counts), C chosen by
    a time-ordered inner cross-validation over the training windows."""

    def flat(targets: np.ndarray) -> np.ndarray:
        return window_inputs(x, targets, window=options.window).reshape(len(targets), -1)

    x_train, y_train = flat(split.train), labels[split.train]
    inner = TimeSeriesSplit(n_splits=max(2, min(options.inner_folds, len(y_train) // 4)))
    model, c = logistic_cv(x_train, y_train, cs=options.cs, splits=list(inner.split(x_train)))
    test_p, train_p = class_proba(model, flat(split.test), 2), class_proba(model, x_train, 2)
    return Row(
        name,
        LOGISTIC,
        "baseline",
        [score(labels[split.test], test_p, METRICS)],
        [score(y_train, train_p, METRICS)],
        test_p[:, 1],
        extra={"C": c},
    )


def sequence_net(kind: str, width: int, *, d_in: int, steps: int) -> nn.Module:
    """A fresh LSTM or Transformer of ``width`` reading ``steps`` periods of ``d_in`` features."""
    if kind == "lstm":
        return LSTMNet(d_in, 2, width)
    return TransformerNet(d_in, 2, width, steps)


def network_row(
    name: str,
    kind: str,
    x: np.ndarray,
    labels: np.ndarray,
    split: Split,
    *,
    options: TrendOptions,
    seeds: range,
) -> Row:
    """Width and weight decay chosen on the validation windows with the first seed; every seed then
    trained with them, each stopped early on the same validation windows."""

    def windows(targets: np.ndarray) -> tuple[np.ndarray]:
        return (window_inputs(x, targets, window=options.window),)

    make = partial(sequence_net, kind, d_in=x.shape[1], steps=options.window - 1)
    fit = (windows(split.fit), labels[split.fit])
    val = None if split.val is None else (windows(split.val), labels[split.val])
    first = tune_network(make, fit, val, options=options, seed=seeds[0])
    chosen = [(first.width, first.weight_decay)]
    runs = [first] + [tune_network(make, fit, val, options=options, seed=s, grid=chosen) for s in seeds[1:]]
    test_probs = [predict_proba(f.net, windows(split.test)) for f in runs]
    return Row(
        name,
        kind,
        "model",
        test=[score(labels[split.test], p, METRICS) for p in test_probs],
        train=[score(fit[1], predict_proba(f.net, fit[0]), METRICS) for f in runs],
        probs=np.mean(test_probs, axis=0)[:, 1],
        extra={"width": first.width, "weight_decay": first.weight_decay, "epochs": [f.epochs for f in runs]},
    )


def evaluate(
    *,
    features: dict[str, np.ndarray],
    labels: np.ndarray,
    split: Split,
    options: TrendOptions,
    say: Callable[[str], None] = _say,
) -> list[Row]:
    """Baselines first (feature-free, then logistic regression per feature set), then every network."""
    n_train_periods = int(split.train[-1]) + 1
    prepared = {
        name: prepare(matrix, n_train_periods=n_train_periods, components=options.components)
        for name, matrix in features.items()
    }
    rows = feature_free_rows(labels, split)
    rows += [logistic_row(name, x, labels, split, options) for name, x in prepared.items()]
    seeds = range(options.seed, options.seed + options.seeds)
    for name, x in prepared.items():
        for kind in parse_list(options.models, allowed=SEQUENCE_MODELS, option="--models"):
            say(f"trend: {kind} on {name} features, {len(seeds)} seeds")
            rows.append(network_row(name, kind, x, labels, split, options=options, seeds=seeds))
    return rows


def judge_trend(rows: Sequence[Row], labels: np.ndarray, split: Split) -> Verdict:
    """Chance is what always answering the test periods' more frequent label scores."""
    share = float(labels[split.test].mean())
    return judge(
        rows,
        metric="accuracy",
        chance=max(share, 1 - share),
        n_eval=len(split.test),
        spread_name="seed",
        model_kinds=("model",),
    )


def run_trend(
    data: CorpusData, options: TrendOptions, *, out: str | Path, say: Callable[[str], None] = _say
) -> dict:
    """Build the series, train and score every model beside the baselines, write the report."""
    options.check()
    wanted = parse_list(options.features, allowed=FEATURE_SETS, option="--features")
    kinds = parse_list(options.models, allowed=SEQUENCE_MODELS, option="--models")
    data, note = drop_small_masks(data, options.min_mask_area)
    series, split = _series_and_split(data, options)
    series.notes += [note] if note else []
    chosen, missing = feature_sets(data, series, wanted=wanted, n_train_periods=int(split.train[-1]) + 1)
    say(
        f"trend: {len(series)} periods, {len(split.train)} training and {len(split.test)} test windows "
        f"of {options.window}"
    )
    with threadpool_limits(limits=1):  # small fits: one BLAS thread is several times faster on shared cores
        rows = evaluate(features=chosen, labels=series.labels, split=split, options=options, say=say)
    for name, reason in missing.items():
        rows += [Row(name, LOGISTIC, "baseline", unavailable=reason)]
        rows += [Row(name, kind, "model", unavailable=reason) for kind in kinds]
    rows.sort(key=lambda r: r.kind != "baseline")  # stable: baselines first, in their order
    return write_report(
        out=out, data=data, series=series, rows=rows, missing=missing, split=split, options=options
    )


def _series_and_split(data: CorpusData, options: TrendOptions) -> tuple[Series, Split]:
    """The labelled periods and the split, refusing a training part with one class."""
    series = build_series(
        data, label=options.label, period=options.period, threshold=options.threshold, rule=options.rule
    )
    train_t, test_t = chronological_split(
        n_periods=len(series), window=options.window, test_fraction=options.test_fraction
    )
    if len(set(series.labels[train_t].tolist())) < 2:
        raise TuwenError(
            f"label {options.label!r} is {int(series.labels[train_t][0])} in every training period under "
            f"--rule {options.rule}: one class, nothing to learn (try another --rule or --threshold)"
        )
    fit, val = inner_split(train_t, val_fraction=options.val_fraction, labels=series.labels)
    return series, Split(train_t, test_t, fit, val)


def write_report(
    *,
    out: str | Path,
    data: CorpusData,
    series: Series,
    rows: list[Row],
    missing: dict[str, str],
    split: Split,
    options: TrendOptions,
) -> dict:
    label = options.label
    report = Report(out, kind="trend", title=f"Trend of {label!r} in {data.name}")
    test_rate = float(series.labels[split.test].mean())
    val = "none (too few training windows)" if split.val is None else f"the last {len(split.val)}"
    report.note(
        "Series",
        f"{len(series)} periods ({series.keys[0]} … {series.keys[-1]}); label = share of items with a "
        f"positive {label!r} under --rule {options.rule}; {len(split.train)} training windows "
        f"(periods {series.keys[0]}…{series.keys[int(split.train[-1])]}), {len(split.test)} test windows "
        f"(targets {series.keys[int(split.test[0])]}…{series.keys[-1]}). Positive share of the test targets: "
        f"{test_rate:.3f}, so always answering the majority scores {max(test_rate, 1 - test_rate):.3f}. "
        f"Validation windows (early stopping, width and weight decay): {val} training windows. "
        + " ".join(series.notes),
    )
    for name, reason in missing.items():
        report.note(f"{name} features left out", f"The {name} rows are marked unavailable: {reason}.")
    table = [r.cells(METRICS, "runs") for r in rows]
    report.table(
        "results",
        table,
        title="Scores (mean ± std over seeds)",
        caption="Baselines first. Train accuracy is on the windows each model was fitted on; the rest on "
        "the test windows.",
    )
    verdict = judge_trend(rows, series.labels, split)
    report.note("Verdict", str(verdict))
    report.figure(
        "test_period",
        _test_figure(series, rows, split.test),
        title="The test period",
        caption="True labels (dots) against the predicted probability of the best model and baseline.",
    )
    payload = _payload(data=data, series=series, rows=rows, missing=missing, split=split, options=options)
    payload["verdict"] = verdict.to_json()
    path = report.finish(payload)
    return {"report": path, "out": report.out, "table": table, "verdict": verdict, "results": rows}


def _payload(
    *,
    data: CorpusData,
    series: Series,
    rows: Sequence[Row],
    missing: dict[str, str],
    split: Split,
    options: TrendOptions,
) -> dict:
    """What ``report.json`` holds besides the parts: settings, split, every run's scores."""
    return {
        "corpus": data.name,
        "model_id": data.model_id,
        "settings": asdict(options),
        "periods": len(series),
        "train_targets": [series.keys[int(t)] for t in split.train],
        "validation_targets": [] if split.val is None else [series.keys[int(t)] for t in split.val],
        "test_targets": [series.keys[int(t)] for t in split.test],
        "test_positive_share": float(series.labels[split.test].mean()),
        "unavailable": missing,
        "results": [r.to_json(METRICS) for r in rows],
    }


def _test_figure(series: Series, rows: Sequence[Row], test_t: np.ndarray):
    use_cjk_font()
    fig, ax = plt.subplots(figsize=(10, 3.6))
    x = np.arange(len(test_t))
    ax.scatter(x, series.labels[test_t], s=14, color="black", label="true label", zorder=3)
    for row, style in ((best(rows, ("baseline",)), "--"), (best(rows, ("model",)), "-")):
        if row is not None:
            ax.plot(
                x,
                row.probs,
                style,
                label=row.model if row.features == "—" else f"{row.model} ({row.features})",
            )
    ax.axhline(0.5, color="grey", lw=0.6)
    step = max(1, len(x) // 10)
    ax.set_xticks(x[::step], [series.keys[int(t)] for t in test_t[::step]], rotation=30, fontsize=8)
    ax.set_ylim(-0.05, 1.05)
    ax.set_ylabel("P(label = 1)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), fontsize=8, ncol=3, frameon=False)
    return fig
