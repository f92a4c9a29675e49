"""Query-side encoding: one model's encoder, an LRU cache of text embeddings, and batched misses.

Concurrent text queries that miss the cache share tower calls: each miss registers its text, and
whichever request holds the tower next encodes every text waiting at that moment in one batch
(padding trimmed per batch by ``Encoder``). A lone query never waits; while others are in flight
the batch leader waits up to ``batch_window_ms`` (or until ``batch_max`` texts wait) for more.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from concurrent.futures import Future

import numpy as np
from PIL import Image

from models.encoder import Encoder

TEXT_CACHE_SIZE = 2048  # 2048 x 768 floats x 4 B = 6 MB at most for ViT-L
BATCH_WINDOW_MS = 2.0
BATCH_MAX = 32


class QueryEncoder:
    """Encodes queries; repeated texts come from the cache, concurrent misses share a tower call."""

    def __init__(
        self,
        encoder: Encoder,
        *,
        cache_size: int = TEXT_CACHE_SIZE,
        batch_window_ms: float = BATCH_WINDOW_MS,
        batch_max: int = BATCH_MAX,
    ):
        self.encoder = encoder
        self.cache_size = cache_size
        self.batch_window = max(batch_window_ms, 0.0) / 1000
        self.batch_max = max(batch_max, 1)
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()  # cache, pending texts, counters
        self._tower = threading.Lock()  # one text-tower call at a time; its holder serves everyone
        self._pending: dict[str, Future] = {}
        self._waiting = 0
        self.hits = 0
        self.misses = 0
        self.batches = 0

    @property
    def model_id(self) -> str:
        return self.encoder.model_id

    @property
    def resolution(self) -> int:
        return self.encoder.loaded.arch.resolution

    def cached_text(self, text: str) -> np.ndarray | None:
        """The cached (1, dim) embedding of ``text``, or None (cheap: safe on the event loop)."""
        with self._lock:
            vec = self._cache.get(text)
            if vec is None:
                return None
            self._cache.move_to_end(text)
            self.hits += 1
            return vec

    def encode_text(self, text: str) -> np.ndarray:
        """(1, dim) L2-normalised embedding of ``text`` (blocking: call from a worker thread)."""
        vec = self.cached_text(text)
        if vec is not None:
            return vec
        with self._lock:
            future = self._pending.get(text)  # the same text twice in flight is encoded once
            if future is None:
                future = self._pending[text] = Future()
            self._waiting += 1
        try:
            while not future.done():
                with self._tower:
                    if not future.done():
                        self._run_batch()
        finally:
            with self._lock:
                self._waiting -= 1
        return future.result()

    def _run_batch(self) -> None:
        """Encode the waiting texts in one call (holding the tower); exceptions go to their requests."""
        deadline = time.monotonic() + self.batch_window
        while self._waiting > 1 and len(self._pending) < self.batch_max and time.monotonic() < deadline:
            time.sleep(0.0005)  # others are in flight: let their texts join this batch
        with self._lock:
            texts = list(self._pending)[: self.batch_max]
            futures = [self._pending.pop(t) for t in texts]
        try:
            vectors = self.encoder.encode_texts(texts)
        except BaseException as exc:  # each waiting request raises it, as if it had called alone
            for future in futures:
                future.set_exception(exc)
            return
        rows = []
        with self._lock:
            self.batches += 1
            for i, text in enumerate(texts):
                vec = vectors[i : i + 1].copy()
                vec.setflags(write=False)  # shared by every later request for the same text
                self.misses += 1
                self._cache[text] = vec
                rows.append(vec)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        for future, vec in zip(futures, rows, strict=True):
            future.set_result(vec)

    def encode_image(self, image: Image.Image) -> np.ndarray:
        """(1, dim) L2-normalised embedding of a decoded RGB image (blocking)."""
        return self.encoder.encode_pil([image])

    def cache_info(self) -> dict[str, int]:
        with self._lock:
            return {
                "size": len(self._cache),
                "hits": self.hits,
                "misses": self.misses,
                "batches": self.batches,
            }
