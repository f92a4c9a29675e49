"""Drawing helpers the studies share: thumbnails that never fail, wrapped captions, cluster colours."""

from __future__ import annotations

import textwrap

import matplotlib
import numpy as np
from PIL import Image

THUMB = 160  # pixels: a grid cell's image is shrunk to this before drawing


def thumbnail(path: str | None, size: int = THUMB) -> np.ndarray | None:
    """The image as an RGB array no larger than ``size``; None when it is absent or unreadable."""
    if not path:
        return None
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            img.thumbnail((size, size))
            return np.asarray(img)
    except (OSError, ValueError):
        return None


def wrap(text: str | None, *, width: int = 14, lines: int = 3) -> str:
    """Chinese-friendly wrapping (by characters) cut to ``lines`` lines with an ellipsis."""
    text = " ".join((text or "").split())
    if not text:
        return "(no caption)"
    parts = textwrap.wrap(text, width=width, break_long_words=True) or [""]
    if len(parts) > lines:
        parts = parts[:lines]
        parts[-1] = parts[-1][: max(width - 1, 1)] + "…"
    return "\n".join(parts)


def cluster_colours(clusters: list[int]) -> dict[int, tuple]:
    """A stable colour per cluster id (tab20, cycling), grey for noise (-1)."""
    palette = matplotlib.colormaps["tab20"]
    return {c: ((0.6, 0.6, 0.6, 1.0) if c < 0 else palette(c % 20)) for c in clusters}


def draw_cell(ax, *, image: np.ndarray | None, caption: str | None, frame: tuple | None = None) -> None:
    """One grid cell: the image (or a grey 'no image' card), the caption below, an optional frame."""
    ax.set_xticks([])
    ax.set_yticks([])
    if image is not None:
        ax.imshow(image)
    else:
        ax.set_facecolor((0.93, 0.93, 0.93))
        ax.text(0.5, 0.5, "no image", ha="center", va="center", color="0.45", transform=ax.transAxes)
    ax.set_xlabel(wrap(caption), fontsize=8)
    for spine in ax.spines.values():
        spine.set_visible(frame is not None)
        if frame is not None:
            spine.set_edgecolor(frame)
            spine.set_linewidth(4)
