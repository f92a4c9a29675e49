"""Checkpoints in cn_clip's format, plus what our factory and an exact resume need.

``{"epoch", "step", "name", "state_dict", "optimizer"}`` as cn_clip writes them (keys without
``module.``: cn_clip's ``create_model`` accepts both), and ``model_arch`` (read by
``models.factory``), ``scaler``, ``rng``, ``best_score`` and ``train_config``. Only tensors and plain
Python values, so ``torch.load(weights_only=True)`` (the default) reads them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from common.files import atomic_path
from models.torch_model import load_checkpoint
from training.options import RESUME_KEYS


def save(path: Path, *, payload: dict) -> Path:
    """Write atomically and durably: a crash mid-write never leaves a truncated last.pt or best.pt."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def link_or_copy(src: Path, dst: Path) -> None:
    """best.pt is usually last.pt of the same step: a hard link saves a multi-GB copy."""
    with atomic_path(dst) as tmp:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


def payload(
    *,
    model,
    optimizer,
    scaler,
    epoch: int,
    step: int,
    name: str,
    arch: str,
    best_score: float | None,
    train_config: dict,
    rank_rng: list[dict] | None = None,
) -> dict:
    """``rank_rng``: under torchrun, every process's random state (``rng_state``), so a resume with
    as many processes gives each its own dropout masks back."""
    return {
        "epoch": epoch,
        "step": step,
        "name": name,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "model_arch": arch,
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "ranks": rank_rng or [],
        },
        "best_score": best_score,
        "train_config": train_config,
    }


def load(path: Path) -> dict:
    return load_checkpoint(Path(path))


def restore_training(
    resumed: dict, *, optimizer, scaler, config: dict, say: Callable[[str], None]
) -> tuple[int, float | None]:
    """Optimizer, scaler and RNG state of a checkpoint; (its step, its best score). Says which
    settings changed since (the run then does not continue exactly)."""
    saved = resumed.get("train_config") or {}
    if "global_batch" not in saved and "batch_size" in saved:  # runs from before several processes
        saved = {**saved, "global_batch": saved["batch_size"]}
    changed = [k for k in RESUME_KEYS if k in saved and saved[k] != config.get(k)]
    if changed:
        say(
            "resuming with changed settings (the run will not continue exactly): "
            + ", ".join(f"{k} {saved[k]} → {config[k]}" for k in changed)
        )
    optimizer.load_state_dict(resumed["optimizer"])
    if resumed.get("scaler") and scaler.is_enabled():
        scaler.load_state_dict(resumed["scaler"])
    restore_rng(resumed.get("rng"))
    return int(resumed["step"]), resumed.get("best_score")


def restore_rng(state: dict | None) -> None:
    if not state:
        return
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def rng_state() -> dict:
    """This process's random state: CPU, and its current GPU's when it has one."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
    }


def restore_rank_rng(state: dict | None, *, rank: int, world_size: int) -> bool:
    """Process ``rank``'s own random state from a checkpoint written by as many processes; False
    when there is none (another process count, or a checkpoint of one process)."""
    ranks = (state or {}).get("ranks") or []
    if len(ranks) != world_size:
        return False
    torch.set_rng_state(ranks[rank]["torch"])
    if ranks[rank].get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(ranks[rank]["cuda"])
    return True
