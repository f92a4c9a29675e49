"""What each study takes besides its data: one frozen options object per study, the defaults in one place.

``analysis.cli`` builds these from the command line (its help reads the defaults from here) and the
studies take them whole (``run_trend(data, options)``). ``check()`` raises ``TuwenError`` naming the
flag for what is wrong without looking at the data, so a command fails before the corpus is read.
This module stays light (no numpy, scikit-learn or torch): ``tuwen --help`` imports it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass

from common.errors import TuwenError

# clusters
MODALITIES = ("image", "text", "both", "mask")
TEXT_SOURCES = ("caption", "tags")
REDUCERS = ("umap", "none")
METHODS = ("kmeans", "hdbscan")
CLUSTER_PERIODS = ("month", "week", "day")
# trend
TREND_PERIODS = ("auto", "day", "week", "month")
RULES = ("any", "majority")
TREND_FEATURES = ("image", "text", "both", "tfidf", "mask")  # mask: only when asked for
SEQUENCE_MODELS = ("lstm", "transformer")
# classify
TEXT_KINDS = ("clip", "tfidf")
FUSIONS = ("early", "late", "attention")


def parse_list(value: str | Sequence[str], *, allowed: Sequence[str], option: str) -> tuple[str, ...]:
    """A comma list (or a sequence) of names from ``allowed``, in order, without repeats or blanks;
    ``TuwenError`` naming ``option`` for an unknown name or an empty list."""
    items = (
        [v.strip() for v in value.split(",")] if isinstance(value, str) else [str(v).strip() for v in value]
    )
    items = [v for v in items if v]
    unknown = [v for v in items if v not in allowed]
    if unknown or not items:
        raise TuwenError(f"{option}: unknown {', '.join(unknown) or 'empty list'} (use {', '.join(allowed)})")
    return tuple(dict.fromkeys(items))


def default(options: type, name: str):
    """The default of field ``name`` of an options class (what the command line's help shows)."""
    for f in dataclasses.fields(options):
        if f.name == name:
            return f.default
    raise KeyError(name)


def _one_of(option: str, value, allowed: Sequence) -> None:
    if value not in allowed:
        raise TuwenError(f"{option} must be one of {', '.join(map(str, allowed))} (got {value!r})")


def _at_least(option: str, value: int | float, minimum: int | float) -> None:
    if value < minimum:
        raise TuwenError(f"{option} must be at least {minimum} (got {value})")


def _check_area(value: float | None) -> None:
    if value is not None and not 0 <= value < 1:
        raise TuwenError(f"--min-mask-area is a share of the frame, between 0 and 1 (got {value})")


def parse_k(spec: str, *, n: int) -> list[int]:
    """``auto`` → 2..min(30, n/5); ``N`` → [N]; ``A..B`` → A..B. Every k must be in 2..n-1."""
    spec = str(spec).strip()
    if spec == "auto":
        return list(range(2, max(3, min(30, n // 5) + 1)))
    match = re.fullmatch(r"(\d+)(?:\.\.(\d+))?", spec)
    if not match:
        raise TuwenError(f"--k must be auto, a number or a range A..B (got {spec!r})")
    low = int(match.group(1))
    high = int(match.group(2)) if match.group(2) else low
    if high < low:
        raise TuwenError(f"--k range {spec} is empty: write A..B with A <= B")
    if low < 2:
        raise TuwenError(f"--k must be at least 2 (got {spec}): one cluster is no clustering")
    if high >= n:
        raise TuwenError(f"--k {spec} needs more than {high} items to cluster; there are {n}")
    return list(range(low, high + 1))


@dataclass(frozen=True)
class ClusterOptions:
    """``analyze clusters``."""

    modality: str = "image"
    text: str = "caption"
    reduce: str = "umap"
    method: str = "kmeans"
    k: str = "auto"
    by: str = "month"
    seed: int = 0
    umap_dims: int = (
        5  # BERTopic's default: enough for density, few enough for the distance to mean something
    )
    sweep_sample: int = 3000  # the silhouette sweep fits and scores on at most this many items
    umap_fit_sample: int = 15000  # UMAP is fitted on at most this many items, the rest transformed
    min_cluster_size: int | None = None  # HDBSCAN; default max(10, 1 % of the items)
    keywords: int = 8
    exemplars: int = 8  # images per cluster grid
    min_mask_area: float | None = None  # drop items whose mask covers less of the frame (the seed: 0.05)

    def check(self) -> None:
        _one_of("--modality", self.modality, MODALITIES)
        _one_of("--text", self.text, TEXT_SOURCES)
        _one_of("--reduce", self.reduce, REDUCERS)
        _one_of("--method", self.method, METHODS)
        _one_of("--by", self.by, CLUSTER_PERIODS)
        if self.method == "hdbscan" and self.k != "auto":
            raise TuwenError(
                "--k applies to kmeans; hdbscan finds the number of clusters itself (--min-cluster-size)"
            )
        if self.min_cluster_size is not None:
            _at_least("--min-cluster-size", self.min_cluster_size, 2)
        _at_least("--exemplars", self.exemplars, 1)
        _check_area(self.min_mask_area)
        parse_k(self.k, n=1 << 62)  # a malformed --k fails before the corpus is read


@dataclass(frozen=True)
class AlignmentOptions:
    """``analyze alignment``."""

    n: int = 6  # pairs in the similarity heatmap
    gallery: int = 3  # sampled queries in each top-5 gallery
    seed: int = 0

    def check(self) -> None:
        _at_least("--n", self.n, 2)
        _at_least("--gallery", self.gallery, 1)


@dataclass(frozen=True)
class SupervisedOptions:
    """What ``analyze trend`` and ``analyze classify`` share: the label, and how their networks and
    baselines are fitted (``analysis.supervised``)."""

    label: str
    seed: int = 0
    epochs: int = 100  # most epochs per network; training stops earlier when validation stops improving
    patience: int = 6  # epochs without a better validation loss before stopping
    val_fraction: float = 0.2  # inner validation part, carved from the training part only
    widths: tuple[int, ...] = (32, 128)  # grid of hidden widths, chosen on the validation part
    weight_decays: tuple[float, ...] = (1e-4, 1e-2)  # grid of AdamW weight decays, likewise
    tune_rows: int = 2000  # the grid is searched on at most this many fit rows, the choice then fitted on all
    learning_rate: float = 3e-3
    batch_size: int = 256
    cs: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)  # logistic regression's C, chosen by inner CV
    min_mask_area: float | None = None  # drop items whose mask covers less of the frame (the seed: 0.05)
    inner_folds: int = 3  # folds of that inner cross-validation (inside the training part)

    def check(self) -> None:
        _at_least("--epochs", self.epochs, 1)
        _at_least("--patience", self.patience, 1)
        if not 0 < self.val_fraction < 0.5:
            raise TuwenError(f"--val-fraction must lie between 0 and 0.5, not {self.val_fraction}")
        if not self.widths or not self.weight_decays or not self.cs:
            raise TuwenError("the width, weight decay and C grids need at least one value each")
        _at_least("--inner-folds", self.inner_folds, 2)
        _at_least("--tune-rows", self.tune_rows, 10)
        _check_area(self.min_mask_area)


@dataclass(frozen=True)
class TrendOptions(SupervisedOptions):
    """``analyze trend``: the previous ``window - 1`` periods predict the last one's label."""

    period: str = "auto"
    threshold: float | None = None  # a numeric label is positive above this
    rule: str = "majority"  # a period is positive when any / most of its items are
    window: int = 10
    test_fraction: float = 0.2
    features: tuple[str, ...] = TREND_FEATURES[:4]
    models: tuple[str, ...] = SEQUENCE_MODELS
    seeds: int = 5  # training runs per network (seeds seed, seed + 1, …)
    components: int = 16  # principal axes kept per feature set (0: all)

    def check(self) -> None:
        super().check()
        _one_of("--period", self.period, TREND_PERIODS)
        _one_of("--rule", self.rule, RULES)
        parse_list(self.features, allowed=TREND_FEATURES, option="--features")
        parse_list(self.models, allowed=SEQUENCE_MODELS, option="--models")
        _at_least("--window", self.window, 2)
        if not 0 < self.test_fraction < 1:
            raise TuwenError(f"--test-fraction must lie between 0 and 1, not {self.test_fraction}")
        _at_least("--seeds", self.seeds, 1)
        _at_least("--components", self.components, 0)


@dataclass(frozen=True)
class ClassifyOptions(SupervisedOptions):
    """``analyze classify``: stratified k-fold over single modalities and their fusions."""

    folds: int = 5
    text: str = "clip"  # the text features used in the fusions
    fusion: tuple[str, ...] = ("early", "late")

    def check(self) -> None:
        super().check()
        _one_of("--text", self.text, TEXT_KINDS)
        parse_list(self.fusion, allowed=FUSIONS, option="--fusion")
        _at_least("--folds", self.folds, 2)
