"""A run's state and its set-up: what ``set_up`` builds once (``TrainRun``) and what the loop moves
on (``Progress``): pairs and split, model (wrapped in DDP under torchrun), optimizer, schedule,
resume, and on rank 0 config.json and the metrics log."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from common.precision import resolve_precision
from common.runs import write_run_config
from common.settings import Settings
from models.factory import LoadedModel, create_model_and_transforms, default_device
from models.tokens import CONTEXT_LENGTH
from training import checkpoint
from training.data import Pair, load_pairs, pairs_fingerprint, split_by_image
from training.distributed import World
from training.optim import Schedule, make_optimizer, make_schedule
from training.options import RunOptions
from training.report import MetricsLog
from training.step import Amp, set_train_mode

log = logging.getLogger("training")


def log_line(line: str) -> None:
    """What a run says when nobody passed ``echo``: the log, at info."""
    log.info(line)


def speaker(echo: Callable[[str], None] | None) -> Callable[[str], None]:
    """Where a run's lines go: ``echo``, else ``log_line`` (``warn_if_chance`` tells them apart)."""
    return echo or log_line


def quiet(_line: str) -> None:
    """What ranks other than 0 say: nothing (rank 0 speaks for the run)."""


@dataclass
class TrainResult:
    best_path: Path
    last_path: Path
    metrics: list[dict] = field(default_factory=list)  # every validation record of the run
    best: dict | None = None  # the validation metrics of best.pt
    steps: int = 0
    seconds: float = 0.0
    samples_per_s: float = 0.0
    stopped_early: bool = False


@dataclass
class Progress:
    """What the loop moves on: where the run resumed, its best so far, its counters."""

    start_step: int = 0
    best_score: float | None = None
    best: dict | None = None  # the validation record of best.pt
    val_records: list[dict] = field(default_factory=list)
    samples: int = 0  # trained on by this process since it started, for samples/s
    compute_seconds: float = 0.0


@dataclass
class TrainRun:
    """What the parts of one run share, built once by ``set_up``; ``progress`` is what changes."""

    options: RunOptions
    schedule: Schedule
    loaded: LoadedModel
    amp: Amp
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    train_pairs: list[Pair]
    val_pairs: list[Pair]
    config: dict  # what config.json says about the run
    say: Callable[[str], None]
    world: World = field(default_factory=World)
    ddp: torch.nn.Module | None = None  # the DistributedDataParallel wrapper of ``net`` under torchrun
    metrics_log: MetricsLog | None = None  # None on ranks other than 0
    progress: Progress = field(default_factory=Progress)

    @property
    def net(self) -> torch.nn.Module:
        """The model itself: what is checkpointed (no ``module.`` prefix), clamped and validated."""
        return self.loaded.model

    @property
    def forward_model(self) -> torch.nn.Module:
        """What the training forward pass goes through: DDP's wrapper (gradient averaging) or ``net``."""
        return self.ddp if self.ddp is not None else self.net

    @property
    def out(self) -> Path:
        return self.options.out

    @property
    def last_path(self) -> Path:
        return self.out / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.out / "best.pt"


def set_up(
    *,
    settings: Settings,
    options: RunOptions,
    say: Callable[[str], None],
    world: World | None = None,
    device: torch.device | None = None,
) -> TrainRun:
    """Everything before the first step: pairs and split, model (wrapped in DDP under torchrun),
    optimizer, schedule, resume, and on rank 0 config.json and the metrics log."""
    world = world or World()
    options.out.mkdir(parents=True, exist_ok=True)
    device = device or torch.device(default_device(settings.device))
    amp = Amp(resolve_precision(options.precision, device), device)
    resumed = checkpoint.load(options.resume) if options.resume else None
    spec = str(options.resume.resolve()) if options.resume else options.model
    loaded = create_model_and_transforms(spec, device=str(device), weights_dir=settings.weights_dir)
    torch.manual_seed(options.seed)  # dropout of the text tower; restored from the checkpoint on resume
    pairs = load_pairs(settings)
    train_pairs, val_pairs = split_by_image(pairs, val_fraction=options.val_fraction, seed=options.seed)
    schedule = make_schedule(options, n_train=len(train_pairs), world_size=world.size, say=say)
    prepare_model(loaded.model, options=options)
    optimizer = make_optimizer(
        loaded.model, lr=schedule.base_lr, weight_decay=options.weight_decay, arch=loaded.arch.name
    )
    run = TrainRun(
        options=options,
        schedule=schedule,
        loaded=loaded,
        amp=amp,
        optimizer=optimizer,
        scaler=torch.amp.GradScaler("cuda", enabled=amp.uses_grad_scaler),
        train_pairs=train_pairs,
        val_pairs=val_pairs,
        config=run_config(
            options, schedule=schedule, loaded=loaded, amp=amp, pairs=pairs, val_pairs=val_pairs
        ),
        say=say,
        world=world,
        ddp=wrap_ddp(loaded.model, world=world, device=device),
    )
    if resumed is not None:
        run.progress.start_step, run.progress.best_score = checkpoint.restore_training(
            resumed, optimizer=optimizer, scaler=run.scaler, config=run.config, say=say
        )
        start = run.progress.start_step
        say(f"resumed from {options.resume} at step {start} (epoch {start / schedule.steps_per_epoch:.2f})")
    _seed_other_ranks(run, rng=resumed.get("rng") if resumed else None)
    if world.is_main:
        open_run_folder(run, resumed=resumed is not None)
    return run


