"""Concurrent text queries that miss the cache share one tower call, with the same embeddings."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from app.core.encoding import QueryEncoder
from models.encoder import Encoder
from models.factory import create_model_and_transforms

TEXTS = [f"第{i}件{'红色条纹' * (i % 4 + 1)}连衣裙" for i in range(12)]


@pytest.fixture(scope="module")
def encoder():
    return Encoder(create_model_and_transforms("tiny", device="cpu"), precision="fp32")


def _ask_all(queries: QueryEncoder, texts: list[str]) -> list[np.ndarray]:
    results: list[np.ndarray | None] = [None] * len(texts)

    def ask(i: int) -> None:
        results[i] = queries.encode_text(texts[i])

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    return threads, results


def test_misses_waiting_together_are_one_tower_call_with_the_same_embeddings(encoder):
    queries = QueryEncoder(encoder, batch_window_ms=0)
    texts = [*TEXTS, TEXTS[0]]  # the same text twice in flight is encoded once
    queries._tower.acquire()  # a call in progress: every query arriving now has to wait
    threads, results = _ask_all(queries, texts)
    deadline = time.monotonic() + 30
    while len(queries._pending) < len(TEXTS) and time.monotonic() < deadline:
        time.sleep(0.01)
    queries._tower.release()
    for t in threads:
        t.join(timeout=60)
    assert queries.cache_info()["batches"] == 1
    assert queries.cache_info()["misses"] == len(TEXTS)
    alone = encoder.encode_texts(texts, batch_size=1)  # one text per call: no batching at all
    got = np.concatenate(results)
    assert got.shape == alone.shape
    assert float(np.sum(got * alone, axis=1).min()) >= 0.9999
    assert np.abs(got[0] - got[1]).max() > 1e-4  # different texts, different vectors


def test_batches_never_exceed_batch_max(encoder):
    queries = QueryEncoder(encoder, batch_window_ms=0, batch_max=5)
    queries._tower.acquire()
    threads, results = _ask_all(queries, TEXTS)
    while len(queries._pending) < len(TEXTS):
        time.sleep(0.01)
    queries._tower.release()
    for t in threads:
        t.join(timeout=60)
    assert queries.cache_info()["batches"] == 3  # 12 texts, at most 5 per call
    assert all(r is not None and r.shape == (1, encoder.loaded.embed_dim) for r in results)


def test_a_lone_query_does_not_wait_for_the_window(encoder):
    queries = QueryEncoder(encoder, batch_window_ms=5000)
    begin = time.monotonic()
    queries.encode_text("单独的查询")
    assert time.monotonic() - begin < 4  # the 5 s window applies only while others are in flight
    assert queries.encode_text("单独的查询") is queries.cached_text("单独的查询")
    assert queries.cache_info()["hits"] == 2 and queries.cache_info()["misses"] == 1


def test_a_failing_tower_call_fails_every_waiting_request_and_the_next_call_works(encoder):
    queries = QueryEncoder(encoder, batch_window_ms=0)
    broken = QueryEncoder.__new__(QueryEncoder)
    broken.__dict__.update(queries.__dict__)
    broken.encoder = None  # no encoder: the tower call raises AttributeError
    with pytest.raises(AttributeError):
        broken.encode_text("x")
    assert not broken._pending and broken._waiting == 0
    assert queries.encode_text("x").shape == (1, encoder.loaded.embed_dim)
