"""Words that name a cluster: class-based TF-IDF (BERTopic's c-TF-IDF) over jieba tokens.

Each cluster's captions are joined into one document; a word's weight in cluster ``c`` is its
share of the cluster's words times ``log(1 + A / f)``, where ``A`` is the mean number of words per
cluster and ``f`` the word's count over all clusters: frequent in this cluster, rare elsewhere.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import numpy as np
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.preprocessing import normalize

from analysis.features import jieba_words

HASHTAG = re.compile(r"#([^#\s，,。！？!?、；;：:]+)")
_NOISE = re.compile(r"^[\W\d_]+$")  # punctuation, digits, dates like 05-17, emoji
# Function words and filler of Chinese social posts, plus the commonest English ones.
_STOP_TEXT = """
    的 了 是 在 和 与 及 或 就 都 也 还 又 很 太 更 最 这 那 这个 那个 这些 那些 一个 一 个 件 条 顶 双 款
    我 你 他 她 它 我们 你们 他们 大家 自己 什么 怎么 如何 为什么 吗 呢 吧 啊 呀 哦 哈 哈哈 嘛 啦 哟 噢
    有 没有 没 不 不是 被 把 让 给 对 从 向 到 上 下 里 中 吧 得 地 着 过 会 能 要 想 可以 可能 因为 所以 但是
    这件 这条 这顶 这双 这款 一件 一条 一顶 一双 一款 入手
    而且 然后 如果 虽然 今天 今日 分享 一下 真的 非常 超级 超 好 啦 呀 之 其 等 等等 以及 还是 就是 只是
    the a an and or of to in on for with is are be this that it its at by from as my your our"""
STOP_WORDS = frozenset(_STOP_TEXT.split())


def hashtags(caption: str | None) -> list[str]:
    """The ``#tags`` of a caption, in order, without the ``#`` (``#夏日穿搭#`` style too)."""
    return [t.strip() for t in HASHTAG.findall(caption or "") if t.strip()]


def caption_tokens(caption: str | None) -> list[str]:
    """jieba words of a caption (hashtags included as words), stop words and noise removed."""
    words = (w.strip().lower() for w in jieba_words((caption or "").replace("#", " ")))
    # single characters dropped, as BERTopic's default CountVectorizer does (token pattern \w\w+)
    return [w for w in words if len(w) > 1 and w not in STOP_WORDS and not _NOISE.match(w)]


def class_tfidf(
    docs_tokens: Sequence[Sequence[str]], labels: Sequence[int]
) -> tuple[list[int], list[str], np.ndarray]:
    """c-TF-IDF of the classes in ``labels`` (``-1``, HDBSCAN's noise, is left out).

    Returns (classes, vocabulary, weights[class, word])."""
    classes = sorted({int(c) for c in labels if c >= 0})
    counts: dict[int, Counter] = {c: Counter() for c in classes}
    for tokens, label in zip(docs_tokens, labels, strict=True):
        if label >= 0:
            counts[int(label)].update(tokens)
    vocabulary = sorted(set().union(*counts.values())) if counts else []
    column = {w: j for j, w in enumerate(vocabulary)}
    tf = np.zeros((len(classes), len(vocabulary)))
    for i, c in enumerate(classes):
        for word, n in counts[c].items():
            tf[i, column[word]] = n
    if not vocabulary:
        return classes, vocabulary, tf
    words_per_class = tf.sum(axis=1).mean()
    idf = np.log(1 + words_per_class / tf.sum(axis=0))
    share = tf / np.maximum(tf.sum(axis=1, keepdims=True), 1)
    return classes, vocabulary, share * idf


def top_keywords(
    docs_tokens: Sequence[Sequence[str]], labels: Sequence[int], *, top: int = 8
) -> dict[int, list[tuple[str, float]]]:
    """The ``top`` words of each class by c-TF-IDF weight (ties broken by the word, so stable).

    Unlike BERTopic, a word found in every class (with two or more) is left out: it names none."""
    classes, vocabulary, weights = class_tfidf(docs_tokens, labels)
    everywhere = (weights > 0).all(axis=0) if len(classes) > 1 else np.zeros(len(vocabulary), dtype=bool)
    out: dict[int, list[tuple[str, float]]] = {}
    for i, c in enumerate(classes):
        candidates = [j for j in range(len(vocabulary)) if not everywhere[j]]
        order = sorted(candidates, key=lambda j: (-weights[i, j], vocabulary[j]))
        out[c] = [(vocabulary[j], round(float(weights[i, j]), 5)) for j in order[:top] if weights[i, j] > 0]
    return out


def tag_vectors(
    tag_lists: Sequence[Sequence[str]], *, seed: int, dims: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Posts as TF-IDF vectors of their hashtags (each tag one term), L2-normalised; with more than
    ``dims`` distinct tags, reduced by truncated SVD (LSA) first. Returns (vectors, has_tags mask)."""
    mask = np.array([len(t) > 0 for t in tag_lists], dtype=bool)
    if not mask.any():
        return np.zeros((len(tag_lists), 1), dtype=np.float32), mask
    tfidf = TfidfVectorizer(analyzer=lambda tags: list(tags), sublinear_tf=True)
    matrix = tfidf.fit_transform([list(t) for t in tag_lists])
    if matrix.shape[1] > dims:
        dense = TruncatedSVD(n_components=dims, random_state=seed).fit_transform(matrix)
    else:
        dense = matrix.toarray()
    vectors = normalize(dense).astype(np.float32)
    vectors[~mask] = 0
    return vectors, mask
