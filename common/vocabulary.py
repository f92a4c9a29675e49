"""The words of the ``--precision`` and ``--backend`` options, spelled once.

What the words mean lives beside the code that acts on them: ``common.precision`` (what ``auto``
picks for PyTorch, autocast), ``common.backend`` (which backend ``auto`` picks, which precisions each
backend runs). Settings (``TUWEN_PRECISION``, ``TUWEN_BACKEND``), every command's choices and every
check read the tuples here; this module imports nothing, so a parser can read it cheaply.
"""

from __future__ import annotations

from typing import Literal, get_args

# PyTorch's autocast precisions: training, and encoding on the torch backend.
Precision = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)

# Encoding adds int8 (NNCF post-training quantization, on the onnx and openvino backends only).
EncodePrecision = Literal["auto", "fp32", "bf16", "fp16", "int8"]
ENCODE_PRECISIONS: tuple[str, ...] = get_args(EncodePrecision)

# What exported towers are stored in (bf16 is chosen when they are run, not when exported).
EXPORT_PRECISIONS: tuple[str, ...] = ("fp32", "int8")

# The formats ``tuwen export-model`` writes (models.backends.export converts to them).
EXPORT_FORMATS: tuple[str, ...] = ("onnx", "openvino")

# "mixed precision": training's word for auto before the two met; accepted wherever a precision is.
ALIASES = {"amp": "auto"}

Backend = Literal["auto", "torch", "onnx", "openvino"]
BACKENDS: tuple[str, ...] = get_args(Backend)


def canonical_precision(precision: str | None) -> str:
    """``precision`` with its alias resolved; None means ``auto``."""
    precision = precision or "auto"
    return ALIASES.get(precision, precision)
