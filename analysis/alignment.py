"""``tuwen analyze alignment``: how well a corpus's captions and images find each other.

For any corpus of image–caption pairs (Chinese or English): a heatmap of the cosine similarity of
N sampled captions against their N images (matches on the diagonal), galleries of the top 5 both
ways with the true match framed, and R@1/5/10 and mean recall over every pair, computed by
``indexer.metrics`` exactly as ``tuwen eval`` does (each caption's one image; each image's caption).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.offsetbox import AnnotationBbox, OffsetImage

from analysis.data import CorpusData
from analysis.figures import draw_cell, thumbnail, wrap
from analysis.options import AlignmentOptions
from analysis.report import NO_CJK_FONT, Report, use_cjk_font
from common.errors import TuwenError
from indexer.metrics import chance_r5, metrics, rank, topk

MATCH = (0.1, 0.65, 0.2)  # the frame of a true match
TOP = 5


def pair_rows(data: CorpusData) -> np.ndarray:
    """Positions of the items that have both an image and a caption embedding."""
    if not data.has_images or not data.has_texts:
        missing = "image" if not data.has_images else "caption"
        raise TuwenError(
            f"corpus {data.name} has no {missing} embeddings: alignment needs image–caption pairs"
        )
    return np.flatnonzero(data.image_mask & data.text_mask)


def check_n(n: int, *, pairs: int, name: str, option: str = "--n", minimum: int = 2) -> None:
    if n < minimum:
        raise TuwenError(f"{option} must be at least {minimum} (got {n})")
    if n > pairs:
        raise TuwenError(f"{option} {n} is larger than the {pairs} image–caption pairs of corpus {name}")


def alignment_numbers(data: CorpusData, *, n: int, gallery: int, seed: int) -> dict:
    """Recall over all pairs, the heatmap sample and its similarities, the gallery samples."""
    rows = pair_rows(data)
    check_n(n, pairs=len(rows), name=data.name)
    check_n(gallery, pairs=len(rows), name=data.name, option="--gallery", minimum=1)
    texts, images = data.text_vectors[rows], data.image_vectors[rows]
    recall = metrics(rank(texts, images, list(range(len(rows)))))
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(len(rows), n, replace=False))
    sims = texts[sample] @ images[sample].T
    diagonal = np.diag(sims)
    off = sims[~np.eye(n, dtype=bool)]
    return {
        "rows": rows,
        "pairs": len(rows),
        "recall": recall,
        "chance_r5": chance_r5(len(rows), len(rows)),
        "sample": sample,
        "similarity": sims,
        "matched_mean": float(diagonal.mean()),
        "unmatched_mean": float(off.mean()),
        "rows_best_on_diagonal": int((sims.argmax(axis=1) == np.arange(n)).sum()),
        "gallery_texts": np.sort(rng.choice(len(rows), gallery, replace=False)),
        "gallery_images": np.sort(rng.choice(len(rows), gallery, replace=False)),
    }


def run_alignment(
    data: CorpusData, options: AlignmentOptions = AlignmentOptions(), *, out: str | Path
) -> Path:
    """Write the alignment report under ``out``; returns ``report.json``'s path."""
    options.check()
    n = options.n
    numbers = alignment_numbers(data, n=n, gallery=options.gallery, seed=options.seed)
    has_cjk = use_cjk_font()
    rows, recall = numbers["rows"], numbers["recall"]
    report = Report(out, kind="alignment", title=f"Image–caption alignment of {data.name}")
    report.note(
        "What this is",
        f"{numbers['pairs']} image–caption pairs embedded with {data.model_id or 'the corpus model'}. "
        "Mean recall: "
        f"caption→image {recall['t2i']['mr']:.1f} %, image→caption {recall['i2t']['mr']:.1f} % "
        f"(random ranking would give R@5 ≈ {numbers['chance_r5']['t2i']:.2f} %).",
    )
    if not has_cjk:
        report.note("Note", NO_CJK_FONT)
    report.table("recall", recall_rows(numbers), title="Recall over every pair (percent)")
    report.figure(
        "heatmap",
        heatmap_figure(data, numbers),
        title=f"Cosine similarity of {n} captions and their images",
        caption=f"Matched pairs on the diagonal (mean {numbers['matched_mean']:.3f}) against unmatched "
        f"(mean {numbers['unmatched_mean']:.3f}); {numbers['rows_best_on_diagonal']} of {n} captions are "
        "closest to their own image.",
    )
    report.figure(
        "gallery_caption_to_image",
        caption_gallery(data, numbers),
        title="Top 5 images for sampled captions",
        caption="Each row: a caption, then the five images nearest to it; the true image is framed green.",
    )
    report.figure(
        "gallery_image_to_caption",
        image_gallery(data, numbers),
        title="Top 5 captions for sampled images",
        caption="Each row: an image, then the five captions nearest to it; the true caption is framed green.",
    )
    sims = numbers["similarity"]
    return report.finish(
        {
            "corpus": data.name,
            "model_id": data.model_id,
            "pairs": numbers["pairs"],
            "recall": recall,
            "chance_r5": numbers["chance_r5"],
            "heatmap": {
                "ids": [data.ids[rows[i]] for i in numbers["sample"]],
                "cosine": np.round(sims, 4),
                "matched_mean": numbers["matched_mean"],
                "unmatched_mean": numbers["unmatched_mean"],
                "rows_best_on_diagonal": numbers["rows_best_on_diagonal"],
            },
            "options": asdict(options),
        }
    )


