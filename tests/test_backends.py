"""Every backend against PyTorch fp32 on the tiny model; export, stamps, cache; the backend policy."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from common.backend import installed, resolve_backend, resolve_backend_precision
from common.errors import TuwenError
from common.precision import cpu_prefers_bf16, cpu_supports_bf16, cpu_supports_vnni
from common.runtime import MAX_STREAMS, encode_streams
from models.backends import CONVERT_FROM_IMAGES, Calibration, ensure_converted
from models.backends.converted import check_stamp, converted_path
from models.backends.export import export_towers
from models.encoder import PASS_IMAGES, Encoder, ImageFiles, open_encoder
from models.factory import create_model_and_transforms

CAPTIONS = [
    "红色条纹连衣裙",
    "一件蓝色格子衬衫，适合通勤和约会穿着，面料柔软透气，夏天穿很舒服，这句话更长一些以便超过三十个字",
    "帽",
    "夏季女士黄色波点半身裙新款",
    "白色T恤，简约百搭",
]
RUNTIMES = [
    pytest.param(b, marks=pytest.mark.skipif(not installed(b), reason=f"{b} not installed"))
    for b in ("onnx", "openvino")
]


@pytest.fixture(scope="module")
def tiny():
    return create_model_and_transforms("tiny", device="cpu")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("converted")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(3)
    paths = []
    for i, size in enumerate([(300, 200), (64, 64), (200, 300), (120, 90), (500, 400)]):
        pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        path = folder / f"p{i}.jpg"
        Image.fromarray(pixels).resize((size[0] // 4, size[1] // 4)).resize(size).save(path, quality=90)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def reference(tiny, cache, photos):
    torch_fp32 = Encoder(tiny, precision="fp32", backend="torch")
    return torch_fp32.encode_texts(CAPTIONS, batch_size=2), torch_fp32.encode_image_files(photos, workers=0)[
        0
    ]


def _min_cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sum(a * b, axis=1).min())


@pytest.mark.parametrize("backend", RUNTIMES)
@pytest.mark.parametrize("batch", [1, 2, 5])
def test_fp32_backends_equal_pytorch_fp32_at_every_batch_and_text_length(
    tiny, cache, photos, reference, backend, batch
):
    encoder = Encoder(tiny, precision="fp32", backend=backend, cache_dir=cache)
    assert (encoder.backend, encoder.precision, encoder.text_precision) == (backend, "fp32", "fp32")
    texts = encoder.encode_texts(CAPTIONS, batch_size=batch)
    images = encoder.encode_image_files(photos, batch_size=batch, workers=0)[0]
    assert _min_cos(texts, reference[0]) >= 0.9999
    assert _min_cos(images, reference[1]) >= 0.9999
    assert np.abs(texts[0] - texts[2]).max() > 1e-3  # different inputs, different outputs


@pytest.mark.parametrize("backend", RUNTIMES)
def test_export_is_stamped_dynamic_and_cached(tiny, cache, backend):
    folder = ensure_converted(tiny, fmt=backend, precision="fp32", cache_dir=cache)
    assert folder == converted_path(cache, tiny.model_id, fmt=backend, precision="fp32", calibration=None)
    meta = check_stamp(folder, tiny.model_id)
    assert meta["format"] == backend and meta["embed_dim"] == tiny.embed_dim
    mtime = (folder / "meta.json").stat().st_mtime_ns
    assert ensure_converted(tiny, fmt=backend, precision="fp32", cache_dir=cache) == folder
    assert (folder / "meta.json").stat().st_mtime_ns == mtime  # reused, not rebuilt
    with pytest.raises(TuwenError, match="not random:RN50"):
        check_stamp(folder, "random:RN50")


@pytest.mark.parametrize("backend", RUNTIMES)
def test_towers_of_another_model_are_refused_even_if_meta_json_is_edited(tiny, tmp_path, backend):
    from models.backends.runtime_towers import OnnxTowers, OpenVinoTowers

    folder = export_towers(tiny, fmt=backend, out=tmp_path / "x")
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, "model_id": "other"}))
    kwargs = {} if backend == "onnx" else {"image_precision": "fp32", "text_precision": "fp32"}
    cls = OnnxTowers if backend == "onnx" else OpenVinoTowers
    with pytest.raises(TuwenError, match="holds towers of model other, not tiny"):
        cls(folder, model_id=tiny.model_id, threads=1, **kwargs)
    with pytest.raises(TuwenError, match="exported from model tiny@seed0, not other"):
        cls(folder, model_id="other", threads=1, **kwargs)


@pytest.mark.skipif(not installed("openvino"), reason="openvino not installed")
def test_int8_openvino_calibrates_on_the_corpus_and_stays_close(tiny, cache, photos, reference):
    calibration = Calibration(image_paths=tuple(map(str, photos)), texts=tuple(CAPTIONS))
    encoder = Encoder(tiny, precision="int8", backend="openvino", cache_dir=cache, calibration=calibration)
    assert (encoder.precision, encoder.text_precision) == ("int8", "int8")
    texts = encoder.encode_texts(CAPTIONS)
    assert _min_cos(texts, reference[0]) >= 0.95
    images = encoder.encode_image_files(photos, workers=0)[0]
    assert _min_cos(images, reference[1]) >= 0.95
    import openvino as ov

    folder = next(cache.glob("*/openvino-int8-*"))
    ops = {op.get_type_name() for op in ov.Core().read_model(folder / "text.xml").get_ops()}
    assert "FakeQuantize" in ops  # really quantized, not an fp32 copy
    # without a calibration set (the service), the cached int8 conversion of this model is used
    said: list[str] = []
    again = Encoder(tiny, precision="int8", backend="openvino", cache_dir=cache, echo=said.append)
    np.testing.assert_allclose(again.encode_texts(CAPTIONS), texts, atol=1e-5)
    # int8 is emulated without VNNI/AMX (slower than fp32 on such CPUs): the user is told so
    assert any("no int8 dot-product" in line for line in said) == (not cpu_supports_vnni())


def test_int8_without_any_conversion_says_what_to_run(tiny, tmp_path):
    if not installed("openvino"):
        pytest.skip("openvino not installed")
    with pytest.raises(TuwenError, match="tuwen index --backend openvino --precision int8"):
        Encoder(tiny, precision="int8", backend="openvino", cache_dir=tmp_path)


def test_backend_policy():
    assert resolve_backend("torch", device_type="cpu") == "torch"
    auto = resolve_backend("auto", device_type="cpu")
    assert auto in {"openvino", "onnx", "torch"}
    if installed("openvino"):
        import platform

        assert (auto == "openvino") == (platform.machine().lower() in {"x86_64", "amd64"})
    assert resolve_backend(None, device_type="cuda") in {"torch", "onnx"}
    with pytest.raises(TuwenError, match="backend must be one of"):
        resolve_backend("tensorrt", device_type="cpu")
    with pytest.raises(TuwenError, match="int8 needs --backend"):
        resolve_backend_precision("torch", "int8", cpu_bf16=True)
    with pytest.raises(TuwenError, match="no native bf16"):
        resolve_backend_precision("openvino", "bf16", cpu_bf16=False)
    with pytest.raises(TuwenError, match="supports precision fp32, int8"):
        resolve_backend_precision("onnx", "bf16", cpu_bf16=True)
    assert resolve_backend_precision("openvino", "auto", cpu_bf16=True) == ("bf16", "fp32")
    assert resolve_backend_precision("onnx", "auto", cpu_bf16=True) == ("fp32", "fp32")


def test_auto_runs_a_small_first_job_on_pytorch_and_a_large_one_converts(tiny, tmp_path):
    """Issue 22, no first-run penalty: under ``auto`` a job below ``CONVERT_FROM_IMAGES`` images with
    nothing converted yet runs on PyTorch at the precisions the exported backend would use, and
    converts nothing; a large job converts, after which small jobs take the converted towers too; an
    explicit backend, or a job of unknown size (a server), always converts."""
    exported = resolve_backend("auto", device_type="cpu")
    if exported == "torch":
        pytest.skip("auto is PyTorch on this machine: there is no conversion to skip")
    cache = tmp_path / "converted"
    small = Encoder(tiny, backend="auto", cache_dir=cache, job_images=10)
    expected = resolve_backend_precision(
        exported, "auto", cpu_bf16=cpu_supports_bf16(), prefer_bf16=cpu_prefers_bf16()
    )
    assert (small.backend, small.precision, small.text_precision) == ("torch", *expected)
    assert not cache.exists() or not any(cache.rglob("meta.json"))
    large = Encoder(tiny, backend="auto", cache_dir=cache, job_images=CONVERT_FROM_IMAGES)
    assert large.backend == exported and any(cache.rglob("meta.json"))
    assert Encoder(tiny, backend="auto", cache_dir=cache, job_images=10).backend == exported
    for backend, images, folder in ((exported, 10, "explicit"), ("auto", None, "server")):
        enc = Encoder(tiny, backend=backend, cache_dir=tmp_path / folder, job_images=images)
        assert enc.backend == exported, (backend, images)


@pytest.mark.parametrize("backend", RUNTIMES)
def test_export_model_command_fills_the_cache_the_encoder_reuses(tiny, tmp_path, capsys, backend):
    from common.settings import Settings
    from tuwen.cli import main

    home = tmp_path / "home"
    assert main(["export-model", "--home", str(home), "--model", "tiny", "--format", backend]) == 0
    folder = converted_path(
        Settings(home=home).converted_dir, tiny.model_id, fmt=backend, precision="fp32", calibration=None
    )
    stamp = (folder / "meta.json").stat().st_mtime_ns
    encoder = Encoder(tiny, backend=backend, precision="fp32", cache_dir=Settings(home=home).converted_dir)
    assert encoder.encode_texts(["一只猫"]).shape == (1, tiny.embed_dim)
    assert (folder / "meta.json").stat().st_mtime_ns == stamp
    assert (
        main(
            [
                "export-model",
                "--home",
                str(home),
                "--model",
                "tiny",
                "--format",
                backend,
                "--precision",
                "int8",
            ]
        )
        == 2
    )
    assert "run `tuwen ingest --root DIR` first" in capsys.readouterr().err


@pytest.mark.skipif(not installed("openvino"), reason="openvino not installed")
def test_index_with_int8_calibrates_on_the_corpus_and_the_service_reuses_it(ingested, tmp_path):
    from fastapi.testclient import TestClient

    from app.main import create_app
    from common.settings import Settings
    from indexer.build import index_corpus
    from indexer.index_files import current_generation, load_generation

    settings = Settings(home=ingested.home, backend="openvino", precision="int8")
    index_corpus(settings=settings, model="tiny", precision="int8", progress=False, echo=lambda _m: None)
    manifest = load_generation(current_generation(settings.index_dir)).manifest
    assert manifest.precision == "int8"
    folders = list(settings.converted_dir.glob("*/openvino-int8-*"))
    assert (
        len(folders) == 1 and json.loads((folders[0] / "meta.json").read_text())["calibration"]["images"] > 0
    )
    with TestClient(create_app(settings)) as client:
        r = client.get("/api/search/text", params={"q": "红色连衣裙", "k": 3})
        assert r.status_code == 200 and len(r.json()["results"]) == 3
        stats = client.get("/api/stats").json()
    assert stats["model"]["model_id"] == "tiny@seed0"
    assert list(settings.converted_dir.glob("*/openvino-int8-*")) == folders  # reused, not recalibrated


@pytest.mark.parametrize("backend", RUNTIMES)
def test_cached_towers_never_build_the_pytorch_model(tiny, cache, reference, backend):
    """A server whose towers are converted already holds no PyTorch copy of the weights, not even
    for a moment (``open_encoder`` loads lazily): its peak memory is the exported towers'."""
    ensure_converted(tiny, fmt=backend, precision="fp32", cache_dir=cache)
    encoder = open_encoder("tiny", device="cpu", backend=backend, precision="fp32", cache_dir=cache)
    assert encoder.backend == backend and not encoder.loaded.built
    assert _min_cos(encoder.encode_texts(CAPTIONS, batch_size=2), reference[0]) >= 0.9999
    assert not encoder.loaded.built
    on_torch = open_encoder("tiny", device="cpu", backend="torch", precision="fp32", cache_dir=cache)
    assert on_torch.loaded.built and _min_cos(on_torch.encode_texts(CAPTIONS), reference[0]) >= 0.9999


