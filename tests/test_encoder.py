"""Encoder: the fast default path is equivalent to fp32, and bad files give errors, not exceptions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cn_clip.clip import image_transform as cn_clip_image_transform
from cn_clip.clip import tokenize
from PIL import Image

from common.errors import TuwenError
from common.precision import cpu_prefers_bf16, cpu_supports_bf16, resolve_precision
from models.encoder import Encoder
from models.factory import create_model_and_transforms
from models.tokens import CONTEXT_LENGTH

CAPTIONS = [
    "红色条纹连衣裙",
    "一件蓝色格子衬衫，适合通勤和约会穿着，面料柔软透气，夏天穿很舒服",
    "帽子",
    "夏季女士黄色波点半身裙新款",
    "这条裤子是黑色的",
    "白色T恤，简约百搭",
    "紫色的纯色连衣裙，今年很流行的款式，性价比高",
]


@pytest.fixture(scope="module")
def tiny():
    return create_model_and_transforms("tiny", device="cpu")


def _photo(seed: int, size: tuple[int, int]) -> Image.Image:
    """Smooth colour gradients plus noise: JPEG-realistic content, different for each seed."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = rng.uniform(0, 255, 3) * (xx / w)[..., None] + rng.uniform(0, 255, 3) * (yy / h)[..., None]
    img = img / 2 + rng.normal(0, 8, (h, w, 3))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def photo_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for i, size in enumerate([(500, 375), (375, 500), (1024, 768), (640, 480), (96, 64), (500, 375)]):
        path = folder / f"p{i}.jpg"
        _photo(i, size).save(path, "JPEG", quality=90)
        paths.append(path)
    return paths


def _min_cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sum(a * b, axis=1).min())


def _reference_texts(loaded, texts: list[str]) -> np.ndarray:
    """cn_clip's own way: one text at a time, padded to 52 tokens, fp32."""
    with torch.no_grad():
        out = [loaded.model.encode_text(tokenize([t], CONTEXT_LENGTH))[0].numpy() for t in texts]
    out = np.stack(out)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_auto_precision_is_bf16_exactly_where_the_cpu_has_it_and_it_pays():
    assert resolve_precision("auto", torch.device("cpu")) == ("bf16" if cpu_prefers_bf16() else "fp32")
    assert not cpu_prefers_bf16() or cpu_supports_bf16()  # never bf16 without native bf16
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"
    with pytest.raises(TuwenError, match="precision"):
        resolve_precision("int4", torch.device("cpu"))


def test_fp32_texts_with_trimmed_padding_match_cn_clip_one_by_one(tiny):
    reference = _reference_texts(tiny, CAPTIONS)
    # batch 3 mixes lengths across batches; the result must come back in input order
    ours = Encoder(tiny, precision="fp32").encode_texts(CAPTIONS, batch_size=3)
    assert ours.shape == reference.shape
    assert _min_cos(ours, reference) > 0.99999
    assert np.abs(ours[0] - ours[1]).max() > 1e-3


@pytest.mark.parametrize("precision", ["auto", "bf16"])
def test_fast_texts_are_equivalent_to_fp32(tiny, precision):
    reference = _reference_texts(tiny, CAPTIONS)
    fast = Encoder(tiny, precision=precision).encode_texts(CAPTIONS, batch_size=4)
    assert _min_cos(fast, reference) >= 0.99
    # every text still finds itself first among the others
    assert list(np.argmax(fast @ reference.T, axis=1)) == list(range(len(CAPTIONS)))


def test_empty_text_list_gives_empty_matrix(tiny):
    assert Encoder(tiny).encode_texts([]).shape == (0, tiny.embed_dim)


@pytest.mark.parametrize("precision", ["auto", "bf16"])
def test_fast_image_files_are_equivalent_to_fp32_full_decode(tiny, photo_files, precision):
    # reference: full-resolution decode (no JPEG draft), cn_clip's transform, fp32, one at a time
    with torch.no_grad():
        ref = np.stack(
            [
                tiny.model.encode_image(
                    cn_clip_image_transform(tiny.arch.resolution)(Image.open(p)).unsqueeze(0)
                )[0].numpy()
                for p in photo_files
            ]
        )
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    fast, errors = Encoder(tiny, precision=precision).encode_image_files(photo_files, batch_size=4, workers=1)
    assert errors == [""] * len(photo_files)
    assert _min_cos(fast, ref) >= 0.99
    assert list(np.argmax(fast @ ref.T, axis=1)) == list(range(len(photo_files)))


def test_encode_pil_agrees_with_encode_image_files(tiny, photo_files):
    encoder = Encoder(tiny, precision="fp32")
    small = [p for p in photo_files if Image.open(p).width < 200]  # no JPEG draft below 2x input size
    from_files, _ = encoder.encode_image_files(small, workers=0)
    from_pil = encoder.encode_pil([Image.open(p).convert("RGB") for p in small])
    assert _min_cos(from_files, from_pil) > 0.9999


@pytest.mark.parametrize("workers", [0, 2])
def test_unreadable_files_give_errors_and_zero_rows_not_exceptions(tiny, photo_files, tmp_path, workers):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "text.jpg"
    text.write_text("not an image at all")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(photo_files[0].read_bytes()[:300])
    paths = [photo_files[0], empty, text, tmp_path / "missing.jpg", truncated, photo_files[1]]
    vectors, errors = Encoder(tiny).encode_image_files(paths, batch_size=2, workers=workers)
    assert [bool(e) for e in errors] == [False, True, True, True, True, False]
    assert "empty" in errors[1] and "not a recognised image" in errors[2] and "not found" in errors[3]
    assert not vectors[1:5].any()
    np.testing.assert_allclose(np.linalg.norm(vectors[[0, 5]], axis=1), 1.0, atol=1e-5)


def test_auto_takes_bf16_only_where_it_was_measured_faster(monkeypatch):
    """Issue 22: AVX512-BF16 without AMX ran bf16 products at about half the fp32 speed on one Xeon;
    auto follows the measured gain, never the instruction set alone."""
    import common.hardware as hardware
    import common.precision as precision

    for gain, supported, expected in ((0.5, True, False), (2.5, True, True), (2.5, False, False)):
        precision.cpu_prefers_bf16.cache_clear()
        monkeypatch.setattr(precision, "bf16_gemm_gain", lambda gain=gain: gain)
        monkeypatch.setattr(hardware, "cpu_supports_bf16", lambda supported=supported: supported)
        assert precision.cpu_prefers_bf16() is expected, (gain, supported)
        assert resolve_precision("auto", torch.device("cpu")) == ("bf16" if expected else "fp32")
    precision.cpu_prefers_bf16.cache_clear()
