"""``tuwen analyze trend NAME --label FIELD``: will the label be positive in the next period?

Items are grouped into periods by ``time``; a period's features are the mean embedding of its
items per modality (or the mean jieba TF-IDF row of its captions), its label is whether the share
of items with a positive ``FIELD`` passes the ``--rule``. The previous ``window - 1`` periods'
features predict the last period's label. The split is chronological and strict: every training
window lies wholly in the first periods and every test window wholly in the last ones, so no
period is seen by both (the first ``window - 1`` test periods serve only as inputs).

Every sequence model (LSTM, Transformer) is trained with several seeds and reported as mean ±
standard deviation beside three baselines (the training majority class, "same as the last period",
logistic regression on the window's mean), because the study this redoes reported accuracies near
the majority-class rate without saying so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from pathlib import Path

import numpy as np

from analysis.data import CorpusData
from analysis.features import (
    attribute_values,
    fmt_mean_std,
    mean_std,
    positive_flags,
    tfidf_features,
    verdict,
)
from analysis.options import RULES, SEQUENCE_MODELS, TrendOptions, parse_list
from analysis.options import TREND_FEATURES as FEATURE_SETS
from analysis.options import TREND_PERIODS as PERIODS
from common.console import say as _say
from common.errors import TuwenError

BASELINES = ("majority class", "same as last period", "logistic regression (window mean)")
METRICS = ("accuracy", "f1", "roc_auc")


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
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    train = features[:n_train_periods]
    scaler = StandardScaler().fit(train)
    out = scaler.transform(features)
    k = min(components, train.shape[0] - 1, train.shape[1]) if components else 0
    if k >= 1:
        pca = PCA(n_components=k, random_state=0).fit(scaler.transform(train))
        out = pca.transform(out) / np.sqrt(pca.explained_variance_[:1])  # keep the scale near 1
    return out.astype(np.float32)


def scores(y_true: np.ndarray, prob: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    pred = (prob >= 0.5).astype(int)
    auc = roc_auc_score(y_true, prob) if len(set(y_true.tolist())) == 2 else float("nan")
    return {
        "accuracy": float(accuracy_score(y_true, pred)),
        "f1": float(f1_score(y_true, pred, zero_division=0)),
        "roc_auc": float(auc),
    }


def baseline_probs(labels: np.ndarray, train_t: np.ndarray, test_t: np.ndarray) -> dict[str, np.ndarray]:
    """The two baselines that need no features: training majority, and the previous period's label."""
    majority = float(labels[train_t].mean() >= 0.5)
    return {
        BASELINES[0]: np.full(len(test_t), majority),
        BASELINES[1]: labels[test_t - 1].astype(float),
    }


def logistic_window_mean(
    x: np.ndarray, labels: np.ndarray, train_t: np.ndarray, test_t: np.ndarray, *, window: int
) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression

    mean_train = window_inputs(x, train_t, window=window).mean(axis=1)
    mean_test = window_inputs(x, test_t, window=window).mean(axis=1)
    model = LogisticRegression(C=1.0, max_iter=2000).fit(mean_train, labels[train_t])
    return model.predict_proba(mean_test)[:, 1]


def _sequence_net(kind: str, d_in: int, *, hidden: int, steps: int):
    """A small LSTM or a one-layer Transformer encoder reading the window, one logit out."""
    import torch
    from torch import nn

    class LSTMNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.LSTM(d_in, hidden, batch_first=True)
            self.head = nn.Linear(hidden, 1)

        def forward(self, x):
            out, _ = self.rnn(x)
            return self.head(out[:, -1]).squeeze(-1)

    class TransformerNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Linear(d_in, hidden)
            self.position = nn.Parameter(torch.zeros(1, steps, hidden))
            layer = nn.TransformerEncoderLayer(
                hidden, nhead=4, dim_feedforward=2 * hidden, dropout=0.1, batch_first=True
            )
            self.encoder = nn.TransformerEncoder(layer, num_layers=1, enable_nested_tensor=False)
            self.head = nn.Linear(hidden, 1)

        def forward(self, x):
            h = self.encoder(self.embed(x) + self.position)
            return self.head(h[:, -1]).squeeze(-1)

    if kind == "lstm":
        return LSTMNet()
    if kind == "transformer":
        return TransformerNet()
    raise TuwenError(f"--models: unknown model {kind!r} (use {', '.join(SEQUENCE_MODELS)})")


def train_sequence_model(
    *,
    kind: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    seed: int,
    epochs: int = 200,
    hidden: int = 32,
) -> np.ndarray:
    """Train on full batches (the series are short) and return test probabilities."""
    import torch

    from common.runtime import torch_threads

    with torch_threads(1), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = _sequence_net(kind, x_train.shape[2], hidden=hidden, steps=x_train.shape[1])
        optimiser = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-2)
        xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train.astype(np.float32))
        loss_fn = torch.nn.BCEWithLogitsLoss()
        net.train()
        for _ in range(epochs):
            optimiser.zero_grad()
            loss_fn(net(xt), yt).backward()
            optimiser.step()
        net.eval()
        with torch.no_grad():
            return torch.sigmoid(net(torch.from_numpy(x_test))).numpy().astype(float)


