"""The PyTorch side of ``models.factory``: building cn_clip's ``CLIP`` and reading checkpoints.

Imported by the factory when a model is built (and by training, which always builds one), never
by a process that runs cached exported towers alone.
"""

from __future__ import annotations

from pathlib import Path

import torch
from cn_clip.clip.model import CLIP

from common.errors import TuwenError
from models.registry import RANDOM_SEED, ArchSpec


def build_model(arch: ArchSpec, *, seed: int = RANDOM_SEED) -> CLIP:
    """An fp32 ``CLIP`` with deterministic random weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CLIP(**arch.config()).float()


def checkpoint_model(path: Path, arch: ArchSpec) -> CLIP:
    """The checkpoint's weights in ``arch`` (a deferred build: the checkpoint is read only now)."""
    return model_with_weights(arch, checkpoint_state_dict(load_checkpoint(path)), path)


def model_with_weights(arch: ArchSpec, state_dict: dict, path: Path) -> CLIP:
    """An fp32 ``arch`` holding ``state_dict`` (read from ``path``, named in errors).

    Built without drawing random weights first: on the meta device, then given uninitialised
    memory that the strict load fills, every parameter and buffer of it (a missing one is an
    error). Drawing a ViT-B-16's random weights took 2.6 s of its 3.6-7.5 s build on a 2-core EPYC,
    only to be overwritten.
    """
    with torch.device("meta"):
        model = CLIP(**arch.config())
    # Buffers made in __init__ that no checkpoint holds need the real build.
    model = build_model(arch) if _unsaved_tensors(model) else model.to_empty(device="cpu").float()
    load_state_dict(model, state_dict, path)
    return model


def _unsaved_tensors(model: torch.nn.Module) -> list[str]:
    """Names of the buffers a state dict does not carry (non-persistent ones)."""
    saved = set(model.state_dict())
    return [name for name, _ in model.named_buffers() if name not in saved]


def load_checkpoint(path: Path) -> dict:
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise TuwenError(f"{path}: not a readable PyTorch checkpoint ({exc})") from exc
    if not isinstance(checkpoint, dict):
        raise TuwenError(f"{path}: expected a dict checkpoint, found {type(checkpoint).__name__}")
    return checkpoint


def checkpoint_state_dict(checkpoint: dict) -> dict[str, torch.Tensor]:
    """The weights of a cn_clip checkpoint (or of a bare state dict) without ``module.``."""
    sd = checkpoint.get("state_dict", checkpoint)
    return {k.removeprefix("module."): v for k, v in sd.items() if "bert.pooler" not in k}


def load_state_dict(model: CLIP, state_dict: dict, path: Path) -> None:
    try:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()})
    except RuntimeError as exc:
        raise TuwenError(f"{path}: weights do not fit the architecture: {exc}") from exc
