"""``tuwen analyze clusters``: style clusters of a corpus from its stored embeddings, BERTopic's shape.

Each step is a replaceable part working on arrays: select the vectors (image, text or both;
captions or hashtags) → reduce (UMAP or none) → choose k (silhouette sweep on a sample, for the
raw and the reduced vectors) → cluster (k-means or HDBSCAN) → name (c-TF-IDF keywords) → per-period
shares. ``cluster_corpus`` returns the numbers; ``analysis.clusters_report`` draws them.

``--text tags`` represents a post by the TF-IDF of its hashtags (LSA-reduced) instead of
re-encoding the tags with the model: it needs no model at analysis time (the corpus may have been
encoded with a checkpoint that is gone), hashtags are a closed vocabulary posters pick so exact
matches are what they mean, the keywords then name clusters with the same tags, and long or
repeated post texts (what made whole-post clusters lopsided in the study) no longer weigh in.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
from dataclasses import asdict, dataclass, field
from datetime import date, datetime

import numpy as np
from sklearn.cluster import HDBSCAN, KMeans, MiniBatchKMeans
from sklearn.metrics import silhouette_score

from analysis.data import CorpusData, large_masks
from analysis.keywords import caption_tokens, hashtags, tag_vectors, top_keywords
from analysis.options import ClusterOptions, parse_k
from common.errors import TuwenError

NOISE = -1  # HDBSCAN's label for points in no cluster
# umap-learn's modules whose numba kernels it compiles without ``cache=True``: ~11 s of compiling
# in every process that reduces (each ``tuwen analyze clusters``, each demo), ~1 s from the cache.
UMAP_KERNEL_MODULES = ("umap.umap_", "umap.layouts", "umap.utils", "umap.distances", "umap.sparse")


@dataclass
class ClusterResult:
    options: ClusterOptions
    rows: np.ndarray  # positions in the corpus of the clustered items
    labels: np.ndarray  # cluster per row (0 = largest; -1 = noise with HDBSCAN)
    space: np.ndarray  # the vectors clustered (reduced or raw), row-aligned with ``rows``
    raw: np.ndarray  # the vectors before reduction
    ks: list[int] = field(default_factory=list)
    silhouette_raw: list[float | None] = field(default_factory=list)
    silhouette_reduced: list[float | None] = field(default_factory=list)
    k: int = 0
    silhouette: float | None = None
    keywords: dict[int, list[tuple[str, float]]] = field(default_factory=dict)
    periods: list[str] = field(default_factory=list)
    shares: np.ndarray | None = None  # [period, cluster index in ``clusters``]
    clusters: list[int] = field(default_factory=list)  # cluster ids in column order (noise last)
    notes: list[str] = field(default_factory=list)

    def sizes(self) -> dict[int, int]:
        return {c: int((self.labels == c).sum()) for c in self.clusters}

    def name(self, cluster: int, words: int = 3) -> str:
        if cluster == NOISE:
            return "noise"
        kw = " ".join(w for w, _ in self.keywords.get(cluster, [])[:words])
        return f"C{cluster}" + (f" {kw}" if kw else "")

    def slopes(self) -> dict[int, float]:
        """Share change per period (percentage points, least squares) of each cluster."""
        if self.shares is None or len(self.periods) < 2:
            return {}
        x = np.arange(len(self.periods))
        return {c: float(np.polyfit(x, 100 * self.shares[:, j], 1)[0]) for j, c in enumerate(self.clusters)}


def select_vectors(
    data: CorpusData, *, modality: str, text: str, seed: int, keep: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The vectors to cluster and the corpus positions they belong to (items that have them, among
    ``keep``)."""
    parts, masks = [], [] if keep is None else [keep]
    if modality == "mask":
        if not data.has_masks:
            raise TuwenError(
                f"--modality mask: corpus {data.name} has no mask embeddings (give it a `mask` column and "
                "run `tuwen corpus encode` again)"
            )
        parts.append(data.mask_vectors)
        masks.append(data.mask_mask)
    if modality in ("image", "both"):
        if not data.has_images:
            raise TuwenError(
                f"--modality {modality}: corpus {data.name} has no image embeddings{_hint(data)}"
            )
        parts.append(data.image_vectors)
        masks.append(data.image_mask)
    if modality in ("text", "both"):
        if text == "tags":
            vectors, mask = tag_vectors([hashtags(c) for c in data.captions], seed=seed)
            if not mask.any():
                raise TuwenError(f"--text tags: no caption of corpus {data.name} has a #hashtag")
        elif not data.has_texts:
            raise TuwenError(
                f"--modality {modality}: corpus {data.name} has no caption embeddings{_hint(data)}"
            )
        else:
            vectors, mask = data.text_vectors, data.text_mask
        parts.append(vectors)
        masks.append(mask)
    mask = np.logical_and.reduce(masks)
    rows = np.flatnonzero(mask)
    if len(rows) < 3:
        raise TuwenError(
            f"--modality {modality}: only {len(rows)} items of corpus {data.name} have it; need 3"
        )
    # concatenated unit vectors divided by sqrt(parts) stay unit vectors: each modality weighs the same
    x = np.concatenate([np.asarray(p, dtype=np.float32)[rows] for p in parts], axis=1) / np.sqrt(len(parts))
    return x.astype(np.float32), rows


