"""``EncodeOptions``: one set of defaults, read by the flags, the Python API and the mapper."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from common.errors import TuwenError
from common.settings import Settings
from indexer.encode.mapper import EncodeMapper
from indexer.encode.options import EncodeOptions, add_encode_options
from models.encoder import open_encoder
from models.factory import create_model_and_transforms


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_encode_options(parser)
    return parser


def test_the_flags_take_their_defaults_from_the_fields():
    options = EncodeOptions.from_args(_parser().parse_args(["--model", "tiny"]))
    assert options == EncodeOptions(model="tiny")
    help_text = _parser().format_help()
    assert f"(default {EncodeOptions.batch_size})" in help_text.replace("\n", " ").replace("  ", " ")


def test_every_flag_is_read_back():
    args = _parser().parse_args(
        ["--model", "RN50", "--precision", "int8", "--backend", "onnx", "--batch-size", "8", "--workers", "0"]
        + ["--ray", "auto"]
    )
    options = EncodeOptions.from_args(args)
    assert (options.model, options.precision, options.backend) == ("RN50", "int8", "onnx")
    assert (options.batch_size, options.workers, options.ray, options.progress) == (8, 0, "auto", True)


def test_the_model_is_required():
    with pytest.raises(SystemExit):
        _parser().parse_args([])


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--batch-size", "0"], "--batch-size must be at least 1, not 0"),
        (["--bank-size", "-3"], r"--bank-size must be 0 \(no query bank\) or more, not -3"),
    ],
)
def test_numbers_no_encoding_can_use_are_refused_naming_the_flag(flags, message):
    args = _parser().parse_args(["--model", "tiny", *flags])
    with pytest.raises(TuwenError, match=message):
        EncodeOptions.from_args(args)
    with pytest.raises(TuwenError, match=message):  # the Python API's keywords too
        EncodeOptions.of(EncodeOptions(model="tiny"), **{flags[0][2:].replace("-", "_"): int(flags[1])})


def test_keyword_arguments_replace_fields():
    base = EncodeOptions(model="tiny", workers=2)
    assert EncodeOptions.of(base, workers=0) == dataclasses.replace(base, workers=0)
    assert EncodeOptions.of(None, model="tiny", progress=False).progress is False
    with pytest.raises(TypeError):
        EncodeOptions.of(None, model="tiny", bogus=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        base.model = "RN50"  # type: ignore[misc]


def test_the_mapper_takes_the_options_whole(tmp_path):
    settings = Settings(home=tmp_path, backend="torch")
    options = EncodeOptions(model="tiny", precision="fp32", batch_size=5, workers=0, progress=False)
    mapper = EncodeMapper.for_sets([], settings=settings, options=options)
    assert mapper.kwargs["spec"] == "tiny" and mapper.kwargs["batch_size"] == 5
    assert mapper.kwargs["backend"] == "torch" and mapper.kwargs["cache_dir"] == str(settings.converted_dir)
    assert mapper.encoder.backend == "torch" and mapper.encoder.precision == "fp32"


def test_open_encoder_takes_a_spec_or_a_loaded_model(tmp_path):
    settings = Settings(home=tmp_path, backend="torch", precision="fp32", device="cpu")
    by_spec = open_encoder("tiny", settings=settings)
    loaded = create_model_and_transforms("tiny", device="cpu")
    by_model = open_encoder(loaded, precision="fp32")
    assert by_spec.model_id == by_model.model_id and by_model.loaded is loaded
    assert (by_spec.backend, by_spec.precision) == ("torch", "fp32")
    assert by_model.backend == "torch"  # no settings: the model as loaded
