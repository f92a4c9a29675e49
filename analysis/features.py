"""Feature and label builders shared by the supervised studies (``analyze trend``, ``analyze classify``).

- the lexical feature: a TF-IDF of jieba words, fitted on the training rows only, so no test
  caption's vocabulary or document frequency leaks into the features;
- attribute values turned into labels, with an error that names the field when they cannot be;
- the one-line verdict "does the best model beat the best baseline by more than the spread".
"""

from __future__ import annotations

import functools
import logging
import math
import re
from collections.abc import Sequence

import jieba
import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from common.errors import TuwenError

_WORD = re.compile(r"\w", re.UNICODE)
jieba.setLogLevel(logging.WARNING)  # its "Building prefix dict" chatter on first use


@functools.lru_cache(maxsize=100_000)
def _words(text: str) -> tuple[str, ...]:
    return tuple(w for w in jieba.lcut(text) if _WORD.search(w))


def jieba_words(text: str) -> list[str]:
    """jieba's words of ``text`` without punctuation and whitespace (Latin words are kept); cached, as
    cross-validation cuts the same captions once per fold."""
    return list(_words(text))


def tfidf_vectorizer(*, max_features: int = 2000):
    """An unfitted scikit-learn ``TfidfVectorizer`` over jieba words (sublinear tf, L2 rows)."""
    return TfidfVectorizer(
        tokenizer=jieba_words,
        token_pattern=None,
        lowercase=False,
        sublinear_tf=True,
        max_features=max_features,
    )


def tfidf_matrix(*, captions: Sequence[str | None], fit_rows: np.ndarray, max_features: int = 2000):
    """Sparse (CSR, float32) TF-IDF rows for every caption (empty for None), the vocabulary fitted on
    ``fit_rows``."""
    texts = [c or "" for c in captions]
    fit_texts = [texts[i] for i in np.asarray(fit_rows, dtype=int)]
    if not any(t.strip() for t in fit_texts):
        raise TuwenError("no captions in the training rows: the tfidf features need captions")
    vectorizer = tfidf_vectorizer(max_features=max_features)
    vectorizer.fit(fit_texts)
    return vectorizer.transform(texts).astype(np.float32).tocsr()


def tfidf_features(
    *, captions: Sequence[str | None], fit_rows: np.ndarray, max_features: int = 2000
) -> np.ndarray:
    """``tfidf_matrix`` as a dense array."""
    return tfidf_matrix(captions=captions, fit_rows=fit_rows, max_features=max_features).toarray()


def attribute_values(attributes: dict[str, list], *, field: str) -> list:
    """The values of ``field``, or an error listing the fields the corpus has."""
    if field not in attributes:
        known = ", ".join(sorted(attributes)) or "none"
        raise TuwenError(f"unknown field --label {field!r}: the corpus has the attributes {known}")
    return attributes[field]


def positive_flags(values: Sequence, *, field: str, threshold: float | None) -> np.ndarray:
    """1.0 / 0.0 per value (NaN where missing): 0/1 or boolean values as they are, numbers > ``threshold``.

    A numeric field with values other than 0 and 1 needs ``threshold``; a text field cannot be used.
    """
    out = np.full(len(values), np.nan)
    for i, value in enumerate(values):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        if isinstance(value, str):
            raise TuwenError(
                f"field {field!r} holds text ({value!r}): the label must be 0/1, boolean, "
                "or numeric with --threshold"
            )
        if threshold is not None:
            out[i] = float(float(value) > threshold)
        elif value in (0, 1):  # True/False compare equal to 1/0
            out[i] = float(value)
        else:
            raise TuwenError(
                f"field {field!r} is numeric with values other than 0/1 (e.g. {value!r}): "
                "give --threshold T to count values above T as positive"
            )
    if np.isnan(out).all():
        raise TuwenError(f"field {field!r} has no values")
    return out


def verdict(
    *,
    best_model: dict,
    best_baseline: dict,
    metric: str,
    spread_name: str,
    subjects: tuple[str, str] = ("best model", "best baseline"),
) -> str:
    """A sentence, generated from the numbers, saying whether the model's lead exceeds the spread.

    Each dict has ``name``, ``mean`` and ``std`` of ``metric``; "more than the spread" means the
    difference of the means is larger than the sum of the two standard deviations.
    """
    diff = best_model["mean"] - best_baseline["mean"]
    spread = best_model["std"] + best_baseline["std"]
    numbers = (
        f"{best_model['name']} ({metric} {best_model['mean']:.3f} ± {best_model['std']:.3f}) against "
        f"{best_baseline['name']} ({best_baseline['mean']:.3f} ± {best_baseline['std']:.3f})"
    )
    if diff > spread:
        return (
            f"The {subjects[0]} beats the {subjects[1]} by more than the {spread_name} spread: {numbers}, "
            f"a lead of {diff:.3f} > {spread:.3f} (sum of the standard deviations)."
        )
    return (
        f"The {subjects[0]} does NOT beat the {subjects[1]} by more than the {spread_name} spread: "
        f"{numbers}, a difference of {diff:+.3f} against a spread of {spread:.3f}; treat it as noise."
    )


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and population standard deviation, NaN-aware (NaN when no value is defined)."""
    arr = np.asarray(values, dtype=float)
    if np.isnan(arr).all():
        return float("nan"), float("nan")
    return float(np.nanmean(arr)), float(np.nanstd(arr))


def fmt_mean_std(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.3f} ± {std:.3f}"