def _seed_other_ranks(run: TrainRun, *, rng: dict | None) -> None:
    """Ranks other than 0 draw dropout masks of their own: their state from a checkpoint of as many
    processes, else a seed of their own (rank 0 has the run's seed, or the checkpoint's state)."""
    world = run.world
    if world.rank == 0 or checkpoint.restore_rank_rng(rng, rank=world.rank, world_size=world.size):
        return
    torch.manual_seed(run.options.seed * 100_003 + world.rank * 1_000_003 + run.progress.start_step)


def open_run_folder(run: TrainRun, *, resumed: bool) -> None:
    """Rank 0: config.json, the metrics log (kept up to the resumed step) and a line saying what runs."""
    progress = run.progress
    write_run_config(run.out, run.config)
    run.metrics_log = MetricsLog(
        run.out / "metrics.jsonl", keep_until_step=progress.start_step if resumed else None
    )
    progress.val_records = [r for r in run.metrics_log.read() if r["kind"] == "val"]
    progress.best = _best_record(progress.val_records, progress.best_score)
    schedule, world = run.schedule, run.world
    processes = f"{world.size} processes × " if world.distributed else ""
    run.say(
        f"training {run.loaded.arch.name} ({run.options.model}) on {processes}{run.amp.device}, "
        f"precision {run.amp.mode}, {torch.get_num_threads()} threads + {run.options.workers} decoding "
        f"workers{' each' if world.distributed else ''}: {len(run.train_pairs)} train / {len(run.val_pairs)} "
        f"val pairs, {schedule.steps_per_epoch} steps × {schedule.epochs} epochs, total batch "
        f"{schedule.total_batch}, lr {schedule.base_lr:.3g}"
        + ("" if schedule.lr_given else " (default for this batch)")
    )


def _best_record(records: list[dict], best_score: float | None) -> dict | None:
    return next((r for r in records if best_score is not None and r["score"] == best_score), None)


def wrap_ddp(net: torch.nn.Module, *, world: World, device: torch.device) -> torch.nn.Module | None:
    """DistributedDataParallel around ``net`` under torchrun (it copies rank 0's weights to all
    ranks and averages gradients); None for one process. Not a static graph: with one, the
    gradient cache's several backward passes per step fail DDP's checks (gradient checkpointing
    works without it, checked against one process)."""
    if not world.distributed:
        return None
    return DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)


def prepare_model(net: torch.nn.Module, *, options: RunOptions) -> None:
    """Freeze the vision tower and turn on gradient checkpointing as asked; train mode."""
    if options.freeze_vision:
        for p in net.visual.parameters():
            p.requires_grad = False
    if options.grad_checkpointing:
        net.set_grad_checkpointing(True)
        # cn_clip calls torch.utils.checkpoint without use_reentrant: the default is what it relies on
        warnings.filterwarnings("ignore", message=r".*use_reentrant parameter should be passed explicitly.*")
    set_train_mode(net, freeze_vision=options.freeze_vision)


def run_config(
    options: RunOptions, *, schedule: Schedule, loaded: LoadedModel, amp: Amp, pairs, val_pairs
) -> dict:
    """config.json: the model, the resolved recipe and the data, as ``tuwen eval`` and resume read it."""
    return {
        "arch": loaded.arch.name,
        "model_spec": options.model,
        "vision_model_name": loaded.arch.vision,
        "text_model_name": loaded.arch.text,
        "input_resolution": loaded.arch.resolution,
        "epochs": schedule.epochs,
        "batch_size": schedule.batch_size,
        "nproc": schedule.world_size,
        "global_batch": schedule.global_batch,
        "accum_freq": schedule.accum_freq,
        "total_batch": schedule.total_batch,
        "lr": schedule.base_lr,
        "lr_given": schedule.lr_given,
        "warmup": schedule.warmup,
        "weight_decay": options.weight_decay,
        "precision": amp.mode,
        "device": str(amp.device),
        "val_fraction": options.val_fraction,
        "seed": options.seed,
        "augment": options.augment,
        "freeze_vision": options.freeze_vision,
        "grad_checkpointing": options.grad_checkpointing,
        "eval_every": options.eval_every,
        "workers": options.workers,
        "threads": torch.get_num_threads(),
        "steps_per_epoch": schedule.steps_per_epoch,
        "total_steps": schedule.total_steps,
        "train_pairs": len(pairs) - len(val_pairs),
        "val_pairs": len(val_pairs),
        "val_images": len({p.image_id for p in val_pairs}),
        "pairs_fingerprint": pairs_fingerprint(pairs),
        "context_length": CONTEXT_LENGTH,
        "torch": str(torch.__version__),
    }
