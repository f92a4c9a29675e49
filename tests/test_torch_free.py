"""Serving without PyTorch: cn_clip's tokenizer and image transform reproduced exactly in numpy, and
a process on cached exported towers that never imports PyTorch (issue 22: a server's memory)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from cn_clip.clip import image_transform as cn_clip_transform
from cn_clip.clip import tokenize as cn_clip_tokenize
from PIL import Image

from common.backend import installed
from models.backends import ensure_converted
from models.encoder import Encoder
from models.factory import create_model_and_transforms
from models.preprocess import image_transform
from models.tokens import CONTEXT_LENGTH, token_lengths, tokenize_texts, trim_padding

TEXTS = [
    "一只猫在沙发上睡觉",
    "",
    "Red dress 红色连衣裙 2024款!!",
    "😀 表情 emoji",
    "长" * 80,  # longer than the context: truncated as cn_clip truncates
    "  spaces \t and\ttabs  ",
    "café naïve ÀÉ ﬁ",  # accents and a ligature: the basic tokenizer's normalisation
    "ＦＵＬＬ　ｗｉｄｔｈ，全角标点！",
]


def test_tokens_equal_cn_clips_own():
    ours = tokenize_texts(TEXTS)
    assert ours.dtype == np.int64 and ours.shape == (len(TEXTS), CONTEXT_LENGTH)
    np.testing.assert_array_equal(ours, cn_clip_tokenize(TEXTS, CONTEXT_LENGTH).numpy())


def test_lengths_and_trimming_work_on_arrays_and_tensors():
    tokens = tokenize_texts(["红色连衣裙", "帽"])
    np.testing.assert_array_equal(token_lengths(tokens), [7, 3])  # [CLS] + 5 + [SEP], [CLS] + 1 + [SEP]
    assert trim_padding(tokens).shape == (2, 7)
    tensor = cn_clip_tokenize(["红色连衣裙", "帽"])
    assert trim_padding(tensor).shape == (2, 7) and token_lengths(tensor).tolist() == [7, 3]


@pytest.mark.parametrize(
    ("size", "mode"),
    [((640, 480), "RGB"), ((100, 300), "L"), ((224, 224), "RGB"), ((50, 50), "RGBA"), ((999, 20), "P")],
)
def test_pixels_equal_cn_clips_transform_bit_for_bit(size, mode):
    rng = np.random.default_rng(sum(size))
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)
    ours = image_transform(224)(image)
    assert ours.dtype == np.float32 and ours.shape == (3, 224, 224)
    np.testing.assert_array_equal(ours, cn_clip_transform(224)(image).numpy())


SERVE_WITHOUT_TORCH = """
import json, sys
import numpy as np
from PIL import Image
import app.main  # the whole service, as uvicorn imports it
from models.encoder import open_encoder
encoder = open_encoder("tiny", device=None, backend="openvino", precision="auto", cache_dir=sys.argv[1])
texts = encoder.encode_texts(json.loads(sys.argv[2]))
image = encoder.encode_pil([Image.open(sys.argv[3])])
files, errors = encoder.encode_image_files([sys.argv[3]], workers=0)
heavy = sorted(m for m in ("torch", "torchvision", "cn_clip.clip") if m in sys.modules)
print(json.dumps({"heavy": heavy, "built": encoder.loaded.built, "texts": texts.tolist(),
                  "image": image.tolist(), "files": files.tolist(), "precision": encoder.precision}))
"""


@pytest.mark.skipif(not installed("openvino"), reason="openvino not installed")
def test_a_process_on_cached_towers_never_imports_pytorch(tmp_path):
    """The service's imports, a text query, an uploaded image and an added file, all on cached
    OpenVINO towers: PyTorch (840 MB of memory) is never imported, and the vectors are PyTorch's."""
    tiny = create_model_and_transforms("tiny", device="cpu")
    cache = tmp_path / "converted"
    ensure_converted(tiny, fmt="openvino", precision="fp32", cache_dir=cache)
    photo = tmp_path / "photo.jpg"
    rng = np.random.default_rng(7)
    Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(photo, quality=90)
    texts = ["红色条纹连衣裙", "帽"]
    run = subprocess.run(
        [sys.executable, "-c", SERVE_WITHOUT_TORCH, str(cache), json.dumps(texts), str(photo)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["heavy"] == [] and got["built"] is False
    reference = Encoder(tiny, precision="fp32", backend="torch")
    bf16 = got["precision"] == "bf16"  # auto takes bf16 images where OpenVINO measures them faster
    for ours, theirs, floor in (
        (got["texts"], reference.encode_texts(texts), 0.9999),
        (got["image"], reference.encode_pil([Image.open(photo)]), 0.999 if bf16 else 0.9999),
        (got["files"], reference.encode_image_files([photo], workers=0)[0], 0.999 if bf16 else 0.9999),
    ):
        assert float(np.min(np.sum(np.asarray(ours) * theirs, axis=1))) >= floor


@pytest.mark.parametrize(("cores", "workers"), [(1, 0), (2, 0), (3, 2), (4, 3), (16, 4)])
def test_small_machines_decode_between_batches(monkeypatch, cores, workers):
    """On 2 cores the model keeps both and images decode in process (no DataLoader, no PyTorch)."""
    import common.runtime as runtime

    monkeypatch.setattr(runtime, "available_cores", lambda: cores)
    assert runtime.decode_workers() == workers
    assert runtime.decode_workers(1) == 1  # asked for: as asked


def test_a_negative_worker_count_is_refused_naming_the_flag():
    import common.runtime as runtime
    from common.errors import TuwenError

    with pytest.raises(TuwenError, match=r"--workers must be 0 \(decode in this process\) or more, not -1"):
        runtime.decode_workers(-1)
