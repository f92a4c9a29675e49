"""Corpora: any captioned-image collection in the store, and the competition collections as corpora.

One module per concern:

- ``read``: a CSV / JSONL / JSON corpus file into typed rows;
- ``add``: ``tuwen corpus add`` (the file into the store, whole or ``--upsert``), ``tuwen corpus
  remove``; every change also appended to the store's change log (``corpus_changes``);
- ``items``: reading corpora back (``list_corpora``, ``load_items``, ``load_embeddings``): the API
  the analysis layer and the service read through;
- ``encode``: ``tuwen corpus encode`` (the index build's stages over a corpus);
- ``masks``: the mask modality (mask area, masked images) and ``tuwen corpus masks`` (GrabCut);
- ``cli``: the ``tuwen corpus`` subcommands.

The reading API is importable from here (``from indexer.corpus import load_items``); the commands'
stages are imported from their modules (``indexer.corpus.add``, ``indexer.corpus.encode``), so that
reading a corpus (the service) pulls in neither ingest nor the model stack.
"""

from __future__ import annotations

from indexer.corpus.items import (
    BUILTIN,
    IMAGE_SET,
    MASK_SET,
    TEXT_SET,
    Attribute,
    CorpusEmbeddings,
    CorpusInfo,
    CorpusItem,
    check_name,
    corpus_dir,
    corpus_info,
    fingerprint,
    list_corpora,
    load_embeddings,
    load_items,
)

__all__ = [
    "BUILTIN",
    "IMAGE_SET",
    "MASK_SET",
    "TEXT_SET",
    "Attribute",
    "CorpusEmbeddings",
    "CorpusInfo",
    "CorpusItem",
    "check_name",
    "corpus_dir",
    "corpus_info",
    "fingerprint",
    "list_corpora",
    "load_embeddings",
    "load_items",
]
