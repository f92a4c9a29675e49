"""The mask modality of a corpus: mask images, their area share, masked images, and ``tuwen corpus masks``.

A corpus's optional ``mask`` field names a mask image per item (white / nonzero = garment; an
8-bit mask is split at 128 so JPEG noise stays background, a 0/1 mask at 1). ``corpus add``
stores its path, digest and area share (``mask_info``); ``corpus encode`` encodes the *masked
image* as a third set (``masked_image``): the item's image with every pixel outside the mask set
to CLIP's mean pixel colour (a neutral gray), not black. After the model's normalisation that gray
is zero input, so the background carries no signal, where black is a strong colour of its own (a
"black background" the model reads as content).

``tuwen corpus masks NAME`` (``make_masks``) is a small classical foreground segmentation for teams
with no segmentation tool: OpenCV's GrabCut initialised with a centred rectangle. It needs no
downloaded weights; OpenCV is imported only inside ``grabcut_mask`` so that reading or adding a
corpus never loads it.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from sqlalchemy import select

from common.errors import TuwenError
from common.files import write_atomic
from common.settings import Settings
from indexer import store
from indexer.corpus.items import check_name, corpus_dir

MASKS_FOLDER = "masks"  # corpora/<name>/masks/: the masks ``tuwen corpus masks`` made
MASKED_FOLDER = "masked"  # corpora/<name>/masked/: the masked images ``corpus encode`` encodes
BACKGROUND = (122, 116, 104)  # CLIP's mean pixel (0.4815, 0.4578, 0.4082) x 255: zero after normalising
RECT_MARGIN = 0.03  # GrabCut's rectangle: the frame less this share on each side (0.1 cut off garments near
# the edge: on 120 demo posts the median IoU with the drawn garment was 0.82 at 0.1, 0.90 at 0.03)
GRABCUT_ITERATIONS = 5  # on 200 demo posts (96 px): median IoU 0.97 at 5, 0.95 at 3, 0.94 at 2, 0.90 at 1;
# each iteration costs ~4 ms of CPU on such a picture, over a fixed ~10 ms (tuwen demo runs 2)
GRABCUT_SIDE = 512  # larger photos are segmented at this longest side (seconds each at full size)
Echo = Callable[[str], None]


@dataclass(frozen=True)
class MaskInfo:
    sha256: str | None  # of the mask file's bytes, None when it cannot be read
    area: float | None  # share of the frame the mask covers, None when it does not decode


def decode_mask(data: bytes) -> np.ndarray:
    """The mask as a 2-D bool array (raises OSError / ValueError when it does not decode)."""
    with Image.open(io.BytesIO(data)) as img:
        pixels = np.asarray(img.convert("L"))
    return pixels >= (128 if pixels.max() > 1 else 1)


def mask_info(path: str) -> MaskInfo:
    """Digest and area share of the mask file at ``path``."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return MaskInfo(None, None)
    try:
        area = float(decode_mask(data).mean())
    except (OSError, ValueError, Image.DecompressionBombError):
        area = None
    return MaskInfo(hashlib.sha256(data).hexdigest(), area)


def masked_image(image_path: str, mask_path: str, folder: Path) -> str | None:
    """The masked image's file under ``folder``, named by the digest of the image's and the mask's bytes
    (so an unchanged pair is composed once, and the vector cache keys on both); None when either fails."""
    try:
        image_bytes, mask_bytes = Path(image_path).read_bytes(), Path(mask_path).read_bytes()
    except OSError:
        return None
    key = hashlib.sha256(hashlib.sha256(image_bytes).digest() + hashlib.sha256(mask_bytes).digest())
    target = folder / f"{key.hexdigest()}.png"
    if target.is_file():
        return str(target)
    try:
        with Image.open(io.BytesIO(image_bytes)) as img:
            rgb = img.convert("RGB")
        mask = decode_mask(mask_bytes)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    if mask.shape != (rgb.height, rgb.width):
        resized = Image.fromarray(mask.astype(np.uint8) * 255).resize(rgb.size, Image.Resampling.NEAREST)
        mask = np.asarray(resized) >= 128
    pixels = np.asarray(rgb).copy()
    pixels[~mask] = BACKGROUND
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(target, out.getvalue())
    return str(target)