@dataclass
class Result:
    features: str  # "—" for the feature-free baselines
    model: str
    baseline: bool
    runs: list[dict[str, float]]  # one score dict per seed (one for deterministic models)
    probs: np.ndarray  # test probabilities, mean over seeds
    unavailable: str = ""

    def summary(self, metric: str) -> tuple[float, float]:
        return mean_std([r[metric] for r in self.runs])

    def row(self) -> dict[str, str]:
        row = {
            "features": self.features,
            "model": self.model,
            "kind": "baseline" if self.baseline else "model",
        }
        for metric in METRICS:
            row[metric] = (
                f"unavailable: {self.unavailable}"
                if self.unavailable
                else fmt_mean_std(*self.summary(metric))
            )
        row["runs"] = str(len(self.runs))
        return row


def evaluate(
    *,
    features: dict[str, np.ndarray],
    labels: np.ndarray,
    window: int,
    train_t: np.ndarray,
    test_t: np.ndarray,
    models: Sequence[str],
    seeds: Sequence[int],
    epochs: int,
    components: int,
    say: Callable[[str], None] = _say,
) -> list[Result]:
    """Baselines first (feature-free, then logistic regression per feature set), then every model."""
    y_train, y_test = labels[train_t], labels[test_t]
    n_train_periods = int(train_t[-1]) + 1
    results = [
        Result("—", name, True, [scores(y_test, prob)], prob)
        for name, prob in baseline_probs(labels, train_t, test_t).items()
    ]
    prepared = {
        name: prepare(matrix, n_train_periods=n_train_periods, components=components)
        for name, matrix in features.items()
    }
    for name, x in prepared.items():
        prob = logistic_window_mean(x, labels, train_t, test_t, window=window)
        results.append(Result(name, BASELINES[2], True, [scores(y_test, prob)], prob))
    for name, x in prepared.items():
        x_train = window_inputs(x, train_t, window=window)
        x_test = window_inputs(x, test_t, window=window)
        for kind in models:
            say(f"trend: {kind} on {name} features, {len(seeds)} seeds")
            probs = [
                train_sequence_model(
                    kind=kind, x_train=x_train, y_train=y_train, x_test=x_test, seed=seed, epochs=epochs
                )
                for seed in seeds
            ]
            runs = [scores(y_test, p) for p in probs]
            results.append(Result(name, kind, False, runs, np.mean(probs, axis=0)))
    return results


def best_of(results: Sequence[Result], *, baseline: bool, metric: str = "accuracy") -> Result | None:
    pool = [r for r in results if r.baseline == baseline and not r.unavailable]
    return max(pool, key=lambda r: r.summary(metric)[0], default=None)


def honest_sentence(results: Sequence[Result], *, metric: str = "accuracy", spread_name: str = "seed") -> str:
    model, baseline = (
        best_of(results, baseline=False, metric=metric),
        best_of(results, baseline=True, metric=metric),
    )
    if model is None or baseline is None:
        return "No model was trained, so there is nothing to compare with the baselines."

    def entry(r: Result) -> dict:
        mean, std = r.summary(metric)
        return {
            "name": f"{r.model} on {r.features}" if r.features != "—" else r.model,
            "mean": mean,
            "std": std,
        }

    return verdict(
        best_model=entry(model), best_baseline=entry(baseline), metric=metric, spread_name=spread_name
    )


def run_trend(
    data: CorpusData, options: TrendOptions, *, out: str | Path, say: Callable[[str], None] = _say
) -> dict:
    """Build the series, train and score every model beside the baselines, write the report."""
    options.check()
    used = asdict(options)
    wanted = parse_list(options.features, allowed=FEATURE_SETS, option="--features")
    kinds = parse_list(options.models, allowed=SEQUENCE_MODELS, option="--models")
    window, seeds, first_seed = options.window, options.seeds, options.seed
    series, (train_t, test_t) = _series_and_split(data, used)
    chosen, missing = feature_sets(data, series, wanted=wanted, n_train_periods=int(train_t[-1]) + 1)
    say(f"trend: {len(series)} periods, {len(train_t)} training and {len(test_t)} test windows of {window}")
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):  # small fits: one BLAS thread is several times faster on shared cores
        results = evaluate(
            features=chosen,
            labels=series.labels,
            window=window,
            train_t=train_t,
            test_t=test_t,
            models=kinds,
            seeds=range(first_seed, first_seed + seeds),
            epochs=options.epochs,
            components=options.components,
            say=say,
        )
    for name, reason in missing.items():
        results += [Result(name, kind, False, [], np.zeros(0), unavailable=reason) for kind in kinds]
    return write_report(
        out=out,
        data=data,
        series=series,
        results=results,
        missing=missing,
        split=(train_t, test_t),
        settings_used=used,
    )


