"""Whole runs of ``train()`` on the small corpus: outputs, checkpoint format, exact resume."""

from __future__ import annotations

import json
import math

import pytest
import torch

from common.settings import Settings
from models.factory import create_model_and_transforms
from training import checkpoint
from training.train import train

pytestmark = pytest.mark.slow
RUN = {
    "epochs": 2,
    "batch_size": 8,
    "lr": 1e-3,
    "warmup": 2,
    "val_fraction": 0.25,
    "precision": "fp32",
    "workers": 0,
}


@pytest.fixture(scope="module")
def straight(ingested, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "straight"
    return train(settings=ingested, model="tiny", out=out, progress=False, echo=lambda _: None, **RUN)


def test_run_folder_has_checkpoints_config_log_and_curves(straight):
    out = straight.last_path.parent
    assert {"last.pt", "best.pt", "config.json", "metrics.jsonl", "curves.png"} <= {
        p.name for p in out.iterdir()
    }
    config = json.loads((out / "config.json").read_text())
    assert (
        config["arch"] == "tiny" and config["total_steps"] == straight.steps == 2 * config["steps_per_epoch"]
    )
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in records if r["kind"] == "train"]
    assert train_steps == list(range(1, straight.steps + 1))
    val = [r for r in records if r["kind"] == "val"]
    assert [r["step"] for r in val] == [config["steps_per_epoch"], straight.steps]  # every epoch
    for r in val:
        for direction in ("t2i", "i2t"):
            m = r[direction]
            assert 0 <= m["r1"] <= m["r5"] <= m["r10"] <= 100
            assert m["mr"] == pytest.approx((m["r1"] + m["r5"] + m["r10"]) / 3)
    assert straight.best["score"] == max(r["score"] for r in val)
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_checkpoint_is_cn_clip_format_and_loads_in_our_factory(straight):
    ckpt = torch.load(straight.last_path, map_location="cpu", weights_only=True)
    assert {"epoch", "step", "name", "state_dict", "optimizer", "model_arch"} <= ckpt.keys()
    assert ckpt["model_arch"] == "tiny" and ckpt["step"] == straight.steps and ckpt["epoch"] == 2
    assert not any(k.startswith("module.") for k in ckpt["state_dict"])
    assert 0 <= ckpt["state_dict"]["logit_scale"].item() <= math.log(100) + 1e-6
    loaded = create_model_and_transforms(str(straight.best_path), device="cpu")
    assert loaded.arch.name == "tiny"
    fresh = create_model_and_transforms("tiny", device="cpu").model.state_dict()
    best = torch.load(straight.best_path, map_location="cpu", weights_only=True)["state_dict"]
    for k, v in loaded.model.state_dict().items():
        torch.testing.assert_close(v, best[k])
    assert any(not torch.equal(fresh[k], best[k]) for k in fresh)  # it did train


def test_resume_continues_exactly(ingested, straight, tmp_path):
    """N steps straight == about N/2 steps, stop, resume for the rest (stopping mid-epoch on purpose)."""
    total = straight.steps
    half = total // 2 + 1  # one step into the second epoch
    assert half < total
    out = tmp_path / "resumed"
    first = train(settings=ingested, model="tiny", out=out, stop_at_step=half, progress=False, **RUN)
    assert first.stopped_early and first.steps == half
    assert torch.load(out / "last.pt", weights_only=True)["step"] == half
    second = train(
        settings=ingested,
        model="tiny",
        out=out,
        resume=out / "last.pt",
        progress=False,
        echo=lambda _: None,
        **RUN,
    )
    assert second.steps == total and not second.stopped_early
    a = torch.load(straight.last_path, weights_only=True)
    b = torch.load(second.last_path, weights_only=True)
    for k, v in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][k], v, rtol=1e-5, atol=1e-6, msg=k)
    state_a, state_b = a["optimizer"]["state"], b["optimizer"]["state"]
    assert state_a.keys() == state_b.keys()
    for k in state_a:
        torch.testing.assert_close(state_b[k]["exp_avg"], state_a[k]["exp_avg"], rtol=1e-5, atol=1e-7)
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["kind"] == "train"] == list(range(1, total + 1))  # no duplicates


def test_freeze_vision_trains_the_text_tower_only(ingested, tmp_path):
    result = train(
        settings=ingested,
        model="tiny",
        out=tmp_path / "frozen",
        freeze_vision=True,
        progress=False,
        echo=lambda _: None,
        **{**RUN, "epochs": 1},
    )
    before = create_model_and_transforms("tiny", device="cpu").model.state_dict()
    after = checkpoint.load(result.last_path)["state_dict"]
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("visual."))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("bert."))


def test_chance_warning_after_first_epoch(ingested, tmp_path):
    said: list[str] = []
    train(
        settings=ingested,
        model="tiny",
        out=tmp_path / "chance",
        progress=False,
        echo=said.append,
        **{**RUN, "epochs": 1, "lr": 1e-9},  # learns nothing
    )
    assert any("at chance after the first epoch" in line for line in said)


def test_bad_settings_are_clear_errors(ingested, tmp_path):
    from common.errors import TuwenError

    with pytest.raises(TuwenError, match="val-fraction"):
        train(settings=ingested, model="tiny", out=tmp_path / "x", progress=False, val_fraction=1.5)
    with pytest.raises(TuwenError, match="batch-size"):
        train(settings=ingested, model="tiny", out=tmp_path / "x", progress=False, batch_size=0)
    with pytest.raises(TuwenError, match="no readable training pairs"):
        train(settings=Settings(home=tmp_path / "empty"), model="tiny", out=tmp_path / "x", progress=False)


def test_a_real_arch_checkpoint_loads_with_cn_clips_load_from_name(tmp_path):
    """Our checkpoint writer on RN50 (the smallest real arch), read back by cn_clip itself."""
    from cn_clip.clip import load_from_name

    from training.optim import make_optimizer

    loaded = create_model_and_transforms("random:RN50", device="cpu")
    optimizer = make_optimizer(loaded.model, lr=1e-5, weight_decay=0.001, arch="RN50")
    path = checkpoint.save(
        tmp_path / "best.pt",
        payload=checkpoint.payload(
            model=loaded.model,
            optimizer=optimizer,
            scaler=None,
            epoch=1,
            step=1,
            name="rn50",
            arch="RN50",
            best_score=None,
            train_config={"arch": "RN50"},
        ),
    )
    theirs, preprocess = load_from_name(
        str(path),
        device="cpu",
        vision_model_name="RN50",
        text_model_name="RBT3-chinese",
        input_resolution=224,
    )
    ours = loaded.model.state_dict()
    for k, v in theirs.state_dict().items():
        # cn_clip's create_model casts to fp16 before loading (then .float() on CPU): fp16 rounding
        torch.testing.assert_close(v.float(), ours[k].float(), rtol=1e-3, atol=1e-5, msg=k)
    assert preprocess.transforms[0].size == (224, 224)
