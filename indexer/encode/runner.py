"""Runner: drives reader → mapper → writer. The seam for other engines is here.

A runner is any callable ``runner(sets, mapper, writer, say)`` (the ``Runner`` protocol):
it encodes every ``EncodeSet`` and hands each result to ``write_encoded``, which applies the
set's error policy (``reader.settle``) and stores it with ``writer.write_set``. The caller
(``indexer.build.index_corpus``) reads the sets, builds the mapper, opens the writer and
publishes afterwards, whatever the runner.

- ``run_local``: today's behaviour, one process; ``mapper.encode(set)`` per set.
- a distributed runner (Ray Data) builds one ``EncodeMapper(**mapper.kwargs)`` per worker,
  maps ``encode_sources(kind, sources)`` over batches of ``set.rows``, reassembles the vectors
  and errors in row order, and calls ``write_encoded`` like ``run_local`` does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from indexer.encode.mapper import EncodeMapper
from indexer.encode.reader import EncodeSet, Say, settle
from indexer.encode.writer import GenerationWriter

log = logging.getLogger(__name__)


class Runner(Protocol):
    def __call__(
        self, sets: Sequence[EncodeSet], mapper: EncodeMapper, writer: GenerationWriter, say: Say = ...
    ) -> None: ...


def write_encoded(
    s: EncodeSet, vectors: np.ndarray, errors: Sequence[str], writer: GenerationWriter, say: Say
) -> None:
    """Apply ``s``'s error policy to its encoded rows and store the set."""
    ids, kept = settle(s, vectors, errors, say)
    writer.write_set(s.name, ids, kept, searchable=s.searchable)


def run_local(
    sets: Sequence[EncodeSet], mapper: EncodeMapper, writer: GenerationWriter, say: Say = log.info
) -> None:
    """Encode the sets one after the other in this process (decoding in ``mapper``'s workers)."""
    for s in sets:
        vectors, errors = mapper.encode(s)
        write_encoded(s, vectors, errors, writer, say)


def build_generation(
    sets: Sequence[EncodeSet],
    *,
    mapper: EncodeMapper,
    root: Path,
    runner: Runner = run_local,
    say: Say = log.info,
    index_factory: str | None = None,
    source: dict | None = None,
    columns: dict[str | None, Any] | None = None,
    cache: Any = None,
    finish: Callable[[GenerationWriter], None] | None = None,
) -> tuple[Path, dict[str, int]]:
    """Encode ``sets`` with ``mapper`` through ``runner`` into a new generation under ``root`` and
    make it live; returns its folder and the rows per set. What ``tuwen index`` and
    ``tuwen corpus encode`` both do, with their own sets, root and ``source``; ``columns``
    (``Columns`` by set name, None for a corpus's items) are stored with the vectors. ``cache``
    (``indexer.vector_cache.VectorCache``) wraps the runner so that only unsaved sources are encoded.
    ``finish`` runs once every set is written, before publishing: what is computed from the
    written vectors (QB-Norm's statistics, ``indexer.query_bank``)."""
    say(mapper.describe())
    with GenerationWriter(root, index_factory=index_factory) as writer:
        (runner if cache is None else cache.wrap(runner))(sets, mapper, writer, say)
        for set_name, cols in (columns or {}).items():
            writer.write_columns(cols, set_name=set_name)
        if finish is not None:
            finish(writer)
        final = writer.publish(**mapper.model_fields(), source=source)
    return final, dict(writer.counts)
