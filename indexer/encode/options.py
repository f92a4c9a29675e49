"""``EncodeOptions``: what every command that encodes is asked (``tuwen index``, ``tuwen corpus encode``).

Built once by the CLI (``add_encode_options`` declares the flags, ``EncodeOptions.from_args`` reads
them) and taken whole by ``indexer.build.index_corpus``, ``indexer.corpus.encode.encode_corpus``,
``EncodeMapper.for_sets`` and the runner (``runner_for(options.ray)``). The defaults and the help
live here only, in the fields; the flags read them.

This module imports nothing heavy: the console script's parser reads it.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from common.errors import TuwenError
from common.vocabulary import BACKENDS, ENCODE_PRECISIONS

DEFAULT_BATCH = 64  # per tower call; the mapper's default too
DEFAULT_BANK_SIZE = 5000  # QB-Norm's query bank (indexer.rerank.DEFAULT_BANK_SIZE: a test checks)


def _flag(help: str, **argparse_kwargs: Any) -> dict[str, Any]:
    """Field metadata: the field is a command-line flag with this help and these argparse keywords."""
    return {"cli": {"help": help, **argparse_kwargs}}


@dataclass(frozen=True)
class EncodeOptions:
    """How to encode: with which model, on which backend at which precision, in which batches,
    with how many decode workers, and on which runner (this process, or a Ray cluster)."""

    model: str = field(
        metadata=_flag(
            "ViT-B-16 | ViT-L-14 | ViT-L-14-336 | ViT-H-14 | RN50 | checkpoint path | tiny | random:ARCH"
        )
    )
    precision: str = field(default="auto", metadata=_flag("encoding precision", choices=ENCODE_PRECISIONS))
    backend: str | None = field(
        default=None,  # None: the settings' (TUWEN_BACKEND, else auto)
        metadata=_flag("torch|onnx|openvino (default $TUWEN_BACKEND, else auto)", choices=BACKENDS),
    )
    batch_size: int = field(default=DEFAULT_BATCH, metadata=_flag("rows per tower call", type=int))
    workers: int | None = field(
        default=None, metadata=_flag("image decode processes (default: from the core count)", type=int)
    )
    ray: str | None = field(
        default=None,
        metadata=_flag(
            "encode on a Ray cluster: auto (the running one), HOST:6379 or ray://HOST:10001",
            metavar="auto|ADDRESS",
        ),
    )
    reuse: bool = field(
        default=True,
        metadata=_flag(
            "look every image and caption up in the saved vectors (model + content digest) and encode "
            "only the misses; --no-reuse encodes everything again",
            action=argparse.BooleanOptionalAction,
        ),
    )
    bank_size: int = field(
        default=DEFAULT_BANK_SIZE,
        metadata=_flag(
            "QB-Norm's query bank, kept with the generation for the service's rerank qb-norm: at most "
            "this many training captions and images (index) or the corpus's own (corpus encode); 0: none",
            type=int,
        ),
    )
    progress: bool = True  # progress bars on stderr (not a flag: commands show them)

    def __post_init__(self) -> None:
        """Numbers no encoding can use are refused here, before a model loads, naming the flag."""
        if self.batch_size < 1:
            raise TuwenError(f"--batch-size must be at least 1, not {self.batch_size}")
        if self.bank_size < 0:
            raise TuwenError(f"--bank-size must be 0 (no query bank) or more, not {self.bank_size}")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> EncodeOptions:
        """The options a parser given ``add_encode_options`` read."""
        return cls(**{f.name: getattr(args, f.name) for f in _flags()})

    @classmethod
    def of(cls, options: EncodeOptions | None = None, **fields: Any) -> EncodeOptions:
        """``options`` with ``fields`` replaced, or new options from ``fields`` alone: what the
        Python API's keyword arguments (``index_corpus(settings=..., model="tiny", workers=0)``) mean."""
        return cls(**fields) if options is None else dataclasses.replace(options, **fields)


def _flags() -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(EncodeOptions) if "cli" in f.metadata]


def add_encode_options(parser: argparse.ArgumentParser) -> None:
    """The flags of every command that encodes, one per ``EncodeOptions`` field that has one;
    defaults and help come from the fields."""
    for f in _flags():
        kwargs = dict(f.metadata["cli"])
        if f.default is dataclasses.MISSING:
            kwargs["required"] = True
        else:
            kwargs["default"] = f.default
            if f.default is not None:
                kwargs["help"] += f" (default {f.default})"
        parser.add_argument("--" + f.name.replace("_", "-"), **kwargs)
