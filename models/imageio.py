"""The one guarded image decoder used by ingest, indexing, training and uploads.

Whatever the file claims to be (a ``.jpg`` that is a GIF, a PNG with alpha, CMYK, grayscale,
an animated GIF, a 1-pixel-high strip), it comes out as an RGB ``PIL.Image`` or as an
``ImageDecodeError`` with a reason a person can read. Decompression bombs are refused.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

MAX_PIXELS = 100_000_000  # 10k x 10k: above any camera photo; decoding it costs 300 MB at most
Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # Pillow's own bomb check then agrees with ours
ImageFile.LOAD_TRUNCATED_IMAGES = False


class ImageDecodeError(ValueError):
    """The bytes are not an image we can decode; ``str(err)`` says why."""


def open_image(
    source: str | Path | bytes, *, max_pixels: int = MAX_PIXELS, draft_size: tuple[int, int] | None = None
) -> Image.Image:
    """Decode ``source`` (a path or raw bytes) to RGB; first frame of animations.

    ``draft_size`` lets JPEG decode at a reduced scale (much faster) when only a small
    image is needed, as in checking files or encoding at 224 px.
    """
    if isinstance(source, bytes | bytearray):
        if not source:
            raise ImageDecodeError("empty file")
        fp: io.BytesIO | Path = io.BytesIO(source)
    else:
        fp = Path(source)
        if not fp.is_file():
            raise ImageDecodeError("file not found")
        if fp.stat().st_size == 0:
            raise ImageDecodeError("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(fp) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise ImageDecodeError(f"image too large: {width}x{height} pixels (limit {max_pixels:,})")
                if draft_size and img.format == "JPEG":
                    img.draft("RGB", draft_size)
                img.seek(0)
                img.load()
                return _to_rgb(ImageOps.exif_transpose(img) or img)
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(f"image too large: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError("not a recognised image format") from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError) as exc:
        raise ImageDecodeError(f"corrupt or truncated image ({exc})") from exc


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img.copy()
    if img.mode in {"RGBA", "LA", "PA"} or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode.startswith("I") or img.mode == "F":
        return _wide_grey_to_rgb(img)
    return img.convert("RGB")


def _wide_grey_to_rgb(img: Image.Image) -> Image.Image:
    """16-bit, 32-bit integer and float greyscale (scans, depth maps, TIFFs): Pillow's
    ``convert("RGB")`` clips them at 255, so a 16-bit PNG came out white. Scaled to 8 bits instead:
    16-bit data (mode ``I;16``, or any value over 255) by 1/257, floats of 0..1 by 255, anything
    else clipped as it is."""
    values = np.asarray(img, dtype=np.float32)
    peak = float(values.max()) if values.size else 0.0
    if img.mode.startswith("I;16") or 255 < peak <= 65535:
        values = values / 257.0
    elif img.mode == "F" and peak <= 1.0:
        values = values * 255.0
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8)).convert("RGB")


def sniff_format(path: str | Path) -> str | None:
    """The real format of an image file (``JPEG``, ``GIF``, ``PNG``...), whatever its name says."""
    try:
        with Image.open(path) as img:
            return img.format
    except Exception:
        return None
