"""The PyTorch towers: the model as loaded, under the autocast of ``common.precision``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from cn_clip.clip.model import ModifiedResNet

from common.precision import autocast, resolve_precision
from common.runtime import torch_threads
from common.vocabulary import canonical_precision
from models.factory import LoadedModel


class TorchTowers:
    backend = "torch"

    def __init__(self, loaded: LoadedModel, *, precision: str = "auto", streams: int = 1):
        self.model = loaded.model.eval()
        self.streams = streams
        self.device = torch.device(loaded.device)
        self.image_precision = resolve_precision(precision, self.device)
        # Texts stay fp32 under "auto" on CPU: trimming the padding already makes them >= 3x the
        # README loop, and bf16 text embeddings missed the top-5 overlap bar (0.933 < 0.95 in one
        # of three bench_encode runs) although their cosine to fp32 was 0.9998.
        cpu_auto = canonical_precision(precision) == "auto" and self.device.type == "cpu"
        self.text_precision = "fp32" if cpu_auto else self.image_precision
        # Convolutions (the whole RN50 tower, a ViT's patch embedding) run faster in NHWC on oneDNN.
        self._channels_last = isinstance(self.model.visual, ModifiedResNet)
        if self._channels_last:
            self.model.visual.to(memory_format=torch.channels_last)

    @contextlib.contextmanager
    def streaming(self) -> Iterator[None]:
        """While ``streams`` threads call the towers at once: the process's intra-op threads shared
        out among them (PyTorch's thread count is process-wide), restored afterwards."""
        if self.streams <= 1:
            yield
            return
        with torch_threads(max(1, torch.get_num_threads() // self.streams)):
            yield

    @staticmethod
    def _numpy(features: torch.Tensor) -> np.ndarray:
        return features.float().cpu().numpy()

    @torch.inference_mode()
    def encode_image(self, pixels) -> np.ndarray:
        pixels = torch.as_tensor(pixels).to(self.device, non_blocking=True)
        if self._channels_last:
            pixels = pixels.contiguous(memory_format=torch.channels_last)
        with autocast(self.image_precision, self.device):
            return self._numpy(self.model.encode_image(pixels))

    @torch.inference_mode()
    def encode_text(self, tokens) -> np.ndarray:
        with autocast(self.text_precision, self.device):
            return self._numpy(self.model.encode_text(torch.as_tensor(tokens).to(self.device)))
