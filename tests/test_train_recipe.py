"""The pieces of Chinese-CLIP's recipe, each checked against a hand computation or cn_clip's own code."""

from __future__ import annotations

import logging
import math
import warnings

import numpy as np
import pytest
import torch
from cn_clip.clip import tokenize
from cn_clip.training.scheduler import cosine_lr as cn_clip_cosine_lr

from common.precision import cpu_prefers_bf16, resolve_precision
from models.factory import create_model_and_transforms
from training.data import Pair, epoch_plan, split_by_image, steps_per_epoch
from training.loop import warn_if_chance
from training.loss import LOGIT_SCALE_MAX, clamp_logit_scale, clip_loss
from training.metrics import at_chance, metrics, rank
from training.optim import Schedule, cosine_lr, default_lr, make_optimizer, param_groups
from training.run import speaker
from training.step import Amp, backward_step

CAPTIONS = [
    "红色条纹连衣裙",
    "蓝色格子衬衫",
    "绿色波点T恤",
    "黄色纯色裤子",
    "黑色帽子",
    "白色半身裙",
    "紫色衬衫",
    "橙色裤子",
]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny():
    return create_model_and_transforms("tiny", device="cpu").model


def batch(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 64, 64, generator=g), tokenize(
        [CAPTIONS[i % len(CAPTIONS)] for i in range(n)], 52
    )


def test_loss_matches_hand_computation():
    g = torch.Generator().manual_seed(3)
    img = torch.nn.functional.normalize(torch.randn(4, 6, generator=g), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(4, 6, generator=g), dim=-1)
    scale = torch.tensor(math.exp(2.0))
    sim = [
        [float(scale) * sum(img[i, d].item() * txt[j, d].item() for d in range(6)) for j in range(4)]
        for i in range(4)
    ]
    i2t = [-(sim[i][i] - math.log(sum(math.exp(s) for s in sim[i]))) for i in range(4)]
    col = [[sim[i][j] for i in range(4)] for j in range(4)]
    t2i = [-(col[j][j] - math.log(sum(math.exp(s) for s in col[j]))) for j in range(4)]
    expected = (sum(i2t) / 4 + sum(t2i) / 4) / 2
    assert clip_loss(img, txt, scale).item() == pytest.approx(expected, rel=1e-5)


def test_logit_scale_is_clamped_to_zero_and_ln100(tiny):
    original = tiny.logit_scale.detach().clone()
    try:
        with torch.no_grad():
            tiny.logit_scale.fill_(9.0)
        clamp_logit_scale(tiny)
        assert tiny.logit_scale.item() == pytest.approx(math.log(100))
        assert abs(LOGIT_SCALE_MAX - 4.6052) < 1e-4
        with torch.no_grad():
            tiny.logit_scale.fill_(-1.0)
        clamp_logit_scale(tiny)
        assert tiny.logit_scale.item() == 0.0
    finally:
        with torch.no_grad():
            tiny.logit_scale.copy_(original)


def test_no_weight_decay_on_norms_biases_and_logit_scale(tiny):
    groups = {g["names"]: g for g in param_groups(tiny, weight_decay=0.001)}
    names = {id(p): n for n, p in tiny.named_parameters()}
    exempt = {names[id(p)] for p in groups["no_decay"]["params"]}
    decayed = {names[id(p)] for p in groups["decay"]["params"]}
    assert groups["no_decay"]["weight_decay"] == 0.0 and groups["decay"]["weight_decay"] == 0.001
    assert exempt | decayed == set(names.values()) and not exempt & decayed
    for n in names.values():
        is_norm = "LayerNorm" in n or ".ln_" in n
        assert (n in exempt) == (is_norm or n.endswith("bias") or n == "logit_scale"), n
    # everything cn_clip exempts by name is exempt here too
    assert {
        n for n in names.values() if "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n
    } <= exempt
    opt = make_optimizer(tiny, lr=1e-3, weight_decay=0.001)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.0, 0.001]


def test_frozen_vision_is_left_out_of_the_optimizer():
    model = create_model_and_transforms("tiny", device="cpu").model
    for p in model.visual.parameters():
        p.requires_grad = False
    ids = {id(p) for g in param_groups(model, weight_decay=0.1) for p in g["params"]}
    assert not ids & {id(p) for p in model.visual.parameters()}
    assert {id(p) for p in model.bert.parameters()} <= ids


def test_schedule_is_cn_clips_warmup_then_cosine():
    base, warmup, total = 5e-4, 10, 50
    ours = [cosine_lr(s, base_lr=base, warmup=warmup, total_steps=total) for s in range(total)]
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.0)
    adjust = cn_clip_cosine_lr(opt, base, warmup, total)
    theirs = [adjust(s) for s in range(total)]
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)
    assert ours[:warmup] == sorted(ours[:warmup]) and ours[warmup - 1] == pytest.approx(base)
    assert ours[warmup:] == sorted(ours[warmup:], reverse=True) and ours[-1] < 0.01 * base


