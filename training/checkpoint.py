"""Checkpoints in cn_clip's format, plus what our factory and an exact resume need.

``{"epoch", "step", "name", "state_dict", "optimizer"}`` as cn_clip writes them (keys without
``module.``: cn_clip's ``create_model`` accepts both), and ``model_arch`` (read by
``models.factory``), ``scaler``, ``rng``, ``best_score`` and ``train_config``. Only tensors and plain
Python values, so ``torch.load(weights_only=True)`` (the default) reads them.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from models.factory import load_checkpoint


def save(path: Path, *, payload: dict) -> Path:
    """Write atomically: a crash mid-write never leaves a truncated last.pt or best.pt."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def link_or_copy(src: Path, dst: Path) -> None:
    """best.pt is usually last.pt of the same step: a hard link saves a multi-GB copy."""
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        import shutil

        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


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
