"""The clusters study's report folder: figures, tables, ``assignments.csv``, ``report.json``,
``index.html``."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from analysis.clusters import (
    NOISE,
    ClusterOptions,
    ClusterResult,
    cluster_corpus,
    exemplar_rows,
    reduce_vectors,
    summary,
)
from analysis.data import CorpusData
from analysis.figures import cluster_colours, draw_cell, thumbnail
from analysis.report import NO_CJK_FONT, Report, use_cjk_font

STACK_CLUSTERS = 12  # clusters drawn by name in the stacked shares; the rest are one grey "other"
MAP_POINTS = 3000


def run_clusters(data: CorpusData, *, out: str | Path, options: ClusterOptions, max_grids: int = 24) -> Path:
    """Cluster ``data`` and write the whole report under ``out``; returns ``report.json``'s path."""
    result = cluster_corpus(data, options=options)
    return write_report(data, result, out=out, max_grids=max_grids)


def write_report(data: CorpusData, result: ClusterResult, *, out: str | Path, max_grids: int = 24) -> Path:
    has_cjk = use_cjk_font()
    o = result.options
    reduction = f"after UMAP to {o.umap_dims}-d" if o.reduce == "umap" else "no reduction"
    report = Report(out, kind="clusters", title=f"Style clusters of {data.name} ({o.modality}, {o.method})")
    report.note(
        "What this is",
        f"{len(result.rows)} of {len(data)} items with {_space_name(o)} were clustered into "
        f"{result.k} clusters ({o.method}, {reduction}, seed {o.seed}). "
        "Cluster 0 is the largest; names are each cluster's top c-TF-IDF keywords.",
    )
    for line in result.notes + ([] if has_cjk else [NO_CJK_FONT]):
        report.note("Note", line)
    if result.ks:
        report.figure(
            "silhouette",
            silhouette_figure(result),
            title="Silhouette by number of clusters",
            caption="Higher is better separated. k-means on a seeded sample, for the raw embeddings and "
            "for the reduced ones; the dashed line marks the k used.",
        )
    report.figure(
        "map",
        map_figure(result),
        title="2-D map of the items, coloured by cluster",
        caption=f"UMAP of the raw vectors to 2-D (at most {MAP_POINTS} items drawn); "
        "nearby points are similar.",
    )
    report.table("clusters", cluster_rows(result), title="Clusters: size, keywords and trend")
    if result.shares is not None:
        report.figure(
            "shares_stacked",
            shares_figure(result),
            title=f"Share of each cluster per {o.by}",
            caption="Each bar is one period's items; a rising band is a style gaining share.",
        )
        report.figure(
            "shares_top5",
            top5_figure(result),
            title=f"The five largest clusters of each {o.by}",
            caption="Read across a row: which styles led that period, with their share of its items.",
        )
        report.table("shares", share_rows(result), title=f"Per-{o.by} shares (percent)")
    grids = exemplar_rows(result, per_cluster=o.exemplars)
    for c in list(grids)[:max_grids]:
        report.figure(
            f"exemplars_C{c}",
            exemplar_figure(data, result, c, grids[c]),
            title=f"{result.name(c)}: the items nearest the centre",
            caption=f"{int((result.labels == c).sum())} items in this cluster.",
        )
    if len(grids) > max_grids:
        report.note("Exemplars", f"Grids drawn for the {max_grids} largest of {len(grids)} clusters.")
    write_assignments(data, result, Path(out) / "assignments.csv")
    return report.finish(
        {"corpus": data.name, "model_id": data.model_id, **summary(result), "assignments": "assignments.csv"}
    )


def _space_name(o: ClusterOptions) -> str:
    text = "hashtags" if o.text == "tags" else "caption"
    return {
        "image": "an image embedding",
        "text": f"a {text} vector",
        "both": f"an image and a {text} vector",
        "mask": "a masked-image embedding",
    }[o.modality]


def silhouette_figure(result: ClusterResult):
    curves = [("raw embeddings", result.silhouette_raw)]
    if result.silhouette_reduced:
        curves.append((f"after UMAP to {result.options.umap_dims}-d", result.silhouette_reduced))
    fig, axes = plt.subplots(1, len(curves), figsize=(5.5 * len(curves), 3.8), squeeze=False)
    for ax, (label, scores) in zip(axes[0], curves, strict=True):
        ks = [k for k, s in zip(result.ks, scores, strict=True) if s is not None]
        ys = [s for s in scores if s is not None]
        ax.plot(ks, ys, marker="o", ms=3)
        ax.axvline(result.k, color="crimson", ls="--", label=f"k used = {result.k}")
        ax.set(title=label, xlabel="number of clusters k", ylabel="silhouette (sampled)")
        ax.grid(alpha=0.3)
        ax.legend(loc="best")
    fig.tight_layout()
    return fig


def map_figure(result: ClusterResult):
    rng = np.random.default_rng(result.options.seed)
    rows = np.arange(len(result.rows))
    if len(rows) > MAP_POINTS:
        rows = np.sort(rng.choice(rows, MAP_POINTS, replace=False))
    xy = reduce_vectors(result.raw[rows], dims=2, seed=result.options.seed, fit_sample=MAP_POINTS)
    colours = cluster_colours(result.clusters)
    fig, ax = plt.subplots(figsize=(8, 6.5))
    for c in result.clusters:
        members = result.labels[rows] == c
        ax.scatter(xy[members, 0], xy[members, 1], s=8, color=colours[c], label=result.name(c, 2), alpha=0.8)
    if len(result.clusters) <= 20:
        ax.legend(fontsize=7, markerscale=2, loc="center left", bbox_to_anchor=(1.0, 0.5), title="cluster")
    else:  # too many for a legend: write each cluster's number at its centre
        for c in result.clusters:
            members = result.labels[rows] == c
            if members.any() and c != NOISE:
                ax.text(*xy[members].mean(axis=0), f"C{c}", fontsize=7, ha="center")
    ax.set(title="Items on a UMAP 2-D map", xlabel="UMAP 1", ylabel="UMAP 2")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    return fig