def _series_and_split(data: CorpusData, used: dict) -> tuple[Series, tuple[np.ndarray, np.ndarray]]:
    """The labelled periods and the split, refusing a training part with one class."""
    series = build_series(
        data, label=used["label"], period=used["period"], threshold=used["threshold"], rule=used["rule"]
    )
    train_t, test_t = chronological_split(
        n_periods=len(series), window=used["window"], test_fraction=used["test_fraction"]
    )
    if len(set(series.labels[train_t].tolist())) < 2:
        raise TuwenError(
            f"label {used['label']!r} is {int(series.labels[train_t][0])} in every training period under "
            f"--rule {used['rule']}: one class, nothing to learn (try another --rule or --threshold)"
        )
    return series, (train_t, test_t)


def write_report(
    *,
    out: str | Path,
    data: CorpusData,
    series: Series,
    results: list[Result],
    missing: dict[str, str],
    split: tuple[np.ndarray, np.ndarray],
    settings_used: dict,
) -> dict:
    from analysis.report import Report

    train_t, test_t = split
    label = settings_used["label"]
    report = Report(out, kind="trend", title=f"Trend of {label!r} in {data.name}")
    test_rate = float(series.labels[test_t].mean())
    report.note(
        "Series",
        f"{len(series)} periods ({series.keys[0]} … {series.keys[-1]}); label = share of items with a "
        f"positive {label!r} under --rule {settings_used['rule']}; {len(train_t)} training windows "
        f"(periods {series.keys[0]}…{series.keys[int(train_t[-1])]}), {len(test_t)} test windows "
        f"(targets {series.keys[int(test_t[0])]}…{series.keys[-1]}). Positive share of the test targets: "
        f"{test_rate:.3f}, so always answering the majority scores {max(test_rate, 1 - test_rate):.3f}. "
        + " ".join(series.notes),
    )
    for name, reason in missing.items():
        report.note(f"{name} features left out", f"The {name} rows are marked unavailable: {reason}.")
    rows = [r.row() for r in results]
    report.table("results", rows, title="Test scores (mean ± std over seeds)", caption="Baselines first.")
    sentence = honest_sentence(results)
    report.note("Verdict", sentence)
    report.figure(
        "test_period",
        _test_figure(series, results, test_t),
        title="The test period",
        caption="True labels (dots) against the predicted probability of the best model and baseline.",
    )
    payload = _payload(
        data=data, series=series, results=results, missing=missing, split=split, settings_used=settings_used
    )
    payload["verdict"] = sentence
    path = report.finish(payload)
    return {"report": path, "out": report.out, "table": rows, "verdict": sentence, "results": results}


def _payload(
    *,
    data: CorpusData,
    series: Series,
    results: Sequence[Result],
    missing: dict[str, str],
    split: tuple[np.ndarray, np.ndarray],
    settings_used: dict,
) -> dict:
    """What ``report.json`` holds besides the parts: settings, split, every run's scores."""
    train_t, test_t = split
    test_rate = float(series.labels[test_t].mean())
    return {
        "corpus": data.name,
        "model_id": data.model_id,
        "settings": settings_used,
        "periods": len(series),
        "train_targets": [series.keys[int(t)] for t in train_t],
        "test_targets": [series.keys[int(t)] for t in test_t],
        "test_positive_share": test_rate,
        "unavailable": missing,
        "results": [
            {
                "features": r.features,
                "model": r.model,
                "baseline": r.baseline,
                "unavailable": r.unavailable or None,
                **{
                    m: dict(zip(("mean", "std"), r.summary(m), strict=True))
                    for m in METRICS
                    if not r.unavailable
                },
                "runs": r.runs,
            }
            for r in results
        ],
    }


def _test_figure(series: Series, results: Sequence[Result], test_t: np.ndarray):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from analysis.report import use_cjk_font

    use_cjk_font()
    fig, ax = plt.subplots(figsize=(10, 3.6))
    x = np.arange(len(test_t))
    ax.scatter(x, series.labels[test_t], s=14, color="black", label="true label", zorder=3)
    for result, style in ((best_of(results, baseline=True), "--"), (best_of(results, baseline=False), "-")):
        if result is not None:
            name = result.model if result.features == "—" else f"{result.model} ({result.features})"
            ax.plot(x, result.probs, style, label=name)
    ax.axhline(0.5, color="grey", lw=0.6)
    step = max(1, len(x) // 10)
    ax.set_xticks(x[::step], [series.keys[int(t)] for t in test_t[::step]], rotation=30, fontsize=8)
    ax.set_ylim(-0.05, 1.05)
    ax.set_ylabel("P(label = 1)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), fontsize=8, ncol=3, frameon=False)
    return fig