def _hint(data: CorpusData) -> str:
    have = [m for m, ok in (("image", data.has_images), ("text", data.has_texts)) if ok]
    return f" (it has: {', '.join(have)}; use --modality {have[0]})" if have else " (is it encoded?)"


def reduce_vectors(x: np.ndarray, *, dims: int, seed: int, fit_sample: int) -> np.ndarray:
    """UMAP to ``dims`` dimensions (cosine metric, BERTopic's settings), fitted on at most
    ``fit_sample`` items and applied to the rest; deterministic for ``seed``."""
    umap = umap_with_cached_kernels()
    n_neighbors = max(2, min(15, len(x) - 1))
    dims = max(1, min(dims, len(x) - 2))
    reducer = umap.UMAP(
        n_neighbors=n_neighbors, n_components=dims, min_dist=0.0, metric="cosine", random_state=seed, n_jobs=1
    )
    if len(x) <= fit_sample:
        return reducer.fit_transform(x).astype(np.float32)
    fit_rows = np.sort(np.random.default_rng(seed).choice(len(x), fit_sample, replace=False))
    reducer.fit(x[fit_rows])
    out = reducer.transform(x).astype(np.float32)
    out[fit_rows] = reducer.embedding_.astype(np.float32)
    return out


@functools.cache
def umap_with_cached_kernels():
    """``umap``, its numba kernels set to keep what they compile on disk (numba's own cache, as
    ``cache=True`` would: next to umap's sources, or numba's user-wide folder where those are
    read-only; keyed on the sources and the CPU). Imported on use only: heavy, and optional
    (``--reduce none``)."""
    import umap
    from numba.core.dispatcher import Dispatcher

    for name in UMAP_KERNEL_MODULES:
        module = importlib.import_module(name)
        for kernel in vars(module).values():
            if isinstance(kernel, Dispatcher) and kernel.__module__ == name:
                with contextlib.suppress(RuntimeError):  # no writable folder: compiled each time
                    kernel.enable_caching()
    return umap


def compile_umap_kernels() -> None:
    """One small reduction, so that numba compiles UMAP's kernels for float32 vectors into its disk
    cache now (``make install`` and the image build call it: 18 s once on a 2-core Xeon,
    pynndescent's kernels included) rather than in a user's first ``analyze clusters`` or demo."""
    x = np.random.default_rng(0).standard_normal((80, 16)).astype(np.float32)
    reduce_vectors(x, dims=2, seed=0, fit_sample=len(x))


