"""``tuwen train`` and ``tuwen eval``, registered here.

Heavy imports happen in the handlers: torch and the stages (``training.train``, ``.evaluate``,
``.data``, ``.distributed``, ``models.factory``) take seconds and are needed only by the command
that runs, ``indexer.rerank`` brings numpy, and ``common.settings`` (pydantic-settings, ~0.5 s) is
needed only once a command runs; ``tuwen --help`` and every other command build this parser too
(the re-ranking names in the help are checked against ``indexer.rerank`` by tests/test_rerank.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from common.console import say
from common.errors import TuwenError
from common.runs import read_run_config
from common.vocabulary import ALIASES, BACKENDS, ENCODE_PRECISIONS, PRECISIONS
from training.options import RunOptions, hyper_defaults, option_help

# Defaults of ``tuwen train`` (``RunOptions``'s); on --resume the run's config.json replaces them,
# flags still win.
TRAIN_DEFAULTS = hyper_defaults()


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
    p.add_argument("--epochs", type=int, help=option_help("epochs"))
    p.add_argument("--batch-size", type=int, help=option_help("batch_size"))
    p.add_argument("--lr", type=float, help=option_help("lr"))
    p.add_argument("--warmup", type=int, help=option_help("warmup"))
    p.add_argument("--weight-decay", type=float, help=option_help("weight_decay"))
    p.add_argument("--accum-freq", type=int, help=option_help("accum_freq"))
    p.add_argument("--precision", choices=[*PRECISIONS, *ALIASES], help=option_help("precision"))
    p.add_argument("--val-fraction", type=float, help=option_help("val_fraction"))
    p.add_argument("--seed", type=int, help=option_help("seed"))
    for flag in ("augment", "freeze_vision", "grad_checkpointing"):
        name = "--" + flag.replace("_", "-")
        p.add_argument(name, action="store_true", default=None, help=option_help(flag))
    p.add_argument("--eval-every", type=int, help=option_help("eval_every"))
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
        description='Prints {"t2i": {r1, r5, r10, mr}, "i2t": {...}} in percent; with --rerank or '
        "several --model, one table of every model (and their ensemble) and re-ranking instead.",
    )
    common(e)
    e.add_argument(
        "--model",
        required=True,
        action="append",
        help="runs/NAME/best.pt, or any model spec; repeat it to compare models and their ensemble "
        "(the mean of their similarities) on the first one's split",
    )
    e.add_argument(
        "--rerank",
        help="comma-separated re-rankings to compare, plain first: none,dual-softmax,qb-norm,one-to-one "
        "(indexer.rerank; qb-norm's query bank: the training side of the split)",
    )
    e.add_argument(
        "--bank-size",
        type=int,
        default=5000,
        help="training images (one caption each) in qb-norm's query bank; default 5000",
    )
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
    if args.nproc < 1:
        raise TuwenError(f"--nproc must be at least 1, not {args.nproc}")
    if "WORLD_SIZE" in os.environ:
        if args.nproc > 1:
            raise TuwenError("--nproc starts torchrun itself: leave it out when torchrun starts tuwen")
        return int(os.environ["WORLD_SIZE"])
    return args.nproc


def _train(args: argparse.Namespace) -> int:
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

    from models.factory import default_device

    if default_device(settings.device).startswith("cuda") and nproc > torch.cuda.device_count():
        raise TuwenError(
            f"--nproc {nproc}: this machine has {torch.cuda.device_count()} GPU(s), one per process"
        )


def _launch(args: argparse.Namespace, *, settings, model: str, out: str, chosen: dict) -> int:
    """``tuwen train --nproc N``: bad settings fail here, in one line, before torchrun starts N
    processes of ``tuwen train`` (``python -m torch.distributed.run … -m tuwen.cli train …``)."""
    from training.data import load_pairs
    from training.distributed import torchrun_command

    RunOptions(model=model, out=Path(out), **chosen)  # its checks, before N processes start
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
    if args.rerank or len(args.model) > 1:
        return _eval_table(args, settings)
    result = evaluate(
        settings=settings,
        model=args.model[0],
        split=args.split,
        predictions_out=args.predictions_out,
        val_fraction=args.val_fraction,
        seed=args.seed,
        precision=args.precision,
        workers=args.workers,
    )
    print(json.dumps(result, indent=1))
    return 0


def _eval_table(args: argparse.Namespace, settings) -> int:
    from indexer.rerank import parse_methods
    from training.rerank_eval import format_table, rerank_table

    if args.predictions_out:
        raise TuwenError("--predictions-out is for one model without --rerank")
    table = rerank_table(
        settings=settings,
        models=args.model,
        methods=parse_methods(args.rerank),
        split=args.split,
        val_fraction=args.val_fraction,
        seed=args.seed,
        precision=args.precision,
        workers=args.workers,
        bank_size=args.bank_size,
    )
    print(format_table(table))
    return 0
