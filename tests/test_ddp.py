"""DDP tests: training on 2 processes (gloo, 127.0.0.1) is training on 1 with twice the batch.

``tiny`` has no dropout (its text tower's dropout probabilities are 0 in its config) and the vision
tower has none, so 1-process and 2-process runs are comparable step for step without matching
dropout masks (which cannot match: the masks' shapes follow the per-process batch). Precision is
fp32 and decoding runs in the main process, so nothing else differs either.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

from training.train import train
from tuwen.cli import main

pytestmark = [pytest.mark.ddp, pytest.mark.slow, pytest.mark.usefixtures("one_thread")]
PER_RANK_BATCH = 4
RUN = {"epochs": 2, "lr": 1e-3, "warmup": 2, "val_fraction": 0.25, "precision": "fp32", "workers": 0}
STOP = 3  # the 2-process run stops here (mid-epoch), and a 1-process run resumes it


def cli(*args: str, capfd) -> subprocess.CompletedProcess:
    capfd.readouterr()
    code = main(list(args))
    out, err = capfd.readouterr()
    return subprocess.CompletedProcess(list(args), code, out, err)


def losses(run_dir: Path) -> list[float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if r["kind"] == "train"]


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k, v in a.items():
        torch.testing.assert_close(b[k], v, rtol=1e-5, atol=1e-5, msg=k)


@pytest.fixture(scope="module")
def two_ranks(ingested, tmp_path_factory):
    """``tuwen train --nproc 2``, per-process batch 4, stopped after step 3."""
    out = tmp_path_factory.mktemp("ddp") / "two"
    args = ["train", "--model", "tiny", "--out", str(out), "--home", str(ingested.home), "--nproc", "2"]
    args += ["--batch-size", str(PER_RANK_BATCH), "--epochs", "2", "--lr", "1e-3", "--warmup", "2"]
    args += ["--val-fraction", "0.25", "--precision", "fp32", "--workers", "0", "--stop-at-step", str(STOP)]
    assert main([*args, "--no-progress"]) == 0
    return out


@pytest.fixture(scope="module")
def one_process(ingested, tmp_path_factory):
    """The same run in one process with batch 2 × 4, straight through."""
    out = tmp_path_factory.mktemp("ddp") / "one"
    return train(
        settings=ingested, model="tiny", out=out, batch_size=2 * PER_RANK_BATCH, progress=False, **RUN
    )


def test_two_processes_train_as_one_with_twice_the_batch(ingested, two_ranks, one_process, tmp_path):
    config = json.loads((two_ranks / "config.json").read_text())
    assert config["nproc"] == 2 and config["batch_size"] == 4 and config["global_batch"] == 8
    assert (
        config["total_steps"]
        == json.loads((one_process.last_path.parent / "config.json").read_text())["total_steps"]
    )
    stopped = train(
        settings=ingested,
        model="tiny",
        out=tmp_path / "one-stopped",
        batch_size=2 * PER_RANK_BATCH,
        stop_at_step=STOP,
        progress=False,
        **RUN,
    )
    ddp_losses = losses(two_ranks)
    assert len(ddp_losses) == STOP  # rank 0 alone logs: one record per step
    assert ddp_losses == pytest.approx(losses(stopped.last_path.parent), rel=1e-5)
    assert ddp_losses == pytest.approx(losses(one_process.last_path.parent)[:STOP], rel=1e-5)
    ddp = weights(two_ranks / "last.pt")
    assert not any(k.startswith("module.") for k in ddp)  # cn_clip's format, loadable by one process
    assert_same_weights(weights(stopped.last_path), ddp)
    saved = torch.load(two_ranks / "last.pt", weights_only=True)
    assert saved["step"] == STOP
    ranks = saved["rng"]["ranks"]  # each process's own random state, for a resume on 2 processes
    assert len(ranks) == 2 and not torch.equal(ranks[0]["torch"], ranks[1]["torch"])
    assert torch.equal(ranks[0]["torch"], saved["rng"]["torch"])


def test_checkpoint_of_two_processes_resumes_in_one(two_ranks, one_process, ingested, capfd, tmp_path):
    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    for name in ("last.pt", "config.json", "metrics.jsonl"):
        (resumed_dir / name).write_bytes((two_ranks / name).read_bytes())
    # no --batch-size: one process takes the run's global batch (2 × 4) and continues exactly
    proc = cli("train", "--resume", str(resumed_dir / "last.pt"), "--home", str(ingested.home), capfd=capfd)
    assert proc.returncode == 0, proc.stderr
    assert "changed settings" not in proc.stderr
    config = json.loads((resumed_dir / "config.json").read_text())
    assert config["nproc"] == 1 and config["batch_size"] == 8
    assert losses(resumed_dir) == pytest.approx(losses(one_process.last_path.parent), rel=1e-5)
    assert_same_weights(weights(one_process.last_path), weights(resumed_dir / "last.pt"))


def _grad_worker(rank: int, port: int, out: str) -> None:
    """One of 2 spawned processes: DDP gradients of the step on this rank's slices."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from training.distributed import World

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        world = World(rank=rank, size=2, local_rank=rank, local_size=2, distributed=True)
        result = {}
        for accum in (1, 2):
            model, micro = _model_and_micro_batches(accum=accum, world=world)
            _backward(DistributedDataParallel(model), micro, world=world)
            result[accum] = {n: p.grad for n, p in model.named_parameters()}
        torch.save(result, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _model_and_micro_batches(*, accum: int, world=None):
    """``tiny`` and a step of 8 pairs in ``accum`` micro-batches: the whole step, or this rank's slices."""
    from cn_clip.clip import tokenize

    from models.factory import create_model_and_transforms

    g = torch.Generator().manual_seed(0)
    images = torch.randn(8, 3, 64, 64, generator=g)
    texts = tokenize([f"第{i}件红色条纹连衣裙" for i in range(8)], 52)
    size = 8 // accum
    micro = [(images[j : j + size], texts[j : j + size]) for j in range(0, 8, size)]
    if world is not None:
        part = slice(world.rank * size // 2, (world.rank + 1) * size // 2)  # this rank's half
        micro = [(i[part], t[part]) for i, t in micro]
    return create_model_and_transforms("tiny", device="cpu").model.train(), micro


def _backward(model, micro, *, world=None) -> float:
    from training.step import Amp, backward_step

    amp, scaler = Amp("fp32", torch.device("cpu")), torch.amp.GradScaler("cuda", enabled=False)
    return backward_step(model, micro, amp=amp, scaler=scaler, world=world)


def test_gathered_loss_gives_the_one_process_gradient(tmp_path):
    """2 ranks × 4 pairs, features gathered with gradients and DDP's averaging, give each parameter
    the gradient of one process on all 8; also with --accum-freq 2 (2 ranks × 2 × 2 micro-batches)."""
    import torch.multiprocessing as mp

    from training.distributed import free_port

    mp.spawn(_grad_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for accum in (1, 2):
        model, micro = _model_and_micro_batches(accum=accum)
        _backward(model, micro)
        expected = {n: p.grad for n, p in model.named_parameters()}
        for got in ranks:
            assert got[accum].keys() == expected.keys()
            for n, g in expected.items():
                torch.testing.assert_close(got[accum][n], g, rtol=1e-4, atol=1e-6, msg=f"accum {accum}: {n}")
        # and it is not what one rank's half of the step gives on its own
        half_model, half = _model_and_micro_batches(accum=1, world=None)
        _backward(half_model, [(half[0][0][:4], half[0][1][:4])])
        assert not torch.allclose(half_model.visual.conv1.weight.grad, expected["visual.conv1.weight"])


def test_each_rank_takes_its_slice_of_the_global_plan():
    from training.data import epoch_plan
    from training.distributed import World, local_plan, world_from_env

    plan = epoch_plan(50, batch_size=3 * 4, accum_freq=2, seed=1, epoch=0)
    worlds = [World(rank=r, size=3, local_rank=r, local_size=3, distributed=True) for r in range(3)]
    slices = [local_plan(plan, world=w, batch_size=4) for w in worlds]
    for s, step in enumerate(plan):
        for m, micro in enumerate(step):
            assert [i for rank in slices for i in rank[s][m]] == micro  # rank order = the global order
            assert all(len(rank[s][m]) == 4 for rank in slices)
    assert world_from_env({}) == World()
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    assert world_from_env(env) == World(rank=3, size=4, local_rank=1, local_size=2, distributed=True)
