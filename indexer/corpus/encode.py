"""``tuwen corpus encode NAME --model SPEC``: every usable image and every caption of a corpus.

The index build's stages (``indexer.encode``) over a corpus: ``corpus_sets`` is the reader (rows
``(position, item id, image path or caption)``), ``EncodeMapper`` the mapper, and a
``GenerationWriter`` on ``$TUWEN_HOME/corpora/<name>/`` the writer, driven by a runner
(``run_local`` unless another is passed). Images that fail at encode time are left out (their
mask stays False). The generation's manifest records its ``source``: the corpus and the fingerprint
of the items it was encoded from, so ``load_embeddings`` never serves vectors of a corpus that changed,
and the last change-log ``seq`` read before the items (changes after it stay in a server's delta).
Only sources whose digest the store's ``vectors`` table lacks for the model are encoded
(``indexer.vector_cache``).
QB-Norm's statistics (``indexer.query_bank``) are stored per target once the sets are written: the
bank of the images is a sample of at most ``options.bank_size`` of the corpus's own captions, that
of the captions a sample of its images, rows the generation already holds (nothing more to encode).
A corpus with masks also gets the set ``masks``: each item's image with its background blanked
(``indexer.corpus.masks.masked_image``), not searched, read by ``load_embeddings`` as ``mask_vectors``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.errors import TuwenError
from common.settings import Settings
from indexer import store
from indexer.collection.columns import Columns
from indexer.corpus.changes import last_seq
from indexer.corpus.items import (
    IMAGE_SET,
    MASK_SET,
    TEXT_SET,
    CorpusItem,
    corpus_dir,
    corpus_info,
    fingerprint,
    load_items,
)
from indexer.corpus.masks import MASKED_FOLDER, masked_image
from indexer.encode.mapper import EncodeMapper
from indexer.encode.options import EncodeOptions
from indexer.encode.ray_runner import runner_for
from indexer.encode.reader import EncodeRow, EncodeSet
from indexer.encode.runner import Runner, build_generation
from indexer.encode.writer import GenerationWriter
from indexer.query_bank import corpus_bank_rows, write_set_bank
from indexer.vector_cache import VectorCache

log = logging.getLogger(__name__)


def corpus_sets(items: list[CorpusItem], masked: Path | None = None) -> list[EncodeSet]:
    """The reader: the items' readable images and their captions, as encode sets (empty ones left out);
    with a ``masked`` folder also the masked images of the items with a decodable mask (MASK_SET)."""
    images = [
        EncodeRow(i.position, i.item_id, i.image_path) for i in items if i.image_status == store.STATUS_OK
    ]
    texts = [EncodeRow(i.position, i.item_id, i.caption) for i in items if i.caption]
    sets = [
        EncodeSet(IMAGE_SET, "image", images, searchable=True),  # the service searches them
        EncodeSet(TEXT_SET, "text", texts, searchable=True),
        EncodeSet(MASK_SET, "image", _masked_rows(items, masked) if masked else [], searchable=False),
    ]
    return [s for s in sets if s.rows]


def _masked_rows(items: list[CorpusItem], folder: Path) -> list[EncodeRow]:
    """A row per item with a readable image and a decodable mask: its masked image, composed once into
    ``folder`` under the digest of the image's and the mask's bytes (so the vector cache, keyed on the
    masked file's bytes, follows both)."""
    rows = []
    for i in items:
        if i.image_status == store.STATUS_OK and i.mask_path and i.mask_area is not None:
            path = masked_image(i.image_path, i.mask_path, folder)
            if path is not None:
                rows.append(EncodeRow(i.position, i.item_id, path))
    return rows


def encode_corpus(
    *,
    settings: Settings,
    name: str,
    options: EncodeOptions | None = None,
    echo: Callable[[str], None] | None = None,
    runner: Runner | None = None,
    **encode: Any,
) -> Path:
    """Encode corpus ``name`` as ``options`` say (or their fields as keyword arguments, as for
    ``index_corpus``) and publish it as the corpus's live generation."""
    options = EncodeOptions.of(options, **encode)
    runner = runner or runner_for(options.ray)
    say = echo or log.info
    with store.open_store(settings.store_url) as session:  # read before the items: nothing after it is lost
        seq = last_seq(session, name)
    items = load_items(settings=settings, name=name)
    sets = corpus_sets(items, corpus_dir(settings, name) / MASKED_FOLDER)
    if not sets:
        raise TuwenError(f"corpus {name} has no readable image and no caption: nothing to encode")
    mapper = EncodeMapper.for_sets(sets, settings=settings, options=options)
    # ``seq``: the last change-log row folded in; a server keeps only later changes in its delta
    source = {"corpus": name, "rows": len(items), "fingerprint": fingerprint(items), "seq": seq}
    info = corpus_info(settings=settings, name=name)  # the declared kinds, not guessed from values
    columns = Columns.from_items(items, fields=info.fields, time_kind=info.time_kind)

    def finish(writer: GenerationWriter) -> None:
        for candidates, bank in ((IMAGE_SET, TEXT_SET), (TEXT_SET, IMAGE_SET)):
            if bank in writer.counts:
                rows = corpus_bank_rows(writer.read_set(bank)[0], size=options.bank_size)
                write_set_bank(writer, candidates, bank, rows=rows, drawn=options.bank_size)

    final, written = build_generation(
        sets,
        mapper=mapper,
        root=corpus_dir(settings, name),
        runner=runner,
        say=say,
        source=source,
        columns={None: columns},  # what a search returns, so the server needs no database
        cache=VectorCache(settings.store_url) if options.reuse else None,
        finish=finish,
    )
    counts = ", ".join(f"{k} {v}" for k, v in written.items())
    say(f"corpus {name} encoded ({len(items)} rows): {counts}; generation {final}")
    return final
