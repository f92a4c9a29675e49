"""The supervised toolkit of ``analyze trend`` and ``analyze classify``: one set of networks, one fit
loop, one scoring, one table row and one verdict, so both studies train and judge alike.

- Networks (module level, each testable alone): an MLP, an LSTM and a Transformer reading a window,
  and a gated fusion of two modalities. Each gives one logit per class.
- ``tune_network``: inputs standardised by the caller; every network is trained with AdamW on the
  fit part and stopped early on an inner validation part carved from the training part only (never
  the test fold or the test periods); width and weight decay are chosen from a small grid by that
  validation loss.
- Baselines that a careful analyst would run beside it: logistic regression with its C chosen by an
  inner cross-validation inside the training rows (``logistic_cv``) and, for items,
  scikit-learn's ``HistGradientBoostingClassifier`` (``boosted_trees``).
- ``Row``: one table row with train and test scores side by side (overfitting shows);
  ``judge``: the ``Verdict`` of both studies (chance, best model against the strongest baseline).
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
from torch import nn

from analysis.features import fmt_mean_std, mean_std, verdict
from analysis.options import SupervisedOptions
from common.runtime import torch_threads

# networks


class MLPNet(nn.Module):
    """One hidden layer: the classifier of a single feature set (and of early fusion)."""

    def __init__(self, d_in: int, n_classes: int, width: int):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(d_in, width), nn.ReLU(), nn.Linear(width, n_classes))

    def forward(self, x):
        return self.layers(x)


class LSTMNet(nn.Module):
    """Reads a window (batch, steps, d) in order; the last step's state gives the logits."""

    def __init__(self, d_in: int, n_classes: int, width: int):
        super().__init__()
        self.rnn = nn.LSTM(d_in, width, batch_first=True)
        self.head = nn.Linear(width, n_classes)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


class TransformerNet(nn.Module):
    """One Transformer encoder layer over a window with learned positions; the last step's output."""

    def __init__(self, d_in: int, n_classes: int, width: int, steps: int):
        super().__init__()
        self.embed = nn.Linear(d_in, width)
        self.position = nn.Parameter(torch.zeros(1, steps, width))
        layer = nn.TransformerEncoderLayer(
            width, nhead=4, dim_feedforward=2 * width, dropout=0.1, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers=1, enable_nested_tensor=False)
        self.head = nn.Linear(width, n_classes)

    def forward(self, x):
        return self.head(self.encoder(self.embed(x) + self.position)[:, -1])


class GatedFusion(nn.Module):
    """Attention fusion: each modality projected to ``width``, mixed by a learned per-item gate
    (softmax over the two), then a linear layer. ``gate`` holds the last batch's image weights."""

    def __init__(self, d_image: int, d_text: int, n_classes: int, width: int):
        super().__init__()
        self.image = nn.Sequential(nn.Linear(d_image, width), nn.Tanh())
        self.text = nn.Sequential(nn.Linear(d_text, width), nn.Tanh())
        self.mix = nn.Linear(2 * width, 2)
        self.head = nn.Linear(width, n_classes)
        self.gate = torch.zeros(0)

    def forward(self, xi, xt):
        hi, ht = self.image(xi), self.text(xt)
        gate = torch.softmax(self.mix(torch.cat([hi, ht], dim=1)), dim=1)
        self.gate = gate[:, 0].detach()
        return self.head(gate[:, :1] * hi + gate[:, 1:] * ht)


# the fit loop

Inputs = tuple[np.ndarray, ...]  # what a network's forward takes, row-aligned


@dataclass
class Fitted:
    """A trained network (at its best validation epoch) and how it was chosen."""

    net: nn.Module
    width: int
    weight_decay: float
    epochs: int  # epochs run until the best validation loss
    val_loss: float
    val_prob: np.ndarray | None  # (n_val, n_classes) at the chosen epoch


def _tensors(inputs: Inputs, rows: np.ndarray | slice = slice(None)) -> list[torch.Tensor]:
    return [torch.from_numpy(np.ascontiguousarray(a[rows], dtype=np.float32)) for a in inputs]


