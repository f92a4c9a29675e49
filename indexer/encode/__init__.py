"""Encoding a corpus into an index generation, in stages with a seam (as clip-retrieval's
``clip_inference``): reader → mapper → writer, driven by a runner.

- ``reader``: ``EncodeSet``s of ``EncodeRow(position, item_id, source)`` read from the store
  once (``competition_sets``), and the policy for rows that fail to encode (``settle``);
- ``mapper``: ``EncodeMapper``, the model built from plain picklable arguments;
  ``encode(set) -> (vectors, errors)``;
- ``writer``: ``GenerationWriter``, one generation folder under any root, published atomically;
- ``runner``: the ``Runner`` protocol and ``run_local``; a distributed runner plugs in there.

``indexer.build.index_corpus`` composes them for ``tuwen index``.
"""