@pytest.mark.parametrize("backend", ["torch", *RUNTIMES])
@pytest.mark.parametrize("workers", [0, 1])
def test_passes_at_once_give_the_rows_of_one_pass_in_order(tiny, cache, photos, tmp_path, backend, workers):
    """A bulk job's image batches run as several passes at once (``streams``): the same vectors and
    per-file errors, row for row, as one pass at a time, whether files decode in the passes' threads
    or in a worker process, for batches that do not divide evenly among the passes."""
    missing = tmp_path / "missing.jpg"
    paths = [*photos, missing, *photos[:2]]  # 8 files: batches of 3, passes of 1, a last batch of 2
    one = Encoder(tiny, precision="fp32", backend=backend, cache_dir=cache)
    many = Encoder(tiny, precision="fp32", backend=backend, cache_dir=cache, streams=3)
    assert many.towers.streams == (1 if backend == "onnx" else 3)
    expected, expected_errors = one.encode_image_files(paths, batch_size=3, workers=workers)
    vectors, errors = many.encode_image_files(paths, batch_size=3, workers=workers)
    assert errors == expected_errors and "not found" in errors[5]
    assert [bool(e) for e in errors] == [False] * 5 + [True, False, False]
    np.testing.assert_allclose(vectors, expected, atol=2e-6)
    assert not vectors[5].any() and _min_cos(vectors[:5], expected[:5]) > 0.99999


