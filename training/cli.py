"""``tuwen train`` and ``tuwen eval`` (registered here; heavy imports happen in the handlers)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from common.vocabulary import ALIASES, BACKENDS, ENCODE_PRECISIONS, PRECISIONS

# Defaults of ``tuwen train``; on --resume the run's config.json replaces them, flags still win.
TRAIN_DEFAULTS = {
    "epochs": 3,
    "batch_size": 64,
    "lr": None,
    "warmup": 100,
    "weight_decay": 0.001,
    "accum_freq": 1,
    "precision": "auto",
    "val_fraction": 0.1,
    "seed": 0,
    "augment": False,
    "freeze_vision": False,
    "grad_checkpointing": False,
    "eval_every": None,
}


def register(sub, *, common) -> None:
    """Add this package's subcommands to the ``tuwen`` parser."""
    _register_train(sub, common=common)
    _register_eval(sub, common=common)


def _register_train(sub, *, common) -> None:
    p = sub.add_parser(
        "train",
        help="fine-tune on the training pairs (附件1) with Chinese-CLIP's recipe",
        description="Contrastive fine-tuning as Chinese-CLIP does it; validation recall every epoch; "
        "last.pt / best.pt (cn_clip format), config.json, metrics.jsonl and curves.png in --out.",
    )
    common(p)
    p.add_argument("--model", help="ViT-B-16 | PATH | tiny | random:ARCH (default on --resume: the run's)")
    p.add_argument("--out", help="run folder, e.g. runs/NAME (default on --resume: the checkpoint's folder)")
    p.add_argument("--epochs", type=int, help="default 3")
    p.add_argument("--batch-size", type=int, help="per micro-batch; default 64")
    p.add_argument("--lr", type=float, help="peak learning rate; default scaled to the total batch")
    p.add_argument("--warmup", type=int, help="linear warm-up steps; default 100")
    p.add_argument(
        "--weight-decay", type=float, help="AdamW decay (not on norms, biases, logit scale); 0.001"
    )
    p.add_argument("--accum-freq", type=int, help="micro-batches per step, all of them negatives; default 1")
    p.add_argument(
        "--precision",
        choices=[*PRECISIONS, *ALIASES],
        help="default auto (fp16 + GradScaler on CUDA, bf16 on CPUs that have it); amp = auto",
    )
    p.add_argument("--val-fraction", type=float, help="share of images held out for validation; 0.1")
    p.add_argument("--seed", type=int, help="split, batch order and init of dropout; default 0")
    p.add_argument("--augment", action="store_true", default=None, help="cn_clip's AutoAugment on images")
    p.add_argument("--freeze-vision", action="store_true", default=None, help="train the text tower only")
    p.add_argument(
        "--grad-checkpointing", action="store_true", default=None, help="less memory, ~30%% slower"
    )
    p.add_argument("--eval-every", type=int, help="also validate and checkpoint every N steps")
    p.add_argument(
        "--workers",
        type=int,
        help="image decoding processes (per training process; default: one per spare core, at most 4)",
    )
    p.add_argument(
        "--threads",
        type=int,
        help="CPU threads for the model (per process; default: its cores minus workers)",
    )
    p.add_argument("--resume", help="continue a run from its last.pt (with any number of processes)")
    p.add_argument(
        "--stop-at-step", type=int, help="stop after this step with a checkpoint, as an interruption would"
    )
    p.add_argument(
        "--nproc",
        type=int,
        default=1,
        help="training processes on this machine (DDP through torchrun; one per GPU); --batch-size "
        "is per process. Several machines: run `torchrun ... -m tuwen.cli train ...` on each",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=_train)


def _register_eval(sub, *, common) -> None:
    e = sub.add_parser(
        "eval",
        help="R@1/5/10 of a model on the held-out pairs, as Chinese-CLIP reports them",
        description='Prints {"t2i": {r1, r5, r10, mr}, "i2t": {...}} in percent.',
    )
    common(e)
    e.add_argument("--model", required=True, help="runs/NAME/best.pt, or any model spec")
    e.add_argument("--split", default="val", choices=["val", "train", "all"])
    e.add_argument("--predictions-out", help="folder for cn_clip-format prediction and ground-truth jsonl")
    e.add_argument("--val-fraction", type=float, help="default: the run's config.json, else 0.1")
    e.add_argument("--seed", type=int, help="default: the run's config.json, else 0")
    e.add_argument("--precision", default="auto", choices=ENCODE_PRECISIONS)
    e.add_argument(
        "--backend", choices=BACKENDS, help="torch|onnx|openvino (default $TUWEN_BACKEND, else auto)"
    )
    e.add_argument("--workers", type=int)
    e.set_defaults(handler=_eval)


def _resume_defaults(resume: str | None) -> tuple[dict, dict]:
    """(saved hyper-parameters, saved run info) of the run being resumed."""
    if not resume:
        return {}, {}
    from common.errors import TuwenError
    from common.runs import read_run_config

    if not Path(resume).expanduser().is_file():
        raise TuwenError(f"--resume {resume}: no such checkpoint")
    saved = read_run_config(resume)
    hyper = {k: saved[k] for k in TRAIN_DEFAULTS if k in saved}
    if not saved.get("lr_given", True):
        hyper["lr"] = None  # recompute from the batch, as the run did
    return hyper, saved