def predict_proba(net: nn.Module, inputs: Inputs) -> np.ndarray:
    """Class probabilities (n, n_classes) of a trained network, in eval mode."""
    net.eval()
    with torch_threads(1), torch.no_grad():
        return torch.softmax(net(*_tensors(inputs)), dim=1).numpy().astype(float)


def fit_network(
    make: Callable[[int], nn.Module],
    fit: tuple[Inputs, np.ndarray],
    val: tuple[Inputs, np.ndarray] | None,
    *,
    width: int,
    weight_decay: float,
    options: SupervisedOptions,
    seed: int,
) -> Fitted:
    """AdamW on shuffled mini-batches of the fit part (at most ``options.batch_size`` rows, at least 8
    batches an epoch); after each epoch the validation loss, and the
    weights of the best epoch are kept; stops ``options.patience`` epochs after the last improvement
    (without a validation part: all ``options.epochs``)."""
    (x_fit, y_fit) = fit
    with torch_threads(1), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = make(width)
        optimiser = torch.optim.AdamW(net.parameters(), lr=options.learning_rate, weight_decay=weight_decay)
        xs, ys = _tensors(x_fit), torch.from_numpy(np.asarray(y_fit, dtype=np.int64))
        xv, yv = (
            (_tensors(val[0]), torch.from_numpy(np.asarray(val[1], dtype=np.int64))) if val else (None, None)
        )
        generator = torch.Generator().manual_seed(seed)
        batch_size = min(options.batch_size, max(16, math.ceil(len(ys) / 8)))  # small data: 8 steps an epoch
        best = (math.inf, 0, copy.deepcopy(net.state_dict()))
        for epoch in range(1, options.epochs + 1):
            net.train()
            for batch in torch.randperm(len(ys), generator=generator).split(batch_size):
                optimiser.zero_grad()
                nn.functional.cross_entropy(net(*(x[batch] for x in xs)), ys[batch]).backward()
                optimiser.step()
            if xv is None:
                continue
            net.eval()
            with torch.no_grad():
                loss = float(nn.functional.cross_entropy(net(*xv), yv))
            if loss < best[0] - 1e-4:
                best = (loss, epoch, copy.deepcopy(net.state_dict()))
            elif epoch - best[1] >= options.patience:
                break
        if xv is None:
            return Fitted(net, width, weight_decay, options.epochs, math.nan, None)
        net.load_state_dict(best[2])
    return Fitted(net, width, weight_decay, best[1], best[0], predict_proba(net, val[0]))


def tune_network(
    make: Callable[[int], nn.Module],
    fit: tuple[Inputs, np.ndarray],
    val: tuple[Inputs, np.ndarray] | None,
    *,
    options: SupervisedOptions,
    seed: int,
    grid: Sequence[tuple[int, float]] | None = None,
) -> Fitted:
    """The network of the (width, weight decay) pair with the lowest validation loss; ``grid``
    defaults to every pair of ``options.widths`` × ``options.weight_decays`` (one pair without a
    validation part: nothing to choose by). With more than ``options.tune_rows`` fit rows the pairs
    are compared on a seeded sample of that many, and the chosen one is then fitted on them all."""
    if grid is None:
        grid = [(w, wd) for w in options.widths for wd in options.weight_decays]
    if val is None:
        grid = grid[:1]
    (x_fit, y_fit), search = fit, fit
    if len(grid) > 1 and len(y_fit) > options.tune_rows:
        rows = np.sort(np.random.default_rng(seed).choice(len(y_fit), options.tune_rows, replace=False))
        search = (tuple(x[rows] for x in x_fit), y_fit[rows])
    fits = [
        fit_network(make, search, val, width=w, weight_decay=wd, options=options, seed=seed) for w, wd in grid
    ]
    chosen = min(fits, key=lambda f: f.val_loss if val is not None else 0.0)
    if search is fit:
        return chosen
    return fit_network(
        make, fit, val, width=chosen.width, weight_decay=chosen.weight_decay, options=options, seed=seed
    )


# the baselines


def _fit_logistic(x: np.ndarray, y: np.ndarray, c: float) -> LogisticRegression:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return LogisticRegression(C=c, max_iter=300).fit(x, y)


