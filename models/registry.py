"""Architectures as JSON configs: cn_clip's own (shipped in its wheel) plus our ``tiny``."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path


def _cn_clip_dir() -> Path:
    """cn_clip's ``clip`` folder, found without importing it: its ``__init__`` loads PyTorch."""
    package = importlib.util.find_spec("cn_clip")
    if package is None or not package.submodule_search_locations:
        raise ImportError("cn_clip is not installed (pip install cn_clip)")
    return Path(next(iter(package.submodule_search_locations))) / "clip"


CN_CLIP_DIR = _cn_clip_dir()
CN_CLIP_CONFIG_DIR = CN_CLIP_DIR / "model_configs"
OWN_CONFIG_DIR = Path(__file__).parent / "model_configs"
HF_ORG = "OFA-Sys"
RANDOM_SEED = 0  # the weights of ``tiny`` and ``random:ARCH``, named in their model ids


@dataclass(frozen=True)
class ArchSpec:
    """One architecture: vision tower, text tower, input size, and where its official weights live."""

    name: str
    vision: str
    text: str
    resolution: int
    weights_file: str | None = None
    hf_repo: str | None = None

    @property
    def struct(self) -> str:
        """cn_clip's ``vision@text`` name, as ``load_from_name`` expects for local files."""
        return f"{self.vision}@{self.text}"

    def config(self) -> dict:
        """The merged constructor arguments of ``cn_clip.clip.model.CLIP``."""
        merged: dict = {}
        for part in (self.vision, self.text):
            merged.update(json.loads(_config_path(part).read_text()))
        if isinstance(merged["vision_layers"], str):  # RN50 stores "[3,4,6,3]"
            merged["vision_layers"] = json.loads(merged["vision_layers"])
        return merged


def _config_path(part: str) -> Path:
    for folder in (OWN_CONFIG_DIR, CN_CLIP_CONFIG_DIR):
        path = folder / f"{part}.json"
        if path.is_file():
            return path
    raise KeyError(f"no model config named {part}")


_BASE = "RoBERTa-wwm-ext-base-chinese"
ARCHS: dict[str, ArchSpec] = {
    spec.name: spec
    for spec in (
        ArchSpec("ViT-B-16", "ViT-B-16", _BASE, 224, "clip_cn_vit-b-16.pt", "chinese-clip-vit-base-patch16"),
        ArchSpec("ViT-L-14", "ViT-L-14", _BASE, 224, "clip_cn_vit-l-14.pt", "chinese-clip-vit-large-patch14"),
        ArchSpec(
            "ViT-L-14-336",
            "ViT-L-14-336",
            _BASE,
            336,
            "clip_cn_vit-l-14-336.pt",
            "chinese-clip-vit-large-patch14-336px",
        ),
        ArchSpec(
            "ViT-H-14",
            "ViT-H-14",
            "RoBERTa-wwm-ext-large-chinese",
            224,
            "clip_cn_vit-h-14.pt",
            "chinese-clip-vit-huge-patch14",
        ),
        ArchSpec("RN50", "RN50", "RBT3-chinese", 224, "clip_cn_rn50.pt", "chinese-clip-rn50"),
        ArchSpec("tiny", "tiny-vit", "tiny-bert", 64),
    )
}
OFFICIAL_NAMES = [name for name, spec in ARCHS.items() if spec.weights_file]


def arch_by_struct(struct: str) -> ArchSpec | None:
    return next((a for a in ARCHS.values() if a.struct == struct), None)
