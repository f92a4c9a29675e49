"""``tuwen train`` → ``tuwen eval`` → ``tuwen index`` through the CLI's ``main`` (in-process: the
console script is only ``main``, and each fresh interpreter costs seconds of imports)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tuwen.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def run(*args: str, home: Path, capfd) -> subprocess.CompletedProcess:
    capfd.readouterr()
    code = main([*args, "--home", str(home)])
    out, err = capfd.readouterr()
    return subprocess.CompletedProcess(list(args), code, out, err)


def test_train_eval_index_end_to_end(small_corpus, tmp_path, capfd):
    root, _ = small_corpus
    home = tmp_path / "home"
    assert run("ingest", "--root", str(root), home=home, capfd=capfd).returncode == 0
    run_dir = home / "runs" / "cli"
    proc = run(
        "train",
        "--model", "tiny",
        "--out", str(run_dir),
        "--epochs", "1",
        "--batch-size", "8",
        "--val-fraction", "0.25",
        "--workers", "1",
        "--no-progress",
        home=home,
        capfd=capfd,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert Path(summary["best"]) == run_dir / "best.pt" and (run_dir / "last.pt").is_file()
    assert json.loads((run_dir / "config.json").read_text())["arch"] == "tiny"

    preds = tmp_path / "preds"
    proc = run(
        "eval", "--model", str(run_dir / "best.pt"), "--predictions-out", str(preds), home=home, capfd=capfd
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert set(result) == {"t2i", "i2t"} and all(set(v) == {"r1", "r5", "r10", "mr"} for v in result.values())
    # the same split and weights as the run's own validation of best.pt: the same numbers
    best = summary["best_metrics"]
    for direction in ("t2i", "i2t"):
        for key in ("r1", "r5", "r10", "mr"):
            assert result[direction][key] == pytest.approx(best[direction][key], abs=1e-9)
    assert {p.name for p in preds.iterdir()} >= {
        "t2i_predictions.jsonl",
        "t2i_ground_truth.jsonl",
        "id_map.json",
    }

    proc = run("index", "--model", str(run_dir / "best.pt"), home=home, capfd=capfd)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--model", "tiny", "--out", "R"], "no readable training pairs"),
        (["train", "--out", "R"], "--model and --out are required"),
        (["train", "--resume", "nowhere/last.pt"], "no such checkpoint"),
        (["eval", "--model", "tiny"], "no readable training pairs"),
        (["train", "--model", "tiny", "--out", "R", "--nproc", "0"], "--nproc must be at least 1"),
        (["train", "--model", "tiny", "--out", "R", "--nproc", "2"], "no readable training pairs"),
        (["train", "--model", "tiny", "--out", "R", "--nproc", "2", "--batch-size", "0"], "batch-size"),
    ],
)
def test_errors_are_one_line(tmp_path, args, message, capfd):
    proc = run(*[str(tmp_path / a) if a == "R" else a for a in args], home=tmp_path / "home", capfd=capfd)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_processes_of_a_launch_get_the_same_settings_back(tmp_path):
    """What ``--nproc`` hands each torchrun process parses back to the same run, without --nproc."""
    from training.cli import worker_argv
    from tuwen.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(
        ["train", "--model", "tiny", "--out", "R", "--nproc", "2", "--augment", "--lr", "0.002",
         "--stop-at-step", "3", "--workers", "0", "--home", str(tmp_path)]
    )  # fmt: skip
    chosen = {"epochs": 3, "batch_size": 8, "lr": 0.002, "augment": True, "freeze_vision": False, "seed": 0}
    again = parser.parse_args(worker_argv(args, model="tiny", out="R", chosen=chosen))
    assert again.nproc == 1 and again.model == "tiny" and again.out == "R" and again.home == str(tmp_path)
    assert again.lr == 0.002 and again.augment is True and again.freeze_vision is None
    assert (
        again.batch_size == 8
        and again.stop_at_step == 3
        and again.workers == 0
        and again.no_progress is False
    )
