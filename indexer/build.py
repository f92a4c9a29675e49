"""``tuwen index``: encode candidates and queries from the store into a new index generation.

A short composition of the stages in ``indexer.encode``: the reader's four competition sets,
an ``EncodeMapper`` built from the ``EncodeOptions``, and a ``GenerationWriter`` on
``$TUWEN_HOME/index``, driven by a runner (``run_local``, or Ray with ``options.ray``).

QB-Norm's query bank (``indexer.query_bank``): up to ``options.bank_size`` training pairs are
encoded as the sets ``bank_texts`` / ``bank_images`` beside the others (same runner, same vector
cache), and once every set is written the statistics of each candidate set against its bank are
stored in the generation (``<set>.qbnorm.npz``), for the service's ``rerank=qb-norm``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from common.settings import Settings
from indexer.collection.columns import Columns
from indexer.encode.mapper import EncodeMapper
from indexer.encode.options import EncodeOptions
from indexer.encode.ray_runner import runner_for
from indexer.encode.reader import EncodeSet, bank_sets, competition_sets
from indexer.encode.runner import Runner, build_generation
from indexer.encode.writer import GenerationWriter
from indexer.faiss_factory import check_factory
from indexer.query_bank import BANK_OF_CANDIDATES, write_set_bank
from indexer.vector_cache import VectorCache

log = logging.getLogger(__name__)


def index_corpus(
    *,
    settings: Settings,
    options: EncodeOptions | None = None,
    index_factory: str | None = None,
    echo: Callable[[str], None] | None = None,
    runner: Runner | None = None,
    **encode: Any,
) -> Path:
    """Encode the ingested corpus as ``options`` say and publish it as the live index generation.

    ``options``: an ``EncodeOptions`` (the CLI builds one); its fields may also be given as keyword
    arguments (``index_corpus(settings=s, model="tiny", workers=0)``), which replace those of
    ``options``. ``backend`` None takes ``settings.backend``; int8 calibrates on a sample of the
    candidates being indexed. ``runner``: default ``runner_for(options.ray)`` (this process, or Ray).
    """
    options = EncodeOptions.of(options, **encode)
    runner = runner or runner_for(options.ray)
    say = echo or log.info
    sets = competition_sets(settings, say)
    mapper = EncodeMapper.for_sets(sets, settings=settings, options=options)  # int8: calibrated on these
    if index_factory is not None:
        smallest = min(len(s.rows) for s in sets if s.searchable)
        check_factory(index_factory, dim=mapper.encoder.loaded.embed_dim, vectors=smallest)
    columns = {s.name: set_columns(s) for s in sets if s.searchable}  # the server reads no store
    banks = bank_sets(settings, size=options.bank_size)
    if banks:
        say(f"QB-Norm query bank: {len(banks[0].rows)} training captions and their images")

    def finish(writer: GenerationWriter) -> None:
        for candidates, bank in BANK_OF_CANDIDATES.items():
            write_set_bank(writer, candidates, bank, rows=None, drawn=options.bank_size)

    final, counts = build_generation(
        sets + banks,
        mapper=mapper,
        root=settings.index_dir,
        runner=runner,
        say=say,
        index_factory=index_factory,
        columns=columns,
        cache=VectorCache(settings.store_url) if options.reuse else None,
        finish=finish,
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