def logistic_cv(
    x: np.ndarray, y: np.ndarray, *, cs: Sequence[float], splits: Sequence[tuple[np.ndarray, np.ndarray]]
) -> tuple[LogisticRegression, float]:
    """Logistic regression refitted on all of ``x`` with the C of the lowest mean log loss over the
    inner ``splits`` (pairs of row positions inside ``x``); inner parts with one class are skipped."""
    n_classes = int(y.max()) + 1
    losses = np.zeros(len(cs))
    for fit_rows, held in splits:
        if len(np.unique(y[fit_rows])) < 2:
            continue
        for k, c in enumerate(cs):
            model = _fit_logistic(x[fit_rows], y[fit_rows], c)
            prob = np.full((len(held), n_classes), 1e-6)
            prob[:, model.classes_] = model.predict_proba(x[held])
            losses[k] -= np.log(np.clip(prob[np.arange(len(held)), y[held]], 1e-6, 1)).mean()
    c = float(cs[int(np.argmin(losses))])
    return _fit_logistic(x, y, c), c


def boosted_trees(x: np.ndarray, y: np.ndarray, *, seed: int) -> HistGradientBoostingClassifier:
    """Gradient-boosted trees, stopped early on 10 % of the training rows (its own inner split)."""
    model = HistGradientBoostingClassifier(max_iter=100, early_stopping=True, random_state=seed)
    return model.fit(x, y)


def class_proba(model, x: np.ndarray, n_classes: int) -> np.ndarray:
    """``predict_proba`` over all ``n_classes`` columns (a training part may lack a class)."""
    out = np.zeros((x.shape[0], n_classes))
    out[:, model.classes_] = model.predict_proba(x)
    return out


# scoring


def score(y_true: np.ndarray, prob: np.ndarray, metrics: Sequence[str]) -> dict[str, float]:
    """``metrics`` of class probabilities ``prob`` (n, n_classes): accuracy, f1 (of class 1),
    macro_f1, roc_auc (binary; NaN with one class present)."""
    pred = prob.argmax(axis=1)
    found = {}
    for metric in metrics:
        if metric == "accuracy":
            found[metric] = float(accuracy_score(y_true, pred))
        elif metric == "f1":
            found[metric] = float(f1_score(y_true, pred, zero_division=0))
        elif metric == "macro_f1":
            found[metric] = float(f1_score(y_true, pred, average="macro", zero_division=0))
        elif metric == "roc_auc":
            two = len(set(np.asarray(y_true).tolist())) == 2 and prob.shape[1] == 2
            found[metric] = float(roc_auc_score(y_true, prob[:, 1])) if two else float("nan")
    return found


def one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    return np.eye(n_classes)[np.asarray(labels, dtype=int)]


@dataclass
class Row:
    """One line of a study's table: a model on a feature set, its scores per seed or fold."""

    features: str  # "—" for the feature-free baselines
    model: str
    kind: str  # "baseline", or the study's kind of model ("model"; "single", "fusion")
    test: list[dict[str, float]] = field(default_factory=list)
    train: list[dict[str, float]] = field(default_factory=list)
    probs: np.ndarray | None = None  # test probabilities (trend: mean over seeds; classify: out of fold)
    unavailable: str = ""
    extra: dict = field(default_factory=dict)  # chosen settings per run (C, width, epochs, …)

    @property
    def name(self) -> str:
        return self.model if self.features == "—" else f"{self.model} on {self.features}"

    @property
    def baseline(self) -> bool:
        return self.kind == "baseline"

    def summary(self, metric: str, part: str = "test") -> tuple[float, float]:
        return mean_std([r[metric] for r in (self.test if part == "test" else self.train)])

    def cells(self, metrics: Sequence[str], count: str) -> dict[str, str]:
        """The table row: train accuracy beside the test metrics."""
        row = {"features": self.features, "model": self.model, "kind": self.kind}
        for column, metric, part in [("train accuracy", "accuracy", "train")] + [
            (m, m, "test") for m in metrics
        ]:
            row[column] = (
                f"unavailable: {self.unavailable}"
                if self.unavailable
                else fmt_mean_std(*self.summary(metric, part))
            )
        row[count] = str(len(self.test))
        return row

    def to_json(self, metrics: Sequence[str]) -> dict:
        return {
            "features": self.features,
            "model": self.model,
            "kind": self.kind,
            "baseline": self.baseline,
            "unavailable": self.unavailable or None,
            **{
                m: dict(zip(("mean", "std"), self.summary(m), strict=True))
                for m in metrics
                if not self.unavailable
            },
            "train": {m: dict(zip(("mean", "std"), self.summary(m, "train"), strict=True)) for m in metrics}
            if self.train
            else None,
            "runs": self.test,
            **self.extra,
        }


