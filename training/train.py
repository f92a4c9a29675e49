"""``tuwen train``: contrastive fine-tuning with Chinese-CLIP's recipe, on CPU or one GPU.

Follows ``cn_clip/training/train.py`` step for step (schedule before the step, loss, AdamW step,
logit-scale clamp) without DDP, and adds what its users ask for: validation recall every epoch,
best/last checkpoints, exact resume, a default lr that fits the batch, a warning when nothing is
being learnt.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from common.errors import TuwenError
from common.precision import autocast, resolve_precision
from common.runs import write_run_config
from common.runtime import decode_workers, model_threads, torch_threads
from common.settings import Settings
from models.factory import create_model_and_transforms, default_device
from models.tokens import CONTEXT_LENGTH, trim_padding
from training import checkpoint
from training.data import (
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
from training.evaluate import encode_split, score
from training.loss import accum_loss, clamp_logit_scale, clip_loss
from training.metrics import at_chance, chance_r5, selection_score
from training.optim import cosine_lr, default_lr, make_optimizer, set_lr
from training.report import MetricsLog, plot_curves

log = logging.getLogger(__name__)
# Hyper-parameters that must match for a resumed run to continue the same schedule and batches.
RESUME_KEYS = ("epochs", "batch_size", "accum_freq", "lr", "warmup", "weight_decay", "val_fraction", "seed")


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


def backward_step(
    model, micro_batches: Sequence[tuple[torch.Tensor, torch.Tensor]], *, amp: Amp, scaler
) -> float:
    """Forward and backward of one optimizer step; gradients are left in ``.grad``.

    One micro-batch: the plain loss. Several (``--accum-freq``): cn_clip's gradient cache, i.e.
    features of all micro-batches first without gradient, then each micro-batch again with
    gradient against the cached features of the others, so every micro-batch sees the negatives
    of the whole step.
    """
    if len(micro_batches) == 1:
        images, texts = micro_batches[0]
        with amp.autocast():
            image_features, text_features, logit_scale = model(images, texts)
        loss = clip_loss(image_features, text_features, logit_scale)
        scaler.scale(loss).backward()
        return loss.item()
    cached_image, cached_text = [], []
    with torch.no_grad():
        for images, texts in micro_batches:
            with amp.autocast():
                image_features, text_features, _ = model(images, texts)
            cached_image.append(image_features)
            cached_text.append(text_features)
    for j, (images, texts) in enumerate(micro_batches):
        with amp.autocast():
            image_features, text_features, logit_scale = model(images, texts)
        loss = accum_loss(image_features, text_features, logit_scale, cached_image, cached_text, j)
        scaler.scale(loss).backward()
    return loss.item()  # the last micro-batch's (all are the same loss up to rounding, as in cn_clip)


def set_train_mode(model, *, freeze_vision: bool) -> None:
    model.train()
    if freeze_vision:  # keep BatchNorm statistics of a frozen ResNet tower fixed (cn_clip freeze_vision_bn)
        for m in model.visual.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()


def _check_args(*, epochs: int, batch_size: int, accum_freq: int, warmup: int, lr: float | None) -> None:
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
    """
    kwargs = dict(locals())
    kwargs["workers"] = decode_workers(workers)
    kwargs["threads"] = model_threads(kwargs["workers"], threads)
    with torch_threads(kwargs["threads"]):
        return _train(**kwargs)