def test_pytorch_passes_share_out_the_threads_and_give_them_back(tiny):
    """PyTorch's thread count is process-wide: during a bulk encode each pass gets its share, after
    it the process has its own count again."""
    towers = Encoder(tiny, backend="torch", streams=2).towers
    before = torch.get_num_threads()
    with towers.streaming():
        assert torch.get_num_threads() == max(1, before // 2)
    assert torch.get_num_threads() == before


def test_stream_policy_one_pass_per_core_on_the_cpu_only():
    assert encode_streams(2) == 2
    assert encode_streams(1) == 1
    assert encode_streams(64) == MAX_STREAMS
    assert encode_streams(8, device_type="cuda") == 1
    # a bulk job asks for them; a server's encoder keeps one pass on every core
    assert open_encoder("tiny", device="cpu", threads=2, bulk=True).towers.streams == 2
    assert open_encoder("tiny", device="cpu", threads=2).towers.streams == 1


def test_one_pass_on_the_cpu_takes_at_most_pass_images_rows_at_a_time(tiny, photos, monkeypatch):
    """A large ``--batch-size`` with one pass (ONNX Runtime, ``--threads 1``) is encoded
    ``PASS_IMAGES`` rows at a time on the CPU, as passes at once are: larger ViT-B-16 passes fault
    their activations in at every allocation. The rows equal those of the batch in one call."""
    enc = Encoder(tiny, precision="fp32", backend="torch")
    paths = [*photos] * 8  # 40 files in one batch
    pixels, _ = ImageFiles(paths, tiny.preprocess, tiny.arch.resolution).batch(0, len(paths))
    whole = enc.encode_pixels(pixels)  # the same decoded pixels, one call
    sizes: list[int] = []
    encode = enc.towers.encode_image
    monkeypatch.setattr(
        enc.towers, "encode_image", lambda pixels: sizes.append(len(pixels)) or encode(pixels)
    )
    vectors, errors = enc.encode_image_files(paths, batch_size=40, workers=0)
    assert sizes == [PASS_IMAGES] * (40 // PASS_IMAGES) and errors == [""] * 40
    np.testing.assert_allclose(vectors, whole, atol=2e-6)
