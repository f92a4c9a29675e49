"""``tuwen index``: encode candidates and queries from the store into a new index generation.

A short composition of the stages in ``indexer.encode``: the reader's four competition sets,
an ``EncodeMapper`` for ``model``, and a ``GenerationWriter`` on ``$TUWEN_HOME/index``, driven
by a runner (``run_local`` unless another engine is passed).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

from common.settings import Settings
from indexer.collection.columns import Columns
from indexer.encode.mapper import DEFAULT_BATCH, EncodeMapper
from indexer.encode.reader import EncodeSet, competition_sets
from indexer.encode.runner import Runner, build_generation, run_local

log = logging.getLogger(__name__)


def index_corpus(
    *,
    settings: Settings,
    model: str,
    precision: str = "auto",
    backend: str | None = None,
    batch_size: int = DEFAULT_BATCH,
    workers: int | None = None,
    index_factory: str | None = None,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
    runner: Runner = run_local,
) -> Path:
    """Encode the ingested corpus with ``model`` and publish it as the live index generation.

    ``backend``: torch | onnx | openvino | auto (default: ``settings.backend``); int8 calibrates on a
    sample of the candidates being indexed.
    """
    say = echo or log.info
    sets = competition_sets(settings, say)
    mapper = EncodeMapper.for_sets(
        sets,
        settings=settings,
        model=model,
        precision=precision,
        backend=backend,
        batch_size=batch_size,
        workers=workers,
        progress=progress,
    )
    columns = {s.name: set_columns(s) for s in sets if s.searchable}  # the server reads no store
    final, counts = build_generation(
        sets,
        mapper=mapper,
        root=settings.index_dir,
        runner=runner,
        say=say,
        index_factory=index_factory,
        columns=columns,
    )
    say(f"index generation {final.name}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return final


def set_columns(s: EncodeSet) -> Columns:
    """What a search returns of a candidate set's items: their captions (texts) or image paths."""
    text = s.kind == "text"
    items = [
        SimpleNamespace(
            item_id=r.item_id,
            caption=r.source if text else None,
            image_path=None if text else r.source,
            time=None,
            attributes={},
        )
        for r in s.rows
    ]
    return Columns.from_items(items, fields={}, time_kind=None)
