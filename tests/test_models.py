"""Model factory: every weight source resolves to the right architecture, or to a clear error."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.errors import TuwenError
from models.encoder import Encoder
from models.factory import create_model_and_transforms, infer_arch, official_weights
from models.registry import ARCHS


@pytest.fixture(scope="module")
def tiny():
    return create_model_and_transforms("tiny", device="cpu")


def test_tiny_uses_cn_clip_class_and_real_vocabulary(tiny):
    from cn_clip.clip.model import CLIP

    assert isinstance(tiny.model, CLIP)
    assert tiny.model.bert.embeddings.word_embeddings.weight.shape[0] == 21128
    assert tiny.arch.name == "tiny" and tiny.embed_dim == 128


def test_tiny_is_deterministic():
    a = create_model_and_transforms("tiny", device="cpu")
    b = create_model_and_transforms("tiny", device="cpu")
    assert a.model_id == b.model_id
    for (name, p), (_, q) in zip(a.model.state_dict().items(), b.model.state_dict().items(), strict=True):
        assert torch.equal(p, q), name


def test_text_embeddings_are_normalised_and_distinguish_texts(tiny):
    vectors = Encoder(tiny, precision="fp32").encode_texts(["红色条纹连衣裙", "蓝色格子衬衫"])
    assert vectors.shape == (2, 128) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.abs(vectors[0] - vectors[1]).max() > 1e-3  # different texts, different vectors


def test_unknown_spec_is_a_clear_error():
    with pytest.raises(TuwenError, match="unknown model"):
        create_model_and_transforms("ViT-X-99", device="cpu")
    with pytest.raises(TuwenError, match="unknown architecture"):
        create_model_and_transforms("random:ViT-X-99", device="cpu")


def test_official_name_offline_without_file_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TuwenError) as err:
        create_model_and_transforms("ViT-B-16", device="cpu", weights_dir=tmp_path)
    assert "clip_cn_vit-b-16.pt" in str(err.value) and str(tmp_path) in str(err.value)


def test_official_weights_found_in_weights_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "clip_cn_rn50.pt").write_bytes(b"x")
    assert official_weights(ARCHS["RN50"], weights_dir=tmp_path) == tmp_path / "clip_cn_rn50.pt"


@pytest.mark.parametrize("prefix", ["", "module."])
def test_checkpoint_in_cn_clip_format_loads_with_or_without_module_prefix(tiny, tmp_path, prefix):
    trained = create_model_and_transforms("tiny", device="cpu").model
    with torch.no_grad():
        trained.text_projection.mul_(2.0)  # weights that differ from the seeded init
    sd = {prefix + k: v for k, v in trained.state_dict().items()}
    path = tmp_path / "epoch_latest.pt"
    torch.save({"epoch": 1, "step": 10, "name": "run", "state_dict": sd}, path)
    loaded = create_model_and_transforms(str(path), device="cpu")
    assert loaded.arch.name == "tiny"  # read off the shapes: no arch recorded in the file
    assert torch.equal(loaded.model.text_projection, trained.text_projection)
    assert loaded.model_id.startswith("tiny:") and loaded.model_id != tiny.model_id


def test_infer_arch_tells_real_architectures_apart():
    vit_b = create_model_and_transforms("random:ViT-B-16", device="cpu")
    assert infer_arch(vit_b.model.state_dict()).name == "ViT-B-16"


def test_bad_checkpoint_file_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(TuwenError, match="broken.pt"):
        create_model_and_transforms(str(path), device="cpu")


def test_a_lazy_checkpoint_is_read_only_when_its_model_is_used(tmp_path):
    """``lazy=True``: the identity now (the file's hash, the architecture its run's config.json
    names), the weights on first use of ``.model``, equal to an eager load's."""
    trained = create_model_and_transforms("tiny", device="cpu").model
    with torch.no_grad():
        trained.text_projection.mul_(2.0)
    path = tmp_path / "run" / "best.pt"
    path.parent.mkdir()
    torch.save({"state_dict": trained.state_dict()}, path)
    (path.parent / "config.json").write_text('{"arch": "tiny"}')
    eager = create_model_and_transforms(str(path), device="cpu")
    lazy = create_model_and_transforms(str(path), device="cpu", lazy=True)
    assert not lazy.built and (lazy.model_id, lazy.arch) == (eager.model_id, eager.arch)
    path.write_bytes(b"changed after the identity was taken")  # read at first use, not before
    with pytest.raises(TuwenError, match="not a readable PyTorch checkpoint"):
        _ = lazy.model
    torch.save({"state_dict": trained.state_dict()}, path)
    again = create_model_and_transforms(str(path), device="cpu", lazy=True)
    assert torch.equal(again.model.text_projection, eager.model.text_projection) and again.built
    assert again.without_model().model is None
    unnamed = tmp_path / "bare.pt"  # no config.json: the shapes tell the architecture, read now
    torch.save({"state_dict": trained.state_dict()}, unnamed)
    assert create_model_and_transforms(str(unnamed), device="cpu", lazy=True).built


def test_a_checkpoint_load_holds_every_value_of_the_checkpoint_and_nothing_uninitialised(tmp_path):
    """Checkpoint models are built without random weights (meta device, then empty memory that the
    strict load fills): every tensor equals the saved one, outputs equal the saved model's, and a
    checkpoint missing a weight is refused rather than leaving that memory uninitialised."""
    trained = create_model_and_transforms("tiny", device="cpu").model
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(0.01)  # every value differs from the seeded init, so none can come from it
    path = tmp_path / "best.pt"
    torch.save({"state_dict": trained.state_dict()}, path)
    for lazy in (False, True):
        (tmp_path / "config.json").write_text('{"arch": "tiny"}')
        loaded = create_model_and_transforms(str(path), device="cpu", lazy=lazy).model
        ours = dict(loaded.named_parameters()) | dict(loaded.named_buffers())
        theirs = dict(trained.named_parameters()) | dict(trained.named_buffers())
        assert ours.keys() == theirs.keys()
        for name, tensor in theirs.items():
            assert torch.equal(ours[name], tensor) and not ours[name].is_meta, name
        pixels = torch.linspace(-1, 1, 2 * 3 * 64 * 64).reshape(2, 3, 64, 64)  # tiny: 64 px
        tokens = torch.tensor([[101, 2769, 4263, 102] + [0] * 4])
        with torch.no_grad():
            assert torch.equal(loaded.encode_image(pixels), trained.encode_image(pixels))
            assert torch.equal(loaded.encode_text(tokens), trained.encode_text(tokens))
    missing = {k: v for k, v in trained.state_dict().items() if k != "text_projection"}
    torch.save({"state_dict": missing}, path)
    with pytest.raises(TuwenError, match="text_projection"):
        create_model_and_transforms(str(path), device="cpu")
