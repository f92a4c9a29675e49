"""The image transform of Chinese-CLIP in numpy: PIL image -> ``(3, R, R)`` float32 model pixels.

The same steps as ``cn_clip.clip.image_transform`` (torchvision's ``Resize((R, R), BICUBIC)``,
RGB, ``ToTensor``, ``Normalize`` with CLIP's mean and std), so the pixels are bit-for-bit equal
(tests/test_preprocess.py), without importing PyTorch: a server on exported towers then never
loads it. torchvision resizes a PIL image with PIL's own ``resize``, which this calls.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32).reshape(3, 1, 1)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32).reshape(3, 1, 1)


class ImageTransform:
    """Chinese-CLIP's transform at ``resolution`` (a picklable plain object: decode workers get it)."""

    def __init__(self, resolution: int):
        self.resolution = resolution

    def __call__(self, image: Image.Image) -> np.ndarray:
        size = (self.resolution, self.resolution)
        resized = image.resize(size, Image.Resampling.BICUBIC).convert("RGB")
        scaled = np.asarray(resized, dtype=np.uint8).transpose(2, 0, 1).astype(np.float32) / np.float32(255)
        return (scaled - MEAN) / STD

    def __repr__(self) -> str:
        return f"ImageTransform(resolution={self.resolution})"


def image_transform(resolution: int) -> ImageTransform:
    return ImageTransform(resolution)
