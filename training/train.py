"""``tuwen train``: contrastive fine-tuning with Chinese-CLIP's recipe, on CPU, one GPU, or several
processes under torchrun (``training.distributed``).

Follows ``cn_clip/training/train.py`` step for step (schedule before the step, loss over features
gathered from every rank, AdamW step, logit-scale clamp) and adds what its users ask for:
validation recall every epoch, best/last checkpoints, exact resume, a default lr that fits the
batch, a warning when nothing is being learnt.

A run is a handful of named steps over one ``TrainRun`` (what they share):
``set_up`` → for each epoch ``train_epoch`` (``optimizer_step`` per step, ``validate_and_checkpoint``
where asked) → ``validate_and_checkpoint`` at the end of the epoch → ``TrainResult``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from tqdm import tqdm

from common.errors import TuwenError
from common.precision import autocast, resolve_precision
from common.runs import write_run_config
from common.runtime import decode_workers, model_threads, torch_threads
from common.settings import Settings
from models.factory import LoadedModel, create_model_and_transforms, default_device
from models.tokens import CONTEXT_LENGTH, trim_padding
from training import checkpoint
from training.data import (
    Pair,
    PairDataset,
    StepBatches,
    epoch_plan,
    load_pairs,
    make_loader,
    pairs_fingerprint,
    split_by_image,
    steps_per_epoch,
    train_transform,
)
from training.distributed import World, local_plan, process_group, share_cores, world_from_env
from training.evaluate import encode_split, score
from training.loss import accum_loss, clamp_logit_scale, clip_loss
from training.metrics import at_chance, chance_r5, selection_score
from training.optim import cosine_lr, default_lr, make_optimizer, set_lr
from training.report import MetricsLog, plot_curves

log = logging.getLogger(__name__)
# Hyper-parameters that must match for a resumed run to continue the same schedule and batches
# (the global batch, not the per-process one: 2 processes × 8 resume as 1 × 16).
RESUME_KEYS = ("epochs", "global_batch", "accum_freq", "lr", "warmup", "weight_decay", "val_fraction", "seed")


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
class Amp:
    """How the forward pass runs: a resolved precision (``common.precision``) on a device."""

    mode: str  # fp32 | bf16 | fp16
    device: torch.device

    def autocast(self):
        return autocast(self.mode, self.device)

    @property
    def uses_grad_scaler(self) -> bool:
        return self.mode == "fp16" and self.device.type == "cuda"

    @property
    def encoder_precision(self) -> str:
        """Validate as `tuwen eval` and `tuwen index` encode by default, so their numbers agree."""
        return "fp32" if self.mode == "fp32" else "auto"


@dataclass(frozen=True)
class RunOptions:
    """What ``train`` was asked for; ``Schedule`` is what it resolved to."""

    model: str
    out: Path
    epochs: int = 3
    batch_size: int = 64
    lr: float | None = None
    warmup: int = 100
    weight_decay: float = 0.001
    accum_freq: int = 1
    precision: str = "auto"
    val_fraction: float = 0.1
    seed: int = 0
    augment: bool = False
    freeze_vision: bool = False
    grad_checkpointing: bool = False
    eval_every: int | None = None
    workers: int = 0
    resume: Path | None = None
    log_every: int = 1

    @property
    def from_scratch(self) -> bool:
        return self.model == "tiny" or self.model.startswith("random:")


@dataclass(frozen=True)
class Schedule:
    """The resolved batches and learning-rate schedule of a run."""

    epochs: int
    batch_size: int  # per process and micro-batch
    accum_freq: int
    steps_per_epoch: int
    base_lr: float
    lr_given: bool
    warmup: int
    world_size: int = 1

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs

    @property
    def global_batch(self) -> int:
        """A micro-batch over all processes: what the negatives of one loss are drawn from."""
        return self.batch_size * self.world_size

    @property
    def total_batch(self) -> int:
        return self.global_batch * self.accum_freq

    def lr(self, step: int) -> float:
        return cosine_lr(step, base_lr=self.base_lr, warmup=self.warmup, total_steps=self.total_steps)


@dataclass
class TrainRun:
    """What the steps of one run share: built once by ``set_up``, then read (and its counters and
    best-so-far updated) by ``optimizer_step``, ``validate_and_checkpoint`` and ``train_epoch``."""

    options: RunOptions
    schedule: Schedule
    loaded: LoadedModel
    amp: Amp
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    train_pairs: list[Pair]
    val_pairs: list[Pair]
    config: dict  # what config.json says about the run
    metrics_log: MetricsLog | None  # None on ranks other than 0
    say: Callable[[str], None]
    world: World = field(default_factory=World)
    ddp: torch.nn.Module | None = None  # the DistributedDataParallel wrapper of ``net`` under torchrun
    start_step: int = 0
    best_score: float | None = None
    best: dict | None = None  # the validation record of best.pt
    val_records: list[dict] = field(default_factory=list)
    samples: int = 0  # trained on by this process since it started, for samples/s
    compute_seconds: float = 0.0

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


@dataclass(frozen=True)
class StepStats:
    """What one optimizer step reports."""

    loss: float
    lr: float
    samples: int
    seconds: float


def backward_step(
    model,
    micro_batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    *,
    amp: Amp,
    scaler,
    world: World | None = None,
) -> float:
    """Forward and backward of one optimizer step; gradients are left in ``.grad``.

    One micro-batch: the plain loss. Several (``--accum-freq``): cn_clip's gradient cache, i.e.
    features of all micro-batches first without gradient, then each micro-batch again with
    gradient against the cached features of the others, so every micro-batch sees the negatives
    of the whole step. Under torchrun (``world``) every loss is over the features of all ranks
    (gathered with gradients), and DDP averages the gradients once, after the last micro-batch.
    """
    world = world or World()
    if len(micro_batches) == 1:
        images, texts = micro_batches[0]
        with amp.autocast():
            image_features, text_features, logit_scale = model(images, texts)
        loss = clip_loss(world.gather(image_features), world.gather(text_features), logit_scale)
        scaler.scale(loss).backward()
        return loss.item()
    cached_image, cached_text = [], []
    with torch.no_grad():
        for images, texts in micro_batches:
            with amp.autocast():
                image_features, text_features, _ = model(images, texts)
            cached_image.append(world.gather(image_features))
            cached_text.append(world.gather(text_features))
    last = len(micro_batches) - 1
    for j, (images, texts) in enumerate(micro_batches):
        no_sync = model.no_sync() if j < last and hasattr(model, "no_sync") else contextlib.nullcontext()
        with no_sync:
            with amp.autocast():
                image_features, text_features, logit_scale = model(images, texts)
            loss = accum_loss(
                world.gather(image_features),
                world.gather(text_features),
                logit_scale,
                cached_image,
                cached_text,
                j,
            )
            scaler.scale(loss).backward()
    return loss.item()  # the last micro-batch's (all are the same loss up to rounding, as in cn_clip)


def set_train_mode(model, *, freeze_vision: bool) -> None:
    model.train()
    if freeze_vision:  # keep BatchNorm statistics of a frozen ResNet tower fixed (cn_clip freeze_vision_bn)
        for m in model.visual.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()


def check_args(*, epochs: int, batch_size: int, accum_freq: int, warmup: int, lr: float | None) -> None:
    for name, value, low in (
        ("epochs", epochs, 1),
        ("batch-size", batch_size, 1),
        ("accum-freq", accum_freq, 1),
    ):
        if value < low:
            raise TuwenError(f"--{name} must be at least {low}, not {value}")
    if warmup < 0:
        raise TuwenError(f"--warmup must be >= 0, not {warmup}")
    if lr is not None and not lr > 0:
        raise TuwenError(f"--lr must be positive, not {lr}")


def train(
    *,
    settings: Settings,
    model: str,
    out: str | Path,
    epochs: int = 3,
    batch_size: int = 64,
    lr: float | None = None,
    warmup: int = 100,
    weight_decay: float = 0.001,
    accum_freq: int = 1,
    precision: str = "auto",
    val_fraction: float = 0.1,
    seed: int = 0,
    augment: bool = False,
    freeze_vision: bool = False,
    grad_checkpointing: bool = False,
    eval_every: int | None = None,
    workers: int | None = None,
    threads: int | None = None,
    resume: str | Path | None = None,
    stop_at_step: int | None = None,
    log_every: int = 1,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
) -> TrainResult:
    """Fine-tune ``model`` on the store's training pairs; checkpoints and logs go to ``out``.

    ``lr=None`` scales a reference lr to the total batch (``batch_size × accum_freq``).
    ``eval_every`` adds a validation (and checkpoint) every N optimizer steps. ``stop_at_step``
    stops after that global step as an interruption would (the schedule still spans ``epochs``).
    ``threads`` (CPU) defaults to the cores left over by the ``workers`` decoding images.

    Long because it lists every option of a run, one per line, twice (signature and RunOptions).
    """
    started = time.perf_counter()
    check_args(epochs=epochs, batch_size=batch_size, accum_freq=accum_freq, warmup=warmup, lr=lr)
    options = RunOptions(
        model=model,
        out=Path(out).expanduser(),
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        warmup=warmup,
        weight_decay=weight_decay,
        accum_freq=accum_freq,
        precision=precision,
        val_fraction=val_fraction,
        seed=seed,
        augment=augment,
        freeze_vision=freeze_vision,
        grad_checkpointing=grad_checkpointing,
        eval_every=eval_every,
        resume=Path(resume).expanduser() if resume else None,
        log_every=log_every,
    )
    return _train_in_world(
        settings=settings,
        options=options,
        workers=workers,
        threads=threads,
        stop_at_step=stop_at_step,
        progress=progress,
        say=echo or log.info,
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
            say = say if world.is_main else _quiet
            run = set_up(settings=settings, options=options, say=say, world=world, device=device)
            return run_epochs(
                run, stop_at_step=stop_at_step, progress=progress and world.is_main, started=started
            )


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
    device = device or default_device(settings.device)
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
        metrics_log=None,
        say=say,
        world=world,
        ddp=wrap_ddp(loaded.model, world=world, device=device),
    )
    if resumed is not None:
        run.start_step, run.best_score = restore(
            resumed, optimizer=optimizer, scaler=run.scaler, config=run.config, say=say
        )
        say(
            f"resumed from {options.resume} at step {run.start_step} "
            f"(epoch {run.start_step / schedule.steps_per_epoch:.2f})"
        )
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
    torch.manual_seed(run.options.seed * 100_003 + world.rank * 1_000_003 + run.start_step)


def open_run_folder(run: TrainRun, *, resumed: bool) -> None:
    """Rank 0: config.json, the metrics log (kept up to the resumed step) and a line saying what runs."""
    write_run_config(run.out, run.config)
    run.metrics_log = MetricsLog(
        run.out / "metrics.jsonl", keep_until_step=run.start_step if resumed else None
    )
    run.val_records = [r for r in run.metrics_log.read() if r["kind"] == "val"]
    run.best = _best_record(run.val_records, run.best_score)
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


def wrap_ddp(net: torch.nn.Module, *, world: World, device: torch.device) -> torch.nn.Module | None:
    """DistributedDataParallel around ``net`` under torchrun (it copies rank 0's weights to all
    ranks and averages gradients); None for one process. Not a static graph: with one, the
    gradient cache's several backward passes per step fail DDP's checks (gradient checkpointing
    works without it, checked against one process)."""
    if not world.distributed:
        return None
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)


def make_schedule(
    options: RunOptions, *, n_train: int, world_size: int = 1, say: Callable[[str], None]
) -> Schedule:
    """Steps per epoch over the global batch, the peak lr (scaled to the total batch unless given)
    and a warm-up that fits."""
    global_batch = options.batch_size * world_size
    if world_size > 1 and n_train < global_batch * options.accum_freq:
        raise TuwenError(
            f"{n_train} training pairs are fewer than one step of {world_size} processes × batch "
            f"{options.batch_size} × accum-freq {options.accum_freq}: lower --batch-size or the processes"
        )
    spe = steps_per_epoch(n_train, batch_size=global_batch, accum_freq=options.accum_freq)
    total_steps = spe * options.epochs
    lr_given = options.lr is not None
    base_lr = (
        options.lr
        if lr_given
        else default_lr(global_batch * options.accum_freq, from_scratch=options.from_scratch)
    )
    warmup = options.warmup
    if warmup >= total_steps:
        warmup = max(total_steps // 10, 1)
        say(f"warm-up longer than the run ({total_steps} steps): using {warmup} steps")
    return Schedule(
        epochs=options.epochs,
        batch_size=options.batch_size,
        accum_freq=options.accum_freq,
        steps_per_epoch=spe,
        base_lr=base_lr,
        lr_given=lr_given,
        warmup=warmup,
        world_size=world_size,
    )


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


def restore(
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
    checkpoint.restore_rng(resumed.get("rng"))
    return int(resumed["step"]), resumed.get("best_score")


def optimizer_step(run: TrainRun, micro: list[tuple[torch.Tensor, torch.Tensor]], *, step: int) -> StepStats:
    """One optimizer step at global step ``step`` (0-based) on its micro-batches: lr from the
    schedule, forward/backward, AdamW (through the scaler), logit-scale clamp."""
    tick = time.perf_counter()
    lr = run.schedule.lr(step)
    set_lr(run.optimizer, lr)
    run.optimizer.zero_grad(set_to_none=True)
    loss = backward_step(run.forward_model, micro, amp=run.amp, scaler=run.scaler, world=run.world)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    clamp_logit_scale(run.net)
    n = sum(len(t) for _, t in micro) * run.world.size  # every rank's slice is full (make_schedule)
    return StepStats(loss=loss, lr=lr, samples=n, seconds=time.perf_counter() - tick)


def validate(run: TrainRun, *, step: int) -> dict | None:
    """Recall on the held-out pairs as a metrics.jsonl record, or None without a validation split."""
    if not run.val_pairs:
        return None
    epoch_float = step / run.schedule.steps_per_epoch
    with torch.random.fork_rng(devices=[]):  # validating must not shift the dropout masks of later steps
        features = encode_split(
            run.loaded,
            run.val_pairs,
            precision=run.amp.encoder_precision,
            batch_size=max(run.schedule.batch_size, 64),
            workers=run.options.workers,
        )
    m, _ = score(features)
    set_train_mode(run.net, freeze_vision=run.options.freeze_vision)
    record = {"kind": "val", "step": step, "epoch": round(epoch_float, 4), **m, "score": selection_score(m)}
    run.say(
        f"step {step} (epoch {epoch_float:.2f}) val: text→image R@1/5/10 "
        f"{m['t2i']['r1']:.1f}/{m['t2i']['r5']:.1f}/{m['t2i']['r10']:.1f}, image→text "
        f"{m['i2t']['r1']:.1f}/{m['i2t']['r5']:.1f}/{m['i2t']['r10']:.1f}"
    )
    return record


def validate_and_checkpoint(run: TrainRun, *, step: int) -> dict | None:
    """Validate, log the record, write last.pt and, when the selection score is the best so far (or
    there is no validation split), point best.pt at it; redraw the curves. Returns the record.

    Under torchrun rank 0 does all of it while the other ranks wait (and get None)."""
    rank_rng = run.world.gather_objects(checkpoint.rng_state())  # for an exact resume on as many ranks
    record = _validate_and_save(run, step=step, rank_rng=rank_rng) if run.world.is_main else None
    run.world.barrier()
    return record


def _validate_and_save(run: TrainRun, *, step: int, rank_rng: list[dict] | None = None) -> dict | None:
    record = validate(run, step=step)
    if record is not None:
        run.metrics_log.write(record)
        run.val_records.append(record)
    is_best = record is None or run.best_score is None or record["score"] > run.best_score
    if record is not None and is_best:
        run.best_score, run.best = record["score"], record
    checkpoint.save(
        run.last_path,
        payload=checkpoint.payload(
            model=run.net,
            optimizer=run.optimizer,
            scaler=run.scaler,
            epoch=math.ceil(step / run.schedule.steps_per_epoch),  # cn_clip: the (1-based) epoch of the step
            step=step,
            name=run.out.name,
            arch=run.loaded.arch.name,
            best_score=run.best_score,
            train_config=run.config,
            rank_rng=rank_rng,
        ),
    )
    if is_best:
        checkpoint.link_or_copy(run.last_path, run.best_path)
    plot_curves(run.metrics_log.read(), run.out / "curves.png")
    return record


def log_step(run: TrainRun, stats: StepStats, *, step: int, bar) -> None:
    """After step ``step`` (1-based): counters, the progress bar, and every ``log_every`` steps (and
    the last) a metrics.jsonl record."""
    run.samples += stats.samples
    run.compute_seconds += stats.seconds
    scale = run.net.logit_scale.exp().item()
    bar.set_postfix(loss=f"{stats.loss:.4f}", lr=f"{stats.lr:.2e}", scale=f"{scale:.1f}", refresh=False)
    bar.update(1)
    if run.metrics_log is None:  # not rank 0
        return
    if step % run.options.log_every == 0 or step == run.schedule.total_steps:
        run.metrics_log.write(
            {
                "kind": "train",
                "step": step,
                "epoch": round(step / run.schedule.steps_per_epoch, 4),
                "loss": stats.loss,
                "lr": stats.lr,
                "logit_scale": scale,
                "samples_per_s": stats.samples / max(stats.seconds, 1e-9),
            }
        )


def epoch_loader(run: TrainRun, *, epoch: int, offset: int):
    """The loader of epoch ``epoch`` from its step ``offset`` on, yielding micro-batches in plan order."""
    options, schedule = run.options, run.schedule
    plan = epoch_plan(
        len(run.train_pairs),
        batch_size=schedule.global_batch,
        accum_freq=schedule.accum_freq,
        seed=options.seed,
        epoch=epoch,
    )
    plan = (
        local_plan(plan, world=run.world, batch_size=schedule.batch_size) if run.world.distributed else plan
    )
    resolution = run.loaded.arch.resolution
    dataset = PairDataset(
        run.train_pairs,
        transform=train_transform(resolution) if options.augment else run.loaded.preprocess,
        resolution=resolution,
        augment_seed=(options.seed, epoch) if options.augment else None,
    )
    loader = make_loader(
        dataset,
        StepBatches(plan, offset),
        workers=options.workers,
        pin_memory=run.amp.device.type == "cuda",
        seed=options.seed * 100_003 + epoch,
    )
    return plan[offset:], loader


def train_epoch(run: TrainRun, *, epoch: int, step: int, stop_at_step: int | None, bar) -> tuple[int, bool]:
    """The steps of epoch ``epoch`` from global step ``step`` on, with the mid-epoch validations
    (``eval_every``) and stop (``stop_at_step``); returns (global step reached, stopped mid-epoch)."""
    spe, device = run.schedule.steps_per_epoch, run.amp.device
    steps, loader = epoch_loader(run, epoch=epoch, offset=step - epoch * spe)
    batches = iter(loader)
    for step_plan in steps:
        micro = []
        for _ in step_plan:
            images, texts = next(batches)
            texts = trim_padding(texts)
            micro.append((images.to(device, non_blocking=True), texts.to(device, non_blocking=True)))
        stats = optimizer_step(run, micro, step=step)
        step += 1
        log_step(run, stats, step=step, bar=bar)
        if step % spe == 0:
            continue  # the end of the epoch validates once, in run_epochs
        if run.options.eval_every and step % run.options.eval_every == 0:
            validate_and_checkpoint(run, step=step)
        if stop_at_step is not None and step >= stop_at_step:
            validate_and_checkpoint(run, step=step)
            return step, True
    return step, False


def run_epochs(run: TrainRun, *, stop_at_step: int | None, progress: bool, started: float) -> TrainResult:
    """The loop: epochs from the resumed step on, validation and checkpoint at each epoch's end."""
    schedule, step, stopped = run.schedule, run.start_step, False
    bar = tqdm(total=schedule.total_steps, initial=step, desc="train", unit="step", disable=not progress)
    try:
        for epoch in range(step // schedule.steps_per_epoch, schedule.epochs):
            step, stopped = train_epoch(run, epoch=epoch, step=step, stop_at_step=stop_at_step, bar=bar)
            if stopped:
                break
            record = validate_and_checkpoint(run, step=step)
            if epoch == 0 and record is not None:
                _warn_if_chance(record, run.val_pairs, schedule=schedule, say=run.say)
            if stop_at_step is not None and step >= stop_at_step:
                stopped = step < schedule.total_steps
                break
    finally:
        bar.close()
    if run.world.is_main and not run.best_path.is_file():  # resumed after the last step: nothing was saved
        checkpoint.link_or_copy(run.last_path, run.best_path)
    return TrainResult(
        best_path=run.best_path,
        last_path=run.last_path,
        metrics=run.val_records,
        best=run.best,
        steps=step,
        seconds=time.perf_counter() - started,
        samples_per_s=run.samples / max(run.compute_seconds, 1e-9),
        stopped_early=stopped,
    )


def _quiet(_line: str) -> None:
    """What ranks other than 0 say: nothing (rank 0 speaks for the run)."""


def _best_record(records: list[dict], best_score: float | None) -> dict | None:
    return next((r for r in records if best_score is not None and r["score"] == best_score), None)


def _warn_if_chance(record: dict, val_pairs, *, schedule: Schedule, say) -> None:
    n_texts, n_images = len(val_pairs), len({p.image_id for p in val_pairs})
    if not at_chance(record, n_texts=n_texts, n_images=n_images):
        return
    chance = chance_r5(n_texts, n_images)
    lower = f"lower --lr (now {schedule.base_lr:.3g})" if schedule.lr_given else "try a lower --lr"
    message = (
        f"validation recall is still at chance after the first epoch (R@5 text→image "
        f"{record['t2i']['r5']:.1f}% vs {chance['t2i']:.1f}% at random, image→text "
        f"{record['i2t']['r5']:.1f}% vs {chance['i2t']:.1f}%). Check that 附件1's captions are paired "
        f"with their images by image_id; {lower}, more --warmup or more epochs."
    )
    log.warning(message)
    if say is not log.info:
        say("warning: " + message)
