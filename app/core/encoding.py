"""Query-side encoding: one model's encoder plus an LRU cache of text embeddings."""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np
from PIL import Image

from models.encoder import Encoder

TEXT_CACHE_SIZE = 2048  # 2048 x 768 floats x 4 B = 6 MB at most for ViT-L


class QueryEncoder:
    """Encodes one query at a time; repeated text queries are answered from the cache."""

    def __init__(self, encoder: Encoder, *, cache_size: int = TEXT_CACHE_SIZE):
        self.encoder = encoder
        self.cache_size = cache_size
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

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
        vec = self.encoder.encode_texts([text])
        vec.setflags(write=False)  # shared by every later request for the same text
        with self._lock:
            self.misses += 1
            self._cache[text] = vec
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return vec

    def encode_image(self, image: Image.Image) -> np.ndarray:
        """(1, dim) L2-normalised embedding of a decoded RGB image (blocking)."""
        return self.encoder.encode_pil([image])

    def cache_info(self) -> dict[str, int]:
        with self._lock:
            return {"size": len(self._cache), "hits": self.hits, "misses": self.misses}
