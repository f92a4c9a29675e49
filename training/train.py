"""``tuwen train``: contrastive fine-tuning with Chinese-CLIP's recipe, on CPU, one GPU, or several
processes under torchrun (``training.distributed``).

Follows ``cn_clip/training/train.py`` step for step (schedule before the step, loss over features
gathered from every rank, AdamW step, logit-scale clamp) and adds what its users ask for:
validation recall every epoch, best/last checkpoints, exact resume, a default lr that fits the
batch, a warning when nothing is being learnt.

Laid out as open_clip's training is: the options and their checks (``training.options``), the
step (``training.step``: AMP, gradient cache, optimizer step), the run's state and set-up
(``training.run``), the loop (``training.loop``: ``train_one_epoch``, validation) and the
checkpoints (``training.checkpoint``). This module is ``main``: ``train`` builds the options,
sets up the process and runs the loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from common.runtime import decode_workers, model_threads, torch_threads
from common.settings import Settings
from models.factory import default_device
from training.distributed import process_group, share_cores, world_from_env
from training.loop import run_epochs
from training.options import RunOptions
from training.run import TrainResult, quiet, set_up, speaker


def train(
    *,
    settings: Settings,
    model: str,
    out: str | Path,
    workers: int | None = None,
    threads: int | None = None,
    resume: str | Path | None = None,
    stop_at_step: int | None = None,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
    **hyper,
) -> TrainResult:
    """Fine-tune ``model`` on the store's training pairs; checkpoints and logs go to ``out``.

    ``hyper``: the fields of ``RunOptions`` (epochs, batch_size, lr, ...; their defaults live
    there). ``lr=None`` scales a reference lr to the total batch (``batch_size × accum_freq``).
    ``eval_every`` adds a validation (and checkpoint) every N optimizer steps. ``stop_at_step``
    stops after that global step as an interruption would (the schedule still spans ``epochs``).
    ``threads`` (CPU) defaults to the cores left over by the ``workers`` decoding images.
    """
    started = time.perf_counter()
    options = RunOptions(
        model=model,
        out=Path(out).expanduser(),
        resume=Path(resume).expanduser() if resume else None,
        **hyper,
    )
    return _train_in_world(
        settings=settings,
        options=options,
        workers=workers,
        threads=threads,
        stop_at_step=stop_at_step,
        progress=progress,
        say=speaker(echo),
        started=started,
    )


def _train_in_world(
    *,
    settings: Settings,
    options: RunOptions,
    workers: int | None,
    threads: int | None,
    stop_at_step: int | None,
    progress: bool,
    say: Callable[[str], None],
    started: float,
) -> TrainResult:
    """One process alone, or one of torchrun's: its device, process group, cores and threads."""
    world = world_from_env()
    device = world.device(default_device(settings.device))
    with process_group(world, device=device), share_cores(world, device=device):
        # after share_cores: on CPU each process counts only its own share of the cores
        options = replace(options, workers=decode_workers(workers))
        with torch_threads(model_threads(options.workers, threads)):
            say = say if world.is_main else quiet
            run = set_up(settings=settings, options=options, say=say, world=world, device=device)
            return run_epochs(
                run, stop_at_step=stop_at_step, progress=progress and world.is_main, started=started
            )
