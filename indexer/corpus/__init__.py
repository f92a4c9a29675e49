"""Corpora: any captioned-image collection in the store, and the competition collections as corpora.

One module per concern:

- ``read``: a CSV / JSONL / JSON corpus file into typed rows;
- ``add``: ``tuwen corpus add`` (the file into the store, whole or ``--upsert``), ``tuwen corpus
  remove``; every change also appended to the store's change log (``corpus_changes``);
- ``items``: reading corpora back (``list_corpora``, ``load_items``, ``load_embeddings``): the API
  the analysis layer and the service read through;
- ``encode``: ``tuwen corpus encode`` (the index build's stages over a corpus);
- ``cli``: the ``tuwen corpus`` subcommands.

The names other code uses are importable from here (``from indexer.corpus import load_items``);
``encode_corpus`` loads on first use, since the encode stages import the model stack (torch).
"""

from __future__ import annotations

from typing import Any

from indexer.corpus.add import add_corpus
from indexer.corpus.items import (
    BUILTIN,
    IMAGE_SET,
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
    "TEXT_SET",
    "Attribute",
    "CorpusEmbeddings",
    "CorpusInfo",
    "CorpusItem",
    "add_corpus",
    "check_name",
    "corpus_dir",
    "corpus_info",
    "encode_corpus",
    "fingerprint",
    "list_corpora",
    "load_embeddings",
    "load_items",
]


def __getattr__(name: str) -> Any:
    if name == "encode_corpus":  # heavy: the encode stages import torch; ``corpus add`` needs none
        from indexer.corpus.encode import encode_corpus

        return encode_corpus
    raise AttributeError(f"module 'indexer.corpus' has no attribute {name!r}")