# the verdict


@dataclass(frozen=True)
class Verdict:
    """What the table says, in sentences generated from its numbers (the same type for both studies)."""

    metric: str
    chance: float  # the test share of the most frequent class: what answering it always scores
    chance_spread: float  # standard error of a score at chance on one evaluation's items
    above_chance: tuple[str, ...]  # rows whose mean lies more than 2 spreads above chance
    best_model: str | None
    best_baseline: str | None
    model_beats_baseline: bool
    sentences: tuple[str, ...]

    def __str__(self) -> str:
        return "\n".join(self.sentences)

    def to_json(self) -> dict:
        return {
            "metric": self.metric,
            "chance": self.chance,
            "chance_spread": self.chance_spread,
            "above_chance": list(self.above_chance),
            "best_model": self.best_model,
            "best_baseline": self.best_baseline,
            "model_beats_baseline": self.model_beats_baseline,
            "sentences": list(self.sentences),
        }


def best(rows: Sequence[Row], kinds: Sequence[str], metric: str = "accuracy") -> Row | None:
    pool = [r for r in rows if r.kind in kinds and not r.unavailable and r.test]
    return max(pool, key=lambda r: r.summary(metric)[0], default=None)


def spread(row: Row, metric: str, chance_spread: float) -> float:
    """A row's spread against chance: its own standard deviation, at least chance's standard error."""
    return max(row.summary(metric)[1], chance_spread)


def _against_chance(
    rows: Sequence[Row], *, metric: str, chance: float, chance_spread: float
) -> tuple[tuple[str, ...], str]:
    """The rows lying more than 2 spreads above chance, and the sentence that says so."""
    live = [r for r in rows if not r.unavailable and r.test]
    above = tuple(
        r.name for r in live if r.summary(metric)[0] - chance > 2 * spread(r, metric, chance_spread)
    )
    band = f"{metric} {chance:.3f} ± 2 × {chance_spread:.3f}"
    if above:
        return (
            above,
            f"{len(above)} of {len(live)} rows lie above chance ({band}): the label is predictable here.",
        )
    return (
        above,
        f"No row beats chance: every row lies within {band} or below, so nothing here predicts the label.",
    )


def judge(
    rows: Sequence[Row],
    *,
    metric: str,
    chance: float,
    n_eval: int,
    spread_name: str,
    model_kinds: Sequence[str],
    fusion: tuple[str, str] | None = None,
) -> Verdict:
    """Chance first (which rows lie above it by more than 2 spreads), then the best model against the
    strongest baseline, then (``fusion``: the kinds of fused and single models) fusion against the
    better single modality."""
    chance_spread = math.sqrt(chance * (1 - chance) / max(n_eval, 1))
    above, first = _against_chance(rows, metric=metric, chance=chance, chance_spread=chance_spread)
    sentences = [first]

    def entry(r: Row) -> dict:
        mean, std = r.summary(metric)
        return {"name": r.name, "mean": mean, "std": std}

    model, baseline = best(rows, model_kinds, metric), best(rows, ("baseline",), metric)
    beats = False
    if model and baseline:
        sentences.append(
            verdict(
                best_model=entry(model), best_baseline=entry(baseline), metric=metric, spread_name=spread_name
            )
        )
        beats = sentences[-1].startswith("The best model beats")
    elif baseline:
        sentences.append("No model was trained, so there is nothing to compare with the baselines.")
    if fusion:
        fused, single = best(rows, (fusion[0],), metric), best(rows, (fusion[1],), metric)
        if fused and single:
            sentences.append(
                verdict(
                    best_model=entry(fused),
                    best_baseline=entry(single),
                    metric=metric,
                    spread_name=spread_name,
                    subjects=("best fusion", "better single modality"),
                )
            )
    return Verdict(
        metric,
        chance,
        chance_spread,
        above,
        model.name if model else None,
        baseline.name if baseline else None,
        beats,
        tuple(sentences),
    )