def recall_rows(numbers: dict) -> list[dict]:
    names = {"t2i": "caption → image", "i2t": "image → caption"}
    return [
        {
            "direction": names[d],
            "R@1": round(m["r1"], 2),
            "R@5": round(m["r5"], 2),
            "R@10": round(m["r10"], 2),
            "mean recall": round(m["mr"], 2),
            "R@5 at random": round(numbers["chance_r5"][d], 2),
        }
        for d, m in numbers["recall"].items()
    ]


def heatmap_figure(data: CorpusData, numbers: dict):
    rows, sample, sims = numbers["rows"], numbers["sample"], numbers["similarity"]
    n = len(sample)
    fig, ax = plt.subplots(figsize=(1.3 * n + 4, 1.0 * n + 2.2))
    shown = ax.imshow(sims, cmap="viridis")
    for i in range(n):
        for j in range(n):
            colour = "white" if sims[i, j] < sims.max() - 0.5 * np.ptp(sims) else "black"
            ax.text(j, i, f"{sims[i, j]:.2f}", ha="center", va="center", fontsize=8, color=colour)
        ax.add_patch(plt.Rectangle((i - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="crimson", lw=2))
    ax.set_yticks(range(n), [wrap(data.captions[rows[i]], width=16, lines=2) for i in sample], fontsize=8)
    thumbs = [thumbnail(data.image_paths[rows[i]], size=64) for i in sample]
    ax.set_xticks(range(n), ["" if t is not None else f"image {j + 1}" for j, t in enumerate(thumbs)])
    ax.xaxis.tick_top()
    for j, image in enumerate(thumbs):
        if image is not None:  # the image itself above its column
            box = AnnotationBbox(
                OffsetImage(image, zoom=0.8),
                (j, 1.0),
                xycoords=("data", "axes fraction"),
                box_alignment=(0.5, -0.15),
                frameon=False,
                annotation_clip=False,
            )
            ax.add_artist(box)
    ax.set(xlabel="images of the sampled pairs (red squares: each caption's own image)", ylabel="captions")
    fig.colorbar(shown, ax=ax, label="cosine similarity", shrink=0.8)
    fig.tight_layout()
    return fig


def _gallery(n_rows: int):
    fig, axes = plt.subplots(
        n_rows, TOP + 1, figsize=(2.3 * (TOP + 1), 3.1 * n_rows), squeeze=False, layout="constrained"
    )
    return fig, axes


def caption_gallery(data: CorpusData, numbers: dict):
    rows = numbers["rows"]
    texts, images = data.text_vectors[rows], data.image_vectors[rows]
    queries = numbers["gallery_texts"]
    top = topk(texts[queries], images, TOP)
    fig, axes = _gallery(len(queries))
    for line, (q, found) in enumerate(zip(queries, top, strict=True)):
        axes[line, 0].axis("off")
        axes[line, 0].text(
            0.5,
            0.5,
            "query caption:\n" + wrap(data.captions[rows[q]], width=12, lines=5),
            ha="center",
            va="center",
            fontsize=9,
            transform=axes[line, 0].transAxes,
        )
        for col, hit in enumerate(found, start=1):
            draw_cell(
                axes[line, col],
                image=thumbnail(data.image_paths[rows[hit]]),
                caption=f"#{col}" + (" √ true image" if hit == q else ""),
                frame=MATCH if hit == q else None,
            )
        if q not in found:
            axes[line, TOP].set_title(f"true image at rank {_rank_of(texts[q], images, q)}", fontsize=8)
    return fig


def image_gallery(data: CorpusData, numbers: dict):
    rows = numbers["rows"]
    texts, images = data.text_vectors[rows], data.image_vectors[rows]
    queries = numbers["gallery_images"]
    top = topk(images[queries], texts, TOP)
    fig, axes = _gallery(len(queries))
    for line, (q, found) in enumerate(zip(queries, top, strict=True)):
        draw_cell(axes[line, 0], image=thumbnail(data.image_paths[rows[q]]), caption="query image")
        for col, hit in enumerate(found, start=1):
            ax = axes[line, col]
            ax.set_xticks([])
            ax.set_yticks([])
            ax.text(
                0.5,
                0.5,
                wrap(data.captions[rows[hit]], width=10, lines=6),
                ha="center",
                va="center",
                fontsize=8,
                transform=ax.transAxes,
            )
            ax.set_xlabel(f"#{col}" + (" √ true caption" if hit == q else ""), fontsize=8)
            for spine in ax.spines.values():
                spine.set_edgecolor(MATCH if hit == q else "0.8")
                spine.set_linewidth(4 if hit == q else 1)
        if q not in found:
            axes[line, TOP].set_title(f"true caption at rank {_rank_of(images[q], texts, q)}", fontsize=8)
    plt.setp(axes, facecolor="white")
    return fig


def _rank_of(query: np.ndarray, keys: np.ndarray, target: int) -> int:
    scores = keys @ query
    return int((scores > scores[target]).sum()) + 1