def test_default_lr_scales_with_the_total_batch():
    assert default_lr(1024, from_scratch=False) == pytest.approx(5e-5)
    assert default_lr(256, from_scratch=False) == pytest.approx(2.5e-5)
    assert default_lr(64, from_scratch=True) > default_lr(64, from_scratch=False)


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_accum_freq_equals_one_big_batch(tiny):
    """cn_clip's gradient cache: 2 micro-batches of 4 give the loss and gradients of one batch of 8."""
    images, texts = batch(8)
    amp, scaler = Amp("fp32", torch.device("cpu")), torch.amp.GradScaler("cuda", enabled=False)
    tiny.train()
    tiny.zero_grad(set_to_none=True)
    big = backward_step(tiny, [(images, texts)], amp=amp, scaler=scaler)
    big_grads = _grads(tiny)
    tiny.zero_grad(set_to_none=True)
    accum = backward_step(tiny, [(images[:4], texts[:4]), (images[4:], texts[4:])], amp=amp, scaler=scaler)
    accum_grads = _grads(tiny)
    tiny.zero_grad(set_to_none=True)
    assert accum == pytest.approx(big, rel=1e-5)
    assert big_grads.keys() == accum_grads.keys() and "logit_scale" in big_grads
    for n, g in big_grads.items():
        # as in cn_clip, every micro-batch's loss reaches logit_scale: its gradient is accum_freq times
        # the big batch's (a constant factor that AdamW normalises away)
        factor = 2.0 if n == "logit_scale" else 1.0
        torch.testing.assert_close(accum_grads[n], factor * g, rtol=1e-4, atol=1e-6, msg=n)
    # and it is not just the loss of the last micro-batch alone
    with torch.no_grad():
        i, t, s = tiny(images[4:], texts[4:])
    assert clip_loss(i, t, s).item() != pytest.approx(big, rel=1e-3)


def test_grad_checkpointing_gives_the_same_gradients():
    model = create_model_and_transforms("tiny", device="cpu").model.train()
    images, texts = batch(6, seed=1)
    amp, scaler = Amp("fp32", torch.device("cpu")), torch.amp.GradScaler("cuda", enabled=False)
    plain = backward_step(model, [(images, texts)], amp=amp, scaler=scaler)
    plain_grads = _grads(model)
    model.zero_grad(set_to_none=True)
    model.set_grad_checkpointing(True)
    with warnings.catch_warnings():  # cn_clip calls checkpoint() without use_reentrant
        warnings.simplefilter("ignore")
        ckpt = backward_step(model, [(images, texts)], amp=amp, scaler=scaler)
    assert ckpt == pytest.approx(plain, rel=1e-6)
    for n, g in plain_grads.items():
        torch.testing.assert_close(model.get_parameter(n).grad, g, rtol=1e-4, atol=1e-6, msg=n)


def pairs_with_repeats(n_images: int, seed: int = 0) -> list[Pair]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_images):
        for _ in range(int(rng.integers(1, 4))):  # 1-3 captions per image, not adjacent in CSV order
            out.append((f"Image{i:05d}.jpg", f"caption {len(out)}"))
    order = rng.permutation(len(out))
    return [Pair(k, *out[j], f"/x/{out[j][0]}") for k, j in enumerate(order)]


def test_validation_split_is_held_out_by_image():
    pairs = pairs_with_repeats(200)
    train, val = split_by_image(pairs, val_fraction=0.1, seed=0)
    train_images, val_images = {p.image_id for p in train}, {p.image_id for p in val}
    assert not train_images & val_images
    assert len(val_images) == 20 and len(train_images) == 180
    assert sorted(p.index for p in train + val) == list(range(len(pairs)))  # every caption once
    again, _ = split_by_image(pairs, val_fraction=0.1, seed=0)
    other, _ = split_by_image(pairs, val_fraction=0.1, seed=1)
    assert again == train and other != train
    # the split does not depend on CSV order, only on the set of pairs and the seed
    _, val_reversed = split_by_image(pairs[::-1], val_fraction=0.1, seed=0)
    assert {p.image_id for p in val_reversed} == val_images


