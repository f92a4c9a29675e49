"""Every entry point looks for official weights in the one folder the settings name.

A file put at ``$TUWEN_HOME/weights/clip_cn_vit-b-16.pt`` (the README's instruction) must be the
file each command opens. The file here is not a checkpoint, so each command fails on *that
path*: a command looking elsewhere would fail with "not in <other folder>" instead.
"""

from __future__ import annotations

import pytest

from common.errors import TuwenError
from common.settings import Settings
from models.factory import official_weights
from models.registry import ARCHS

WEIGHTS_FILE = ARCHS["ViT-B-16"].weights_file


@pytest.fixture
def planted(ingested, tmp_path) -> Settings:
    """Settings over the ingested store, with a fake ViT-B-16 checkpoint in their weights folder."""
    settings = Settings(home=tmp_path / "home", database_url=ingested.store_url)
    settings.weights_dir.mkdir(parents=True)
    (settings.weights_dir / WEIGHTS_FILE).write_bytes(b"not a checkpoint")
    return settings


def _opened_planted_file(exc: pytest.ExceptionInfo, settings: Settings) -> bool:
    message = str(exc.value)
    return (
        str(settings.weights_dir / WEIGHTS_FILE) in message and "not a readable PyTorch checkpoint" in message
    )


def test_index_looks_in_the_settings_folder(planted):
    from indexer.build import index_corpus

    with pytest.raises(TuwenError) as exc:
        index_corpus(settings=planted, model="ViT-B-16", progress=False)
    assert _opened_planted_file(exc, planted)


def test_train_looks_in_the_settings_folder(planted, tmp_path):
    from training.train import train

    with pytest.raises(TuwenError) as exc:
        train(settings=planted, model="ViT-B-16", out=tmp_path / "run", progress=False)
    assert _opened_planted_file(exc, planted)


def test_eval_looks_in_the_settings_folder(planted):
    from training.evaluate import evaluate

    with pytest.raises(TuwenError) as exc:
        evaluate(settings=planted, model="ViT-B-16")
    assert _opened_planted_file(exc, planted)


def test_a_caller_that_names_no_folder_gets_the_settings_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("TUWEN_HOME", str(tmp_path / "env-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TuwenError) as exc:
        official_weights(ARCHS["ViT-B-16"], weights_dir=None)
    assert f"not in {(tmp_path / 'env-home' / 'weights').resolve()}" in str(exc.value)


def test_serve_looks_in_the_settings_folder(built_settings, planted):
    """A generation built by ViT-B-16 makes the service load ViT-B-16 from the settings' folder."""
    import shutil

    from app.core.state import ServiceState
    from indexer.index_files import current_generation
    from indexer.manifest import Manifest

    live = current_generation(built_settings.index_dir)
    shutil.copytree(built_settings.index_dir, planted.index_dir)
    copy = planted.index_dir / live.name
    Manifest.read(copy).model_copy(update={"model_spec": "ViT-B-16", "model_id": "other"}).write(copy)
    with pytest.raises(TuwenError) as exc:
        ServiceState.open(planted).close()  # the service loads the live generation's model at start
    assert _opened_planted_file(exc, planted)