def _per_process_batch(hyper: dict, saved: dict, *, processes: int) -> None:
    """Resuming with another number of processes: keep the run's global batch when it divides."""
    global_batch = saved.get("global_batch")
    if "batch_size" in hyper and global_batch and global_batch % processes == 0:
        hyper["batch_size"] = global_batch // processes


def _processes(args: argparse.Namespace) -> int:
    """Processes of the run: torchrun's WORLD_SIZE inside a launch, else --nproc."""
    from common.errors import TuwenError

    if args.nproc < 1:
        raise TuwenError(f"--nproc must be at least 1, not {args.nproc}")
    if "WORLD_SIZE" in os.environ:
        if args.nproc > 1:
            raise TuwenError("--nproc starts torchrun itself: leave it out when torchrun starts tuwen")
        return int(os.environ["WORLD_SIZE"])
    return args.nproc


def _train(args: argparse.Namespace) -> int:
    from common.console import say
    from common.errors import TuwenError
    from common.settings import get_settings

    processes = _processes(args)
    hyper, saved = _resume_defaults(args.resume)
    _per_process_batch(hyper, saved, processes=processes)
    chosen = {
        k: getattr(args, k) if getattr(args, k) is not None else hyper.get(k, d)
        for k, d in TRAIN_DEFAULTS.items()
    }
    model = args.model or saved.get("model_spec")
    out = args.out or (str(Path(args.resume).expanduser().parent) if args.resume else None)
    if not model or not out:
        raise TuwenError("--model and --out are required (unless --resume names a run's checkpoint)")
    settings = get_settings(args.home)
    if args.nproc > 1:
        return _launch(args, settings=settings, model=model, out=out, chosen=chosen)
    from training.train import train

    result = train(
        settings=settings,
        model=model,
        out=out,
        workers=args.workers,
        threads=args.threads,
        resume=args.resume,
        stop_at_step=args.stop_at_step,
        progress=not args.no_progress,
        echo=say,
        **chosen,
    )
    if "RANK" in os.environ and os.environ["RANK"] != "0":
        return 0  # rank 0 prints the summary
    summary = {
        "best": str(result.best_path),
        "last": str(result.last_path),
        "steps": result.steps,
        "seconds": round(result.seconds, 1),
        "samples_per_s": round(result.samples_per_s, 1),
        "best_metrics": {k: result.best[k] for k in ("step", "t2i", "i2t")} if result.best else None,
    }
    print(json.dumps(summary, ensure_ascii=False, indent=1))
    return 0


def worker_argv(args: argparse.Namespace, *, model: str, out: str, chosen: dict) -> list[str]:
    """``tuwen train`` arguments for each process of a launch: the resolved settings, no --nproc."""
    argv = ["train", "--model", model, "--out", out]
    options = {
        **chosen,
        "workers": args.workers,
        "threads": args.threads,
        "resume": args.resume,
        "stop_at_step": args.stop_at_step,
        "home": args.home,
    }
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is not None and value is not False:
            argv += [flag, str(value)]
    return argv + (["--no-progress"] if args.no_progress else [])


def _check_gpus(settings, *, nproc: int) -> None:
    import torch

    from common.errors import TuwenError
    from models.factory import default_device

    if default_device(settings.device).type == "cuda" and nproc > torch.cuda.device_count():
        raise TuwenError(
            f"--nproc {nproc}: this machine has {torch.cuda.device_count()} GPU(s), one per process"
        )


def _launch(args: argparse.Namespace, *, settings, model: str, out: str, chosen: dict) -> int:
    """``tuwen train --nproc N``: bad settings fail here, in one line, before torchrun starts N
    processes of ``tuwen train`` (``python -m torch.distributed.run … -m tuwen.cli train …``)."""
    import subprocess
    import sys

    from common.console import say
    from common.errors import TuwenError
    from training.data import load_pairs
    from training.distributed import torchrun_command
    from training.train import check_args

    check_args(**{k: chosen[k] for k in ("epochs", "batch_size", "accum_freq", "warmup", "lr")})
    load_pairs(settings)  # "no readable training pairs" before N processes start
    _check_gpus(settings, nproc=args.nproc)
    command = torchrun_command(
        sys.executable, nproc=args.nproc, entry_argv=worker_argv(args, model=model, out=out, chosen=chosen)
    )
    say(f"starting {args.nproc} training processes: {' '.join(command[1:])}")
    # torchrun would set it (and say so) for every process; the training sets its own thread count
    env = {"OMP_NUM_THREADS": "1", **os.environ}
    code = subprocess.run(command, env=env, check=False).returncode
    if code != 0:
        raise TuwenError(f"training on {args.nproc} processes failed (torchrun exit code {code}; see above)")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from common.settings import get_settings
    from training.evaluate import evaluate

    settings = get_settings(args.home)
    if args.backend:
        settings.backend = args.backend
    result = evaluate(
        settings=settings,
        model=args.model,
        split=args.split,
        predictions_out=args.predictions_out,
        val_fraction=args.val_fraction,
        seed=args.seed,
        precision=args.precision,
        workers=args.workers,
    )
    print(json.dumps(result, indent=1))
    return 0