def kmeans_labels(x: np.ndarray, *, k: int, seed: int, n_init: int = 4) -> np.ndarray:
    if len(x) > 20000:  # full k-means over 50k x 512 costs minutes for nothing the batches miss
        model = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=n_init, batch_size=4096)
    else:
        model = KMeans(n_clusters=k, random_state=seed, n_init=n_init)
    return model.fit_predict(x)


def silhouette_sweep(x: np.ndarray, *, ks: list[int], seed: int, sample: int) -> list[float | None]:
    """Silhouette of k-means with each k, fitted and scored on one seeded sample of ``x``."""
    rows = np.arange(len(x))
    if len(x) > sample:
        rows = np.sort(np.random.default_rng(seed).choice(len(x), sample, replace=False))
    xs = x[rows]
    scores: list[float | None] = []
    for k in ks:
        if k >= len(xs):
            scores.append(None)
            continue
        labels = kmeans_labels(xs, k=k, seed=seed, n_init=2)
        scores.append(float(silhouette_score(xs, labels)) if len(set(labels)) > 1 else None)
    return scores


def hdbscan_labels(x: np.ndarray, *, min_cluster_size: int) -> np.ndarray:
    return HDBSCAN(min_cluster_size=min_cluster_size, copy=True).fit_predict(x)


def relabel_by_size(labels: np.ndarray) -> np.ndarray:
    """Cluster 0 is the largest (ties: the one seen first); noise stays -1."""
    ids, first, counts = np.unique(labels[labels != NOISE], return_index=True, return_counts=True)
    order = sorted(range(len(ids)), key=lambda i: (-counts[i], first[i]))
    mapping = {int(ids[i]): new for new, i in enumerate(order)}
    return np.array([mapping.get(int(v), NOISE) for v in labels], dtype=np.int64)


def period_of(value, by: str) -> tuple[tuple, str] | None:
    """(sort key, label) of a time's month, ISO week or day; integers (day numbers) by 30/7/1."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        span = {"month": 30, "week": 7, "day": 1}[by]
        start = int(value) // span * span
        return (start,), (f"day {start}" if span == 1 else f"days {start}–{start + span - 1}")
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    if isinstance(value, datetime):
        value = value.date()
    if not isinstance(value, date):
        return None
    if by == "month":
        return (value.year, value.month), f"{value.year}-{value.month:02d}"
    if by == "week":
        year, week, _ = value.isocalendar()
        return (year, week), f"{year}-W{week:02d}"
    return (value.toordinal(),), value.isoformat()


def period_shares(
    times: list, labels: np.ndarray, clusters: list[int], *, by: str
) -> tuple[list[str], np.ndarray]:
    """Share of each cluster among the items of each period (rows sum to 1), periods in time order."""
    keyed = [period_of(t, by) for t in times]
    periods = sorted({k for k in keyed if k is not None})
    index = {p: i for i, p in enumerate(periods)}
    column = {c: j for j, c in enumerate(clusters)}
    counts = np.zeros((len(periods), len(clusters)))
    for key, label in zip(keyed, labels, strict=True):
        if key is not None:
            counts[index[key], column[int(label)]] += 1
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    return [label for _, label in periods], shares


def cluster_corpus(data: CorpusData, *, options: ClusterOptions) -> ClusterResult:
    """The whole study's numbers (no figures); see the module docstring for the steps."""
    options.check()
    keep, note = large_masks(data, options.min_mask_area)
    raw, rows = select_vectors(
        data, modality=options.modality, text=options.text, seed=options.seed, keep=keep
    )
    ks = parse_k(options.k, n=len(rows))
    reduced = None
    if options.reduce == "umap":
        reduced = reduce_vectors(
            raw, dims=options.umap_dims, seed=options.seed, fit_sample=options.umap_fit_sample
        )
    space = reduced if reduced is not None else raw
    result = ClusterResult(
        options=options, rows=rows, labels=np.zeros(len(rows), np.int64), space=space, raw=raw
    )
    if options.method == "kmeans" or options.k == "auto":
        sweep = {"sample": options.sweep_sample, "seed": options.seed, "ks": ks}
        result.ks = ks
        result.silhouette_raw = silhouette_sweep(raw, **sweep)
        if reduced is not None:
            result.silhouette_reduced = silhouette_sweep(reduced, **sweep)
    _fit(result, options)
    _describe(result, data, options)
    result.notes += [note] if note else []
    return result