def _train(
    *,
    settings: Settings,
    model: str,
    out: str | Path,
    epochs: int,
    batch_size: int,
    lr: float | None,
    warmup: int,
    weight_decay: float,
    accum_freq: int,
    precision: str,
    val_fraction: float,
    seed: int,
    augment: bool,
    freeze_vision: bool,
    grad_checkpointing: bool,
    eval_every: int | None,
    workers: int,
    threads: int,
    resume: str | Path | None,
    stop_at_step: int | None,
    log_every: int,
    progress: bool,
    echo: Callable[[str], None] | None,
) -> TrainResult:
    say = echo or log.info
    started = time.perf_counter()
    _check_args(epochs=epochs, batch_size=batch_size, accum_freq=accum_freq, warmup=warmup, lr=lr)
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    device = default_device(settings.device)
    amp = Amp(resolve_precision(precision, device), device)

    resumed = checkpoint.load(Path(resume)) if resume else None
    spec = str(Path(resume).expanduser().resolve()) if resume else model
    loaded = create_model_and_transforms(spec, device=str(device), weights_dir=settings.weights_dir)
    torch.manual_seed(seed)  # dropout of the text tower; restored from the checkpoint on resume

    pairs = load_pairs(settings)
    train_pairs, val_pairs = split_by_image(pairs, val_fraction=val_fraction, seed=seed)
    spe = steps_per_epoch(len(train_pairs), batch_size=batch_size, accum_freq=accum_freq)
    total_steps = spe * epochs
    from_scratch = model == "tiny" or model.startswith("random:")
    lr_given = lr is not None
    base_lr = lr if lr_given else default_lr(batch_size * accum_freq, from_scratch=from_scratch)
    if warmup >= total_steps:
        warmup = max(total_steps // 10, 1)
        say(f"warm-up longer than the run ({total_steps} steps): using {warmup} steps")

    net = loaded.model
    if freeze_vision:
        for p in net.visual.parameters():
            p.requires_grad = False
    if grad_checkpointing:
        net.set_grad_checkpointing(True)
        # cn_clip calls torch.utils.checkpoint without use_reentrant: the default is what it relies on
        warnings.filterwarnings("ignore", message=r".*use_reentrant parameter should be passed explicitly.*")
    set_train_mode(net, freeze_vision=freeze_vision)
    optimizer = make_optimizer(net, lr=base_lr, weight_decay=weight_decay, arch=loaded.arch.name)
    scaler = torch.amp.GradScaler("cuda", enabled=amp.uses_grad_scaler)

    config = {
        "arch": loaded.arch.name,
        "model_spec": model,
        "vision_model_name": loaded.arch.vision,
        "text_model_name": loaded.arch.text,
        "input_resolution": loaded.arch.resolution,
        "epochs": epochs,
        "batch_size": batch_size,
        "accum_freq": accum_freq,
        "total_batch": batch_size * accum_freq,
        "lr": base_lr,
        "lr_given": lr_given,
        "warmup": warmup,
        "weight_decay": weight_decay,
        "precision": amp.mode,
        "device": str(device),
        "val_fraction": val_fraction,
        "seed": seed,
        "augment": augment,
        "freeze_vision": freeze_vision,
        "grad_checkpointing": grad_checkpointing,
        "eval_every": eval_every,
        "workers": workers,
        "threads": threads,
        "steps_per_epoch": spe,
        "total_steps": total_steps,
        "train_pairs": len(train_pairs),
        "val_pairs": len(val_pairs),
        "val_images": len({p.image_id for p in val_pairs}),
        "pairs_fingerprint": pairs_fingerprint(pairs),
        "context_length": CONTEXT_LENGTH,
        "torch": str(torch.__version__),
    }
    start_step, best_score = 0, None
    if resumed is not None:
        saved = resumed.get("train_config") or {}
        changed = [k for k in RESUME_KEYS if k in saved and saved[k] != config.get(k)]
        if changed:
            say(
                "resuming with changed settings (the run will not continue exactly): "
                + ", ".join(f"{k} {saved[k]} → {config[k]}" for k in changed)
            )
        optimizer.load_state_dict(resumed["optimizer"])
        if resumed.get("scaler") and scaler.is_enabled():
            scaler.load_state_dict(resumed["scaler"])
        start_step, best_score = int(resumed["step"]), resumed.get("best_score")
        checkpoint.restore_rng(resumed.get("rng"))
        say(f"resumed from {resume} at step {start_step} (epoch {start_step / spe:.2f})")
    write_run_config(out, config)

    say(
        f"training {loaded.arch.name} ({model}) on {device}, precision {amp.mode}, "
        f"{torch.get_num_threads()} threads + {workers} decoding workers: "
        f"{len(train_pairs)} train / {len(val_pairs)} val pairs, {spe} steps × {epochs} epochs, "
        f"total batch {batch_size * accum_freq}, lr {base_lr:.3g}"
        + ("" if lr_given else " (default for this batch)")
    )
    metrics_log = MetricsLog(out / "metrics.jsonl", keep_until_step=start_step if resumed else None)
    last_path, best_path = out / "last.pt", out / "best.pt"
    val_records = [r for r in metrics_log.read() if r["kind"] == "val"]
    state = {"best_score": best_score, "best": _best_record(val_records, best_score)}

    def validate_and_save(step: int, epoch_float: float) -> dict | None:
        record = None
        if val_pairs:
            with torch.random.fork_rng(
                devices=[]
            ):  # validating must not shift the dropout masks of later steps
                features = encode_split(
                    loaded,
                    val_pairs,
                    precision=amp.encoder_precision,
                    batch_size=max(batch_size, 64),
                    workers=workers,
                )
            m, _ = score(features)
            set_train_mode(net, freeze_vision=freeze_vision)
            record = {
                "kind": "val",
                "step": step,
                "epoch": round(epoch_float, 4),
                **m,
                "score": selection_score(m),
            }
            metrics_log.write(record)
            val_records.append(record)
            say(
                f"step {step} (epoch {epoch_float:.2f}) val: text→image R@1/5/10 "
                f"{m['t2i']['r1']:.1f}/{m['t2i']['r5']:.1f}/{m['t2i']['r10']:.1f}, image→text "
                f"{m['i2t']['r1']:.1f}/{m['i2t']['r5']:.1f}/{m['i2t']['r10']:.1f}"
            )
        is_best = record is None or state["best_score"] is None or record["score"] > state["best_score"]
        if record is not None and is_best:
            state["best_score"], state["best"] = record["score"], record
        checkpoint.save(
            last_path,
            payload=checkpoint.payload(
                model=net,
                optimizer=optimizer,
                scaler=scaler,
                epoch=math.ceil(epoch_float),  # cn_clip: the (1-based) epoch the step belongs to
                step=step,
                name=out.name,
                arch=loaded.arch.name,
                best_score=state["best_score"],
                train_config=config,
            ),
        )
        if is_best:
            checkpoint.link_or_copy(last_path, best_path)
        plot_curves(metrics_log.read(), out / "curves.png")
        return record

    step = start_step
    samples, compute_seconds = 0, 0.0
    stopped = False
    bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step", disable=not progress)
    try:
        for epoch in range(start_step // spe, epochs):
            plan = epoch_plan(
                len(train_pairs), batch_size=batch_size, accum_freq=accum_freq, seed=seed, epoch=epoch
            )
            offset = step - epoch * spe
            dataset = PairDataset(
                train_pairs,
                transform=train_transform(loaded.arch.resolution) if augment else loaded.preprocess,
                resolution=loaded.arch.resolution,
                augment_seed=(seed, epoch) if augment else None,
            )
            loader = make_loader(
                dataset,
                StepBatches(plan, offset),
                workers=workers,
                pin_memory=device.type == "cuda",
                seed=seed * 100_003 + epoch,
            )
            batches = iter(loader)
            for step_plan in plan[offset:]:
                tick = time.perf_counter()
                micro = []
                for _ in step_plan:
                    images, texts = next(batches)
                    texts = trim_padding(texts)
                    micro.append((images.to(device, non_blocking=True), texts.to(device, non_blocking=True)))
                lr_now = cosine_lr(step, base_lr=base_lr, warmup=warmup, total_steps=total_steps)
                set_lr(optimizer, lr_now)
                optimizer.zero_grad(set_to_none=True)
                loss = backward_step(net, micro, amp=amp, scaler=scaler)
                scaler.step(optimizer)
                scaler.update()
                clamp_logit_scale(net)
                step += 1
                n = sum(len(t) for _, t in micro)
                samples += n
                compute_seconds += time.perf_counter() - tick
                scale = net.logit_scale.exp().item()
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr_now:.2e}", scale=f"{scale:.1f}", refresh=False)
                bar.update(1)
                if step % log_every == 0 or step == total_steps:
                    metrics_log.write(
                        {
                            "kind": "train",
                            "step": step,
                            "epoch": round(step / spe, 4),
                            "loss": loss,
                            "lr": lr_now,
                            "logit_scale": scale,
                            "samples_per_s": n / max(time.perf_counter() - tick, 1e-9),
                        }
                    )
                end_of_epoch = step % spe == 0
                if eval_every and step % eval_every == 0 and not end_of_epoch:
                    validate_and_save(step, step / spe)
                if stop_at_step is not None and step >= stop_at_step and not end_of_epoch:
                    validate_and_save(step, step / spe)
                    stopped = True
                    break
            del batches, loader
            if stopped:
                break
            record = validate_and_save(step, step / spe)
            if epoch == 0 and record is not None:
                _warn_if_chance(record, val_pairs, base_lr=base_lr, lr_given=lr_given, say=say)
            if stop_at_step is not None and step >= stop_at_step:
                stopped = step < total_steps
                break
    finally:
        bar.close()
    if not best_path.is_file():  # resumed after the last step: nothing new was saved
        checkpoint.link_or_copy(last_path, best_path)
    seconds = time.perf_counter() - started
    return TrainResult(
        best_path=best_path,
        last_path=last_path,
        metrics=val_records,
        best=state["best"],
        steps=step,
        seconds=seconds,
        samples_per_s=samples / max(compute_seconds, 1e-9),
        stopped_early=stopped,
    )


def _best_record(records: list[dict], best_score: float | None) -> dict | None:
    return next((r for r in records if best_score is not None and r["score"] == best_score), None)


def _warn_if_chance(record: dict, val_pairs, *, base_lr: float, lr_given: bool, say) -> None:
    n_texts, n_images = len(val_pairs), len({p.image_id for p in val_pairs})
    if not at_chance(record, n_texts=n_texts, n_images=n_images):
        return
    chance = chance_r5(n_texts, n_images)
    lower = f"lower --lr (now {base_lr:.3g})" if lr_given else "try a lower --lr"
    message = (
        f"validation recall is still at chance after the first epoch (R@5 text→image "
        f"{record['t2i']['r5']:.1f}% vs {chance['t2i']:.1f}% at random, image→text "
        f"{record['i2t']['r5']:.1f}% vs {chance['i2t']:.1f}%). Check that 附件1's captions are paired "
        f"with their images by image_id; {lower}, more --warmup or more epochs."
    )
    log.warning(message)
    if say is not log.info:
        say("warning: " + message)