def _stack_columns(result: ClusterResult) -> tuple[list[str], np.ndarray, list]:
    """Shares of the largest clusters by name, the rest summed as 'other'."""
    colours = cluster_colours(result.clusters)
    named = [c for c in result.clusters if c != NOISE][:STACK_CLUSTERS]
    cols = [result.clusters.index(c) for c in named]
    shares = result.shares[:, cols]
    labels, colour_list = [result.name(c, 2) for c in named], [colours[c] for c in named]
    rest = result.shares.sum(axis=1) - shares.sum(axis=1)
    if (rest > 1e-9).any():
        shares = np.column_stack([shares, rest])
        labels.append("other / noise")
        colour_list.append((0.75, 0.75, 0.75, 1.0))
    return labels, shares, colour_list


def shares_figure(result: ClusterResult):
    labels, shares, colours = _stack_columns(result)
    x = np.arange(len(result.periods))
    fig, ax = plt.subplots(figsize=(max(7, 0.45 * len(x) + 4), 4.8))
    bottom = np.zeros(len(x))
    for j, label in enumerate(labels):
        ax.bar(x, 100 * shares[:, j], bottom=100 * bottom, color=colours[j], label=label, width=0.85)
        bottom += shares[:, j]
    ax.set_xticks(x, result.periods, rotation=45 if len(x) > 8 else 0, ha="right" if len(x) > 8 else "center")
    ax.set(ylabel="share of the period's items (%)", xlabel=result.options.by, ylim=(0, 100))
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), title="cluster")
    fig.tight_layout()
    return fig


def top5_figure(result: ClusterResult):
    colours = cluster_colours(result.clusters)
    n = len(result.periods)
    fig, ax = plt.subplots(figsize=(11, 0.42 * n + 1.2))
    for i, row in enumerate(result.shares):
        order = np.argsort(-row, kind="stable")[:5]
        for rank, j in enumerate(order):
            c = result.clusters[j]
            ax.add_patch(plt.Rectangle((rank, n - 1 - i), 0.96, 0.9, color=colours[c], alpha=0.55))
            ax.text(
                rank + 0.04,
                n - 0.55 - i,
                f"{result.name(c, 2)}  {100 * row[j]:.0f}%",
                va="center",
                fontsize=8,
            )
    ax.set_xlim(0, 5)
    ax.set_ylim(0, n)
    ax.set_yticks(np.arange(n) + 0.45, list(reversed(result.periods)))
    ax.set_xticks(np.arange(5) + 0.48, [f"#{r + 1}" for r in range(5)])
    ax.set(xlabel="rank within the period (share of its items)", ylabel=result.options.by)
    for spine in ax.spines.values():
        spine.set_visible(False)
    fig.tight_layout()
    return fig


def exemplar_figure(data: CorpusData, result: ClusterResult, cluster: int, rows: list[int]):
    cols = 4
    lines = max(1, -(-len(rows) // cols))
    fig, axes = plt.subplots(
        lines, cols, figsize=(2.6 * cols, 3.4 * lines), squeeze=False, layout="constrained"
    )
    for ax in axes.flat:
        ax.axis("off")
    for ax, r in zip(axes.flat, rows, strict=False):
        ax.axis("on")
        position = int(result.rows[r])
        draw_cell(ax, image=thumbnail(data.image_paths[position]), caption=data.captions[position])
    fig.suptitle(result.name(cluster, 5), fontsize=11)
    return fig


def cluster_rows(result: ClusterResult) -> list[dict]:
    sizes, slopes, total = result.sizes(), result.slopes(), max(len(result.rows), 1)
    return [
        {
            "cluster": c,
            "size": sizes[c],
            "share_%": round(100 * sizes[c] / total, 1),
            "keywords": " ".join(w for w, _ in result.keywords.get(c, [])),
            "trend_points_per_period": "" if c not in slopes else round(slopes[c], 2),
        }
        for c in result.clusters
    ]


def share_rows(result: ClusterResult) -> list[dict]:
    return [
        {
            "period": p,
            **{
                result.name(c, 1): round(100 * float(s), 1) for c, s in zip(result.clusters, row, strict=True)
            },
        }
        for p, row in zip(result.periods, result.shares, strict=True)
    ]


def write_assignments(data: CorpusData, result: ClusterResult, path: Path) -> None:
    """One line per clustered item: id, position, cluster, its name, distance to the cluster centre."""
    centres = {c: result.space[result.labels == c].mean(axis=0) for c in result.clusters if c != NOISE}
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "position", "cluster", "cluster_name", "distance_to_centre", "time"])
        for r, position in enumerate(result.rows):
            c = int(result.labels[r])
            distance = "" if c == NOISE else f"{float(np.linalg.norm(result.space[r] - centres[c])):.4f}"
            t = data.times[position]
            writer.writerow(
                [data.ids[position], int(position), c, result.name(c), distance, "" if t is None else t]
            )