def grabcut_mask(image: np.ndarray, *, iterations: int = GRABCUT_ITERATIONS) -> np.ndarray:
    """Foreground of an RGB image (H, W, 3) uint8 by GrabCut from a centred rectangle: (H, W) bool."""
    import cv2  # opencv-python-headless: only this command needs it, so nothing else loads it

    height, width = image.shape[:2]
    dx, dy = max(1, int(width * RECT_MARGIN)), max(1, int(height * RECT_MARGIN))
    rect = (dx, dy, max(1, width - 2 * dx), max(1, height - 2 * dy))
    labels = np.zeros((height, width), np.uint8)
    background, foreground = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    bgr = np.ascontiguousarray(image[:, :, ::-1])
    cv2.grabCut(bgr, labels, rect, background, foreground, iterations, cv2.GC_INIT_WITH_RECT)
    return (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)


def make_masks(
    *, settings: Settings, name: str, echo: Echo | None = None, iterations: int = GRABCUT_ITERATIONS
) -> tuple[int, float | None]:
    """``tuwen corpus masks NAME``: a GrabCut mask per readable image under ``corpora/<name>/masks/``
    (``iterations`` of GrabCut each), set as the items' masks in one transaction; (masks made, their
    mean area share)."""
    check_name(name)
    if iterations < 1:
        raise TuwenError(f"--iterations must be at least 1 (got {iterations})")
    folder = corpus_dir(settings, name) / MASKS_FOLDER
    Item = store.CorpusItemRecord
    with store.open_store(settings.store_url) as session:
        if session.get(store.CorpusRecord, name) is None:
            raise TuwenError(f"unknown corpus {name!r} (add one with `tuwen corpus add NAME FILE`)")
        query = select(Item).where(Item.corpus == name, Item.image_status == store.STATUS_OK)
        items = list(session.scalars(query.order_by(Item.position)))
    made = {}
    for item in items:
        path = _mask_file(item.image_path, folder / f"{item.position:08d}.png", iterations=iterations)
        if path is not None:
            made[item.position] = (path, mask_info(path))
        elif echo:
            echo(f"no mask for {item.item_id}: its image no longer decodes ({item.image_path})")
    with store.open_store(settings.store_url) as session:
        for item in session.scalars(select(Item).where(Item.corpus == name, Item.position.in_(list(made)))):
            item.mask_path, info = made[item.position]
            item.mask_sha256, item.mask_area = info.sha256, info.area
    areas = [info.area for _, info in made.values() if info.area is not None]
    mean = float(np.mean(areas)) if areas else None
    if echo:
        shown = f"{mean:.3f}" if mean is not None else "-"
        echo(f"corpus {name}: {len(made)} masks made (GrabCut) in {folder}, mean area {shown}")
    return len(made), mean


def _mask_file(image_path: str, target: Path, *, iterations: int = GRABCUT_ITERATIONS) -> str | None:
    """The GrabCut mask of the image at ``image_path`` as a PNG of its size at ``target``."""
    try:
        with Image.open(image_path) as img:
            rgb = img.convert("RGB")
            rgb.load()
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    small = rgb.copy()
    small.thumbnail((GRABCUT_SIDE, GRABCUT_SIDE))
    mask = Image.fromarray(grabcut_mask(np.asarray(small), iterations=iterations).astype(np.uint8) * 255)
    out = io.BytesIO()
    mask.resize(rgb.size, Image.Resampling.NEAREST).save(out, format="PNG")
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, out.getvalue())
    return str(target)
