"""Batched, L2-normalised text and image embeddings from a loaded Chinese-CLIP model."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from cn_clip.clip import tokenize
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from models.factory import LoadedModel
from models.imageio import ImageDecodeError, open_image

CONTEXT_LENGTH = 52
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def cpu_supports_bf16() -> bool:
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    return bool(probe and probe()) or bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: 0)())


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` picks fp16 autocast on CUDA, bf16 autocast on CPUs with native bf16, else fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "fp16"
    return "bf16" if cpu_supports_bf16() else "fp32"


class _ImageFiles(Dataset):
    """Decodes and transforms in DataLoader workers; a bad file yields a zero tensor and its error."""

    def __init__(self, paths: Sequence[str | Path], preprocess, resolution: int):
        self.paths, self.preprocess, self.resolution = list(paths), preprocess, resolution

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            img = open_image(self.paths[i], draft_size=(self.resolution, self.resolution))
            return self.preprocess(img), ""
        except ImageDecodeError as exc:
            return torch.zeros(3, self.resolution, self.resolution), str(exc) or "unreadable"


class Encoder:
    def __init__(self, loaded: LoadedModel, *, precision: str = "auto"):
        self.loaded = loaded
        self.model = loaded.model.eval()
        self.device = loaded.device
        self.precision = resolve_precision(precision, self.device)

    @property
    def model_id(self) -> str:
        return self.loaded.model_id

    def _autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def _finish(self, features: torch.Tensor) -> np.ndarray:
        features = features.float()
        features = features / features.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return features.cpu().numpy()

    @torch.inference_mode()
    def encode_texts(
        self, texts: Sequence[str], *, batch_size: int = 64, progress: bool = False
    ) -> np.ndarray:
        out = np.zeros((len(texts), self.loaded.embed_dim), dtype=np.float32)
        starts = range(0, len(texts), batch_size)
        for start in tqdm(starts, desc="texts", unit="batch", disable=not progress):
            tokens = tokenize(list(texts[start : start + batch_size]), CONTEXT_LENGTH).to(self.device)
            with self._autocast():
                out[start : start + len(tokens)] = self._finish(self.model.encode_text(tokens))
        return out

    @torch.inference_mode()
    def encode_pil(self, images: Sequence[Image.Image]) -> np.ndarray:
        batch = torch.stack([self.loaded.preprocess(img) for img in images]).to(self.device)
        with self._autocast():
            return self._finish(self.model.encode_image(batch))

    @torch.inference_mode()
    def encode_image_files(
        self, paths: Sequence[str | Path], *, batch_size: int = 32, workers: int = 2, progress: bool = False
    ) -> tuple[np.ndarray, list[str]]:
        """Embeddings of the files in order, and per file an error message ("" when fine).

        A file that cannot be decoded gets a zero row; callers decide the fallback.
        """
        dataset = _ImageFiles(paths, self.loaded.preprocess, self.loaded.arch.resolution)
        loader = DataLoader(
            dataset,
            batch_size=batch_size,
            num_workers=workers,
            persistent_workers=False,
            pin_memory=self.device.type == "cuda",
        )
        out = np.zeros((len(dataset), self.loaded.embed_dim), dtype=np.float32)
        errors: list[str] = []
        start = 0
        with tqdm(total=len(dataset), desc="images", unit="img", disable=not progress) as bar:
            for pixels, batch_errors in loader:
                pixels = pixels.to(self.device, non_blocking=True)
                with self._autocast():
                    out[start : start + len(pixels)] = self._finish(self.model.encode_image(pixels))
                errors.extend(batch_errors)
                start += len(pixels)
                bar.update(len(pixels))
        for i, err in enumerate(errors):
            if err:
                out[i] = 0.0
        return out, errors