def _fit(result: ClusterResult, options: ClusterOptions) -> None:
    space = result.space
    if options.method == "kmeans":
        curve = result.silhouette_reduced if options.reduce == "umap" else result.silhouette_raw
        scored = [(s, k) for k, s in zip(result.ks, curve, strict=True) if s is not None]
        k = max(scored, key=lambda sk: (sk[0], -sk[1]))[1] if scored else result.ks[0]
        labels = kmeans_labels(space, k=k, seed=options.seed)
    else:
        size = options.min_cluster_size or max(10, round(0.01 * len(space)))
        labels = hdbscan_labels(space, min_cluster_size=min(size, len(space)))
        if (labels == NOISE).all():
            raise TuwenError(f"hdbscan found no cluster with --min-cluster-size {size}: try a smaller one")
    result.labels = relabel_by_size(labels)
    result.k = int(result.labels.max()) + 1
    clustered = result.labels != NOISE
    sample = np.flatnonzero(clustered)
    if result.k > 1:
        rng = np.random.default_rng(options.seed)
        if len(sample) > options.sweep_sample:
            sample = np.sort(rng.choice(sample, options.sweep_sample, replace=False))
        result.silhouette = float(silhouette_score(space[sample], result.labels[sample]))
    result.clusters = list(range(result.k)) + ([NOISE] if (~clustered).any() else [])


def _describe(result: ClusterResult, data: CorpusData, options: ClusterOptions) -> None:
    captions = [data.captions[i] for i in result.rows]
    if any(captions):
        tokens = [hashtags(c) if options.text == "tags" else caption_tokens(c) for c in captions]
        result.keywords = top_keywords(tokens, result.labels, top=options.keywords)
    else:
        result.notes.append("The corpus has no captions: clusters are named by number only.")
    times = [data.times[i] for i in result.rows]
    if any(period_of(t, options.by) for t in times):
        result.periods, result.shares = period_shares(times, result.labels, result.clusters, by=options.by)
    else:
        result.notes.append("No item has a readable time: per-period shares are left out.")


def exemplar_rows(result: ClusterResult, *, per_cluster: int) -> dict[int, list[int]]:
    """Per cluster, the rows (into ``result.rows``) nearest its centre in the clustered space."""
    out = {}
    for c in result.clusters:
        if c == NOISE:
            continue
        members = np.flatnonzero(result.labels == c)
        centre = result.space[members].mean(axis=0)
        distance = np.linalg.norm(result.space[members] - centre, axis=1)
        out[c] = members[np.argsort(distance, kind="stable")[:per_cluster]].tolist()
    return out


def summary(result: ClusterResult) -> dict:
    """What ``report.json`` holds about the clustering (plain JSON types)."""
    sizes = result.sizes()
    slopes = result.slopes()
    return {
        "options": asdict(result.options),
        "items_clustered": len(result.rows),
        "k": result.k,
        "silhouette": result.silhouette,
        "sweep": {"k": result.ks, "raw": result.silhouette_raw, "reduced": result.silhouette_reduced},
        "clusters": [
            {
                "cluster": c,
                "name": result.name(c),
                "size": sizes[c],
                "keywords": [w for w, _ in result.keywords.get(c, [])],
                "share_slope_points_per_period": slopes.get(c),
            }
            for c in result.clusters
        ],
        "periods": result.periods,
        "shares": (
            {
                p: {str(c): round(float(s), 5) for c, s in zip(result.clusters, row, strict=True)}
                for p, row in zip(result.periods, result.shares, strict=True)
            }
            if result.shares is not None
            else {}
        ),
        "notes": result.notes,
    }
