"""``tuwen analyze classify NAME --label FIELD``: does combining image and text beat either alone?

Every feature set (image embeddings, caption embeddings, jieba TF-IDF of the captions, and the image
and text pair) gets the strongest simple baselines beside the networks, in one table:

- logistic regression, its C chosen by an inner stratified cross-validation inside the training
  folds; gradient-boosted trees (scikit-learn's ``HistGradientBoostingClassifier``) on the set's
  first ``TREE_AXES`` SVD axes (trees split one axis at a time: 512 raw embedding axes cost minutes
  and add nothing);
- a one-hidden-layer MLP (kind "single"), standardised inputs, stopped early on an inner validation
  part of the training fold, width and weight decay chosen on it (``analysis.supervised``);
- early fusion: the two sets concatenated → the same MLP;
- late fusion: the two single MLPs' class probabilities combined as a weighted geometric mean
  ``p_image^w · p_text^(1-w)`` (a logarithmic opinion pool), ``w`` chosen on the validation part;
- attention fusion (``--fusion attention``): a learned per-item gate mixes the two projected sets.

Stratified k-fold cross-validation; mean ± std over folds of train accuracy, test accuracy and
macro-F1, the verdict (chance, best model against the strongest baseline, best fusion against the
better single modality), and a confusion matrix of the best row's out-of-fold predictions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from scipy import sparse
from sklearn.decomposition import TruncatedSVD
from sklearn.metrics import ConfusionMatrixDisplay, confusion_matrix
from sklearn.model_selection import StratifiedKFold, train_test_split
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from analysis.data import CorpusData, drop_small_masks
from analysis.features import attribute_values, tfidf_matrix
from analysis.options import FUSIONS, ClassifyOptions, parse_list
from analysis.report import Report, use_cjk_font
from analysis.supervised import (
    GatedFusion,
    MLPNet,
    Row,
    Verdict,
    best,
    boosted_trees,
    class_proba,
    judge,
    logistic_cv,
    predict_proba,
    score,
    tune_network,
)
from common.console import say as _say
from common.errors import TuwenError

METRICS = ("accuracy", "macro_f1")
LATE_WEIGHTS = np.linspace(0.0, 1.0, 21)
TREE_AXES = 64
KIND_ORDER = {"baseline": 0, "single": 1, "fusion": 2}
LOGISTIC, TREES, MLP = "logistic regression", "gradient boosting", "mlp"


@dataclass
class Labels:
    rows: np.ndarray  # item positions used
    y: np.ndarray  # class index per used row
    classes: list[str]
    notes: list[str] = field(default_factory=list)


@dataclass
class Fold:
    """One fold's standardised feature sets (train, test), labels, and the inner split of its
    training rows (positions into them) that the networks validate on."""

    sets: dict[str, tuple]
    y_train: np.ndarray
    y_test: np.ndarray
    fit: np.ndarray
    val: np.ndarray | None
    n_classes: int
    seed: int


def class_labels(data: CorpusData, *, label: str, folds: int) -> Labels:
    """Each item with a value of ``label`` and the modalities the corpus has; classes by their text."""
    values = attribute_values(data.attributes, field=label)
    usable = np.array([v is not None and v == v for v in values], dtype=bool)  # v == v drops NaN
    notes = []
    for has, mask, what in (
        (data.has_images, data.image_mask, "an image embedding"),
        (data.has_texts, data.text_mask, "a caption embedding"),
        (data.has_masks, data.mask_mask, "a mask embedding"),
    ):
        if has:
            lacking = usable & ~mask.astype(bool)
            if lacking.any():
                notes.append(f"{int(lacking.sum())} labelled items without {what} were left out.")
            usable &= mask.astype(bool)
    rows = np.flatnonzero(usable)
    texts = [str(values[i]) for i in rows]
    classes = sorted(set(texts))
    if len(classes) < 2:
        raise TuwenError(f"label {label!r} has a single class ({classes[0] if classes else 'no values'})")
    counts = {c: texts.count(c) for c in classes}
    small = {c: n for c, n in counts.items() if n < folds}
    if small:
        listed = ", ".join(f"{c!r}: {n}" for c, n in small.items())
        raise TuwenError(f"label {label!r}: classes with fewer items than --folds {folds} ({listed})")
    index = {c: k for k, c in enumerate(classes)}
    return Labels(rows, np.array([index[t] for t in texts]), classes, notes)


def pool(p_image: np.ndarray, p_text: np.ndarray, weight: float) -> np.ndarray:
    """Weighted geometric mean of two probability tables, renormalised per row."""
    logp = weight * np.log(np.clip(p_image, 1e-6, 1)) + (1 - weight) * np.log(np.clip(p_text, 1e-6, 1))
    logp -= logp.max(axis=1, keepdims=True)
    p = np.exp(logp)
    return p / p.sum(axis=1, keepdims=True)


def late_weight(p_image: np.ndarray, p_text: np.ndarray, y: np.ndarray) -> float:
    """The pool weight with the lowest log loss of ``y`` (validation rows' probabilities)."""
    losses = [-np.log(pool(p_image, p_text, w)[np.arange(len(y)), y] + 1e-12).mean() for w in LATE_WEIGHTS]
    return float(LATE_WEIGHTS[int(np.argmin(losses))])


def _dense(x) -> np.ndarray:
    return np.asarray(x.toarray() if sparse.issparse(x) else x, dtype=np.float32)


def fold_sets(
    blocks: dict[str, np.ndarray],
    captions: list[str] | None,
    train: np.ndarray,
    test: np.ndarray,
    *,
    pair: str,
) -> dict[str, tuple]:
    """(train, test) matrices per feature set, standardised on the training fold (TF-IDF: its vocabulary
    fitted there too, kept sparse and only scaled); ``pair`` = "image + text (…)" when both exist."""
    raw = {name: (matrix[train], matrix[test]) for name, matrix in blocks.items()}
    if captions is not None:
        tfidf = tfidf_matrix(captions=captions, fit_rows=train)
        raw["text (tfidf)"] = (tfidf[train], tfidf[test])
    sets = {}
    for name, (a, b) in raw.items():
        scaler = StandardScaler(with_mean=not sparse.issparse(a)).fit(a)
        sets[name] = (scaler.transform(a), scaler.transform(b))
    text = pair.removeprefix("image + ")
    if "image" in sets and text in sets:
        parts = list(zip(sets["image"], sets[text], strict=True))
        if sparse.issparse(sets[text][0]):
            sets[pair] = tuple(sparse.hstack(p).tocsr() for p in parts)
        else:
            sets[pair] = tuple(np.hstack(p) for p in parts)
    return sets


def inner_rows(y: np.ndarray, *, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    """A stratified validation part of the training rows (None when a class has a single row)."""
    rows = np.arange(len(y))
    if np.bincount(y)[np.unique(y)].min() < 2:
        return rows, None
    fit, val = train_test_split(rows, test_size=val_fraction, stratify=y, random_state=seed)
    return np.sort(fit), np.sort(val)


def baseline_outcomes(fold: Fold, name: str, options: ClassifyOptions) -> dict:
    """Logistic regression (C by inner stratified CV) and boosted trees on one feature set."""
    x_train, x_test = fold.sets[name]
    y = fold.y_train
    smallest = int(np.bincount(y)[np.unique(y)].min())
    inner = StratifiedKFold(n_splits=min(options.inner_folds, smallest), shuffle=True, random_state=fold.seed)
    splits = list(inner.split(np.zeros(len(y)), y)) if smallest >= 2 else []
    model, c = logistic_cv(x_train, y, cs=options.cs, splits=splits)
    k = fold.n_classes
    out = {
        (name, LOGISTIC, "baseline"): (
            class_proba(model, x_test, k),
            class_proba(model, x_train, k),
            y,
            {"C": c},
        )
    }
    svd = TruncatedSVD(n_components=max(1, min(TREE_AXES, x_train.shape[1] - 1)), random_state=fold.seed)
    z_train = svd.fit_transform(x_train)
    trees = boosted_trees(z_train, y, seed=fold.seed)
    out[(name, TREES, "baseline")] = (
        class_proba(trees, svd.transform(x_test), k),
        class_proba(trees, z_train, k),
        y,
        {"iterations": trees.n_iter_},
    )
    return out


def _network(fold: Fold, make: Callable, sets: Sequence[str], options: ClassifyOptions):
    """A network tuned on the fold's inner split: (fitted, test inputs, fit inputs)."""
    train = tuple(_dense(fold.sets[s][0]) for s in sets)
    test = tuple(_dense(fold.sets[s][1]) for s in sets)
    fit_x = tuple(x[fold.fit] for x in train)
    val = None if fold.val is None else (tuple(x[fold.val] for x in train), fold.y_train[fold.val])
    fitted = tune_network(make, (fit_x, fold.y_train[fold.fit]), val, options=options, seed=fold.seed)
    return fitted, test, fit_x


def network_outcomes(fold: Fold, singles: Sequence[str], pair: str, fusions: Sequence[str], options) -> dict:
    """Test and fit-part probabilities of the single MLPs and the fusions for one fold."""
    k, y_fit = fold.n_classes, fold.y_train[fold.fit]
    out, fitted = {}, {}
    for name in singles:
        f, test, fit_x = _network(fold, partial(MLPNet, fold.sets[name][0].shape[1], k), [name], options)
        fitted[name] = f
        extra = {"width": f.width, "weight_decay": f.weight_decay, "epochs": f.epochs}
        out[(name, MLP, "single")] = (predict_proba(f.net, test), predict_proba(f.net, fit_x), y_fit, extra)
    if pair not in fold.sets:
        return out
    image, text = "image", pair.removeprefix("image + ")
    if "early" in fusions:
        f, test, fit_x = _network(fold, partial(MLPNet, fold.sets[pair][0].shape[1], k), [pair], options)
        extra = {"width": f.width, "weight_decay": f.weight_decay, "epochs": f.epochs}
        out[(pair, "early fusion (mlp)", "fusion")] = (
            predict_proba(f.net, test),
            predict_proba(f.net, fit_x),
            y_fit,
            extra,
        )
    if "late" in fusions and image in fitted and text in fitted:
        w = (
            0.5
            if fold.val is None
            else late_weight(fitted[image].val_prob, fitted[text].val_prob, fold.y_train[fold.val])
        )
        test_p = pool(out[(image, MLP, "single")][0], out[(text, MLP, "single")][0], w)
        fit_p = pool(out[(image, MLP, "single")][1], out[(text, MLP, "single")][1], w)
        out[(pair, "late fusion", "fusion")] = (test_p, fit_p, y_fit, {"image_weight": w})
    if "attention" in fusions:
        dims = (fold.sets[image][0].shape[1], fold.sets[text][0].shape[1])
        f, test, fit_x = _network(fold, partial(_gated, *dims, k), [image, text], options)
        test_p = predict_proba(f.net, test)
        extra = {
            "width": f.width,
            "weight_decay": f.weight_decay,
            "mean_image_gate": float(f.net.gate.mean()),
        }
        out[(pair, "attention fusion", "fusion")] = (test_p, predict_proba(f.net, fit_x), y_fit, extra)
    return out


def _gated(d_image: int, d_text: int, n_classes: int, width: int) -> GatedFusion:
    return GatedFusion(d_image, d_text, n_classes, width)


def cross_validate(
    *,
    blocks: dict[str, np.ndarray],
    captions: list[str] | None,
    y: np.ndarray,
    n_classes: int,
    options: ClassifyOptions,
    say: Callable[[str], None] = _say,
) -> list[Row]:
    """Stratified k-fold scores of the majority class, every feature set's baselines and networks,
    and every fusion; each row's out-of-fold probabilities in ``probs``."""
    fusions = parse_list(options.fusion, allowed=FUSIONS, option="--fusion")
    pair = f"image + text ({options.text})"
    splitter = StratifiedKFold(n_splits=options.folds, shuffle=True, random_state=options.seed)
    rows: dict[tuple, Row] = {}
    for k, (train, test) in enumerate(splitter.split(np.zeros(len(y)), y)):
        say(f"classify: fold {k + 1}/{options.folds}")
        fit, val = inner_rows(y[train], val_fraction=options.val_fraction, seed=options.seed)
        sets = fold_sets(blocks, captions, train, test, pair=pair)
        fold = Fold(sets, y[train], y[test], fit, val, n_classes, options.seed)
        majority = np.eye(n_classes)[int(np.bincount(y[train], minlength=n_classes).argmax())]
        outcomes = {
            ("—", "majority class", "baseline"): (
                np.tile(majority, (len(test), 1)),
                np.tile(majority, (len(train), 1)),
                y[train],
                {},
            )
        }
        for name in sets:
            outcomes.update(baseline_outcomes(fold, name, options))
        outcomes.update(network_outcomes(fold, [s for s in sets if s != pair], pair, fusions, options))
        for key, (test_p, train_p, train_y, extra) in outcomes.items():
            row = rows.setdefault(key, Row(*key, probs=np.zeros((len(y), n_classes))))
            row.probs[test] = test_p
            row.test.append(score(y[test], test_p, METRICS))
            row.train.append(score(train_y, train_p, METRICS))
            for name, value in extra.items():
                row.extra.setdefault(name, []).append(value)
    return list(rows.values())


def _unavailable(data: CorpusData, *, text: str, fusion: Sequence[str]) -> list[Row]:
    """Rows for what the corpus cannot give, so the table shows them instead of hiding them."""
    missing = {}
    if not data.has_images:
        missing["image"] = "the corpus has no image embeddings"
    if not data.has_texts:
        missing["text (clip)"] = "the corpus has no caption embeddings"
    if not any(c and c.strip() for c in data.captions):
        missing["text (tfidf)"] = "the corpus has no captions"
    rows = [
        Row(name, model, "baseline", unavailable=why)
        for name, why in missing.items()
        for model in (LOGISTIC, TREES)
    ]
    rows += [Row(name, MLP, "single", unavailable=why) for name, why in missing.items()]
    pair = f"image + text ({text})"
    if "image" in missing or f"text ({text})" in missing:
        why = "needs both image and text features"
        rows += [Row(pair, model, "baseline", unavailable=why) for model in (LOGISTIC, TREES)]
        names = {"early": "early fusion (mlp)", "late": "late fusion", "attention": "attention fusion"}
        rows += [Row(pair, names[f], "fusion", unavailable=why) for f in fusion]
    return rows


def run_classify(
    data: CorpusData, options: ClassifyOptions, *, out: str | Path, say: Callable[[str], None] = _say
) -> dict:
    """Cross-validate every feature set and fusion beside the baselines; write the report."""
    options.check()
    fusions = parse_list(options.fusion, allowed=FUSIONS, option="--fusion")
    data, note = drop_small_masks(data, options.min_mask_area)
    labels = class_labels(data, label=options.label, folds=options.folds)
    labels.notes += [note] if note else []
    rows = labels.rows
    blocks = {}
    if data.has_images:
        blocks["image"] = data.image_vectors[rows]
    if data.has_texts:
        blocks["text (clip)"] = data.text_vectors[rows]
    if data.has_masks:
        blocks["mask"] = data.mask_vectors[rows]
    captions = [data.captions[i] or "" for i in rows]
    has_captions = any(c.strip() for c in captions)
    if not blocks and not has_captions:
        raise TuwenError(f"corpus {data.name!r} has neither embeddings nor captions to classify from")
    say(f"classify: {len(rows)} items, {len(labels.classes)} classes, {options.folds} folds")
    with threadpool_limits(limits=1):  # small fits: one BLAS thread is several times faster on shared cores
        results = cross_validate(
            blocks=blocks,
            captions=captions if has_captions else None,
            y=labels.y,
            n_classes=len(labels.classes),
            options=options,
            say=say,
        )
    results += _unavailable(data, text=options.text, fusion=fusions)
    results.sort(key=lambda r: KIND_ORDER[r.kind])
    return write_report(out=out, data=data, labels=labels, rows=results, options=options)


def judge_classify(rows: Sequence[Row], labels: Labels, folds: int) -> Verdict:
    """Chance is the share of the most frequent class (what always answering it scores in each fold)."""
    counts = np.bincount(labels.y)
    return judge(
        rows,
        metric="accuracy",
        chance=float(counts.max() / counts.sum()),
        n_eval=len(labels.y) // folds,
        spread_name="fold",
        model_kinds=("single", "fusion"),
        fusion=("fusion", "single"),
    )


def write_report(
    *, out: str | Path, data: CorpusData, labels: Labels, rows: list[Row], options: ClassifyOptions
) -> dict:
    report = Report(out, kind="classify", title=f"Classifying {options.label!r} in {data.name}")
    counts = np.bincount(labels.y, minlength=len(labels.classes))
    shares = ", ".join(f"{c}: {n}" for c, n in zip(labels.classes, counts, strict=True))
    report.note(
        "Data",
        f"{len(labels.y)} items, {len(labels.classes)} classes ({shares}); the majority class is "
        f"{counts.max() / counts.sum():.3f} of the items. Stratified {options.folds}-fold cross-validation, "
        f"seed {options.seed}; the networks validate on {options.val_fraction:.0%} of each training fold; "
        f"the trees see each set's first {TREE_AXES} SVD axes. " + " ".join(labels.notes),
    )
    for r in rows:
        if r.unavailable:
            report.note(f"{r.model} on {r.features}: unavailable", r.unavailable)
    table = [r.cells(METRICS, "folds") for r in rows]
    report.table(
        "results",
        table,
        title="Cross-validated scores (mean ± std over folds)",
        caption="Baselines first. Train accuracy is on the rows each model was fitted on.",
    )
    verdict = judge_classify(rows, labels, options.folds)
    for sentence in verdict.sentences:
        report.note("Verdict", sentence)
    top = best(rows, ("single", "fusion")) or best(rows, ("baseline",))
    report.figure(
        "confusion_matrix",
        _confusion_figure(top, labels),
        title=f"Confusion matrix: {top.name}",
        caption="Out-of-fold predictions of the best model (rows: true class, columns: predicted).",
    )
    payload = {
        "corpus": data.name,
        "model_id": data.model_id,
        "settings": asdict(options),
        "classes": labels.classes,
        "class_counts": counts.tolist(),
        "results": [r.to_json(METRICS) for r in rows],
        "best": top.name,
        "verdict": verdict.to_json(),
    }
    path = report.finish(payload)
    return {"report": path, "out": report.out, "table": table, "verdict": verdict, "outcomes": rows}


def _confusion_figure(outcome: Row, labels: Labels):
    use_cjk_font()
    matrix = confusion_matrix(labels.y, outcome.probs.argmax(axis=1), labels=range(len(labels.classes)))
    size = min(3 + 0.6 * len(labels.classes), 12)
    fig, ax = plt.subplots(figsize=(size, size))
    ConfusionMatrixDisplay(matrix, display_labels=labels.classes).plot(
        ax=ax, colorbar=False, xticks_rotation=45
    )
    ax.set_title(outcome.name, fontsize=10)
    return fig