def test_epoch_plan_covers_each_pair_once_and_is_reproducible():
    plan = epoch_plan(50, batch_size=4, accum_freq=3, seed=5, epoch=2)
    assert len(plan) == steps_per_epoch(50, batch_size=4, accum_freq=3) == 4
    assert all(len(step) == 3 and all(len(mb) == 4 for mb in step) for step in plan)
    flat = [i for step in plan for mb in step for i in mb]
    assert len(set(flat)) == 48
    assert plan == epoch_plan(50, batch_size=4, accum_freq=3, seed=5, epoch=2)
    assert plan != epoch_plan(50, batch_size=4, accum_freq=3, seed=5, epoch=3)
    small = epoch_plan(5, batch_size=4, accum_freq=2, seed=0, epoch=0)  # smaller than one step: one step
    assert sorted(i for mb in small[0] for i in mb) == list(range(5))


def test_recall_and_chance_detection():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(15, 16)).astype(np.float32)
    text_image = [i // 2 for i in range(30)]  # 15 images, 2 captions each
    texts = images[text_image] + 0.01 * rng.normal(size=(30, 16)).astype(np.float32)
    perfect = metrics(rank(texts, images, text_image))
    assert perfect["t2i"]["r10"] == 100.0 and perfect["i2t"]["r1"] == 100.0
    assert not at_chance(perfect, n_texts=30, n_images=15)
    random_feats = rng.normal(size=(15, 16)).astype(np.float32)
    m = metrics(rank(texts, random_feats, text_image))
    assert 0 <= m["t2i"]["r1"] <= m["t2i"]["r5"] <= m["t2i"]["r10"] <= 100
    assert m["t2i"]["mr"] == pytest.approx((m["t2i"]["r1"] + m["t2i"]["r5"] + m["t2i"]["r10"]) / 3)
    worst = {d: {"r1": 0.0, "r5": 0.0, "r10": 0.0, "mr": 0.0} for d in ("t2i", "i2t")}
    assert at_chance(worst, n_texts=300, n_images=150)


def test_precision_choice_on_this_machine():
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == "fp32"
    assert resolve_precision("auto", cpu) == ("bf16" if cpu_prefers_bf16() else "fp32")
    assert resolve_precision("amp", cpu) == ("bf16" if cpu_prefers_bf16() else "fp32")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_amp_step_on_cuda():
    model = create_model_and_transforms("tiny", device="cuda").model.train()
    assert resolve_precision("auto", torch.device("cuda")) == "fp16"
    amp = Amp("fp16", torch.device("cuda"))
    assert amp.uses_grad_scaler
    scaler = torch.amp.GradScaler("cuda")
    images, texts = batch(8)
    loss = backward_step(model, [(images.cuda(), texts.cuda())], amp=amp, scaler=scaler)
    assert math.isfinite(loss) and model.visual.conv1.weight.grad is not None


def test_trimming_padding_changes_nothing(tiny):
    from models.tokens import trim_padding

    images, texts = batch(8, seed=2)
    trimmed = trim_padding(texts)
    assert trimmed.shape[1] < texts.shape[1] and (texts[:, trimmed.shape[1] :] == 0).all()
    tiny.eval()
    with torch.no_grad():
        full = tiny.encode_text(texts)
        short = tiny.encode_text(trimmed)
    torch.testing.assert_close(short, full, rtol=1e-4, atol=1e-5)


def _at_chance_record():
    pairs = [Pair(i, f"img{i // 2}", f"caption {i}", f"/none/{i}.jpg") for i in range(300)]
    worst = {d: {"r1": 0.0, "r5": 0.0, "r10": 0.0, "mr": 0.0} for d in ("t2i", "i2t")}
    schedule = Schedule(
        epochs=1, batch_size=8, accum_freq=1, steps_per_epoch=10, base_lr=1e-3, lr_given=False, warmup=1
    )
    return worst, pairs, schedule


def test_chance_warning_is_logged_once_without_echo(caplog):
    """The bug of issue 17: ``say is not log.info`` was always true (a new bound method at every
    lookup), so with ``echo=None`` the warning reached the log twice (as a warning and as info)."""
    record, pairs, schedule = _at_chance_record()
    with caplog.at_level(logging.INFO):
        warn_if_chance(record, pairs, schedule=schedule, say=speaker(None))  # what train(echo=None) passes
    said = [r for r in caplog.records if "still at chance" in r.getMessage()]
    assert [r.levelno for r in said] == [logging.WARNING]


def test_chance_warning_is_also_echoed_when_echo_is_given(caplog):
    record, pairs, schedule = _at_chance_record()
    echoed: list[str] = []
    with caplog.at_level(logging.INFO):
        warn_if_chance(record, pairs, schedule=schedule, say=speaker(echoed.append))
    assert len(echoed) == 1 and echoed[0].startswith("warning: validation recall is still at chance")
    assert [r.levelno for r in caplog.records if "still at chance" in r.getMessage()] == [logging.WARNING]
