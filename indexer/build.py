"""``tuwen index``: encode candidates and queries from the store into a new index generation."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from common.errors import TuwenError
from common.runtime import decode_workers
from common.settings import Settings
from indexer import index_files, store
from indexer.faiss_factory import build_index
from models.encoder import Encoder
from models.factory import create_model_and_transforms

log = logging.getLogger(__name__)


def _fill_failed_queries(vectors: np.ndarray, errors: list[str]) -> np.ndarray:
    """A query image that cannot be read gets the normalised mean of the readable ones.

    Its results are then the candidates closest to a typical query: five distinct valid ids,
    so the result file stays complete. With no readable query at all the rows stay zero and
    ties fall back to candidate order.
    """
    failed = np.array([bool(e) for e in errors])
    if failed.any() and (~failed).any():
        mean = vectors[~failed].mean(axis=0)
        vectors[failed] = mean / max(float(np.linalg.norm(mean)), 1e-12)
    return vectors


def index_corpus(
    *,
    settings: Settings,
    model: str,
    precision: str = "auto",
    batch_size: int = 64,
    workers: int | None = None,
    index_factory: str | None = None,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
) -> Path:
    """Encode the ingested corpus with ``model`` and publish it as the live index generation."""
    say = echo or log.info
    engine = store.make_engine(settings.store_url)
    try:
        with store.transaction(engine) as session:
            cand_images = store.list_images(session, collection=store.IMAGE_CANDIDATES)
            query_images = store.list_images(session, collection=store.IMAGE_QUERIES)
            cand_texts = store.list_texts(session, collection=store.TEXT_CANDIDATES)
            query_texts = store.list_texts(session, collection=store.TEXT_QUERIES)
    finally:
        engine.dispose()
    if not (cand_images or cand_texts):
        raise TuwenError(
            f"no candidates in the store at {settings.store_url}: run `tuwen ingest --root DIR` first"
        )
    loaded = create_model_and_transforms(model, device=settings.device, weights_dir=settings.weights_dir)
    encoder = Encoder(loaded, precision=precision)
    workers = decode_workers(workers)
    say(
        f"model {loaded.spec} ({loaded.arch.name}, {loaded.model_id}) on {loaded.device}, "
        f"precision {encoder.precision} (texts {encoder.text_precision})"
    )

    tmp = index_files.new_generation_dir(settings.index_dir)
    factories, counts = {}, {}
    try:
        usable = [r for r in cand_images if r.status == store.STATUS_OK]
        if len(usable) < len(cand_images):
            say(
                f"{len(cand_images) - len(usable)} candidate image(s) missing or unreadable: "
                "left out of the index"
            )
        if usable:
            vectors, errors = encoder.encode_image_files(
                [r.path for r in usable], batch_size=batch_size, workers=workers, progress=progress
            )
            keep = [i for i, e in enumerate(errors) if not e]
            for i, e in enumerate(errors):
                if e:
                    say(f"unreadable at encode time, left out: {usable[i].image_id}: {e}")
            ids = [usable[i].image_id for i in keep]
            _save_candidates(tmp, "image_candidates", ids, vectors[keep], index_factory, factories, counts)
        if cand_texts:
            vectors = encoder.encode_texts(
                [r.caption for r in cand_texts], batch_size=batch_size, progress=progress
            )
            _save_candidates(
                tmp,
                "text_candidates",
                [r.text_id for r in cand_texts],
                vectors,
                index_factory,
                factories,
                counts,
            )
        if query_texts:
            vectors = encoder.encode_texts(
                [r.caption for r in query_texts], batch_size=batch_size, progress=progress
            )
            index_files.save_vectors(tmp, "text_queries", [r.text_id for r in query_texts], vectors)
            counts["text_queries"] = len(query_texts)
        if query_images:
            vectors, errors = encoder.encode_image_files(
                [r.path or r.image_id for r in query_images],
                batch_size=batch_size,
                workers=workers,
                progress=progress,
            )
            for rec, err in zip(query_images, errors, strict=True):
                if err:
                    say(
                        f"query image {rec.image_id} ({rec.path}): {err}; "
                        "its results use the fallback (mean query)"
                    )
            index_files.save_vectors(
                tmp,
                "image_queries",
                [r.image_id for r in query_images],
                _fill_failed_queries(vectors, errors),
                errors,
            )
            counts["image_queries"] = len(query_images)
        manifest = {
            "model_spec": loaded.spec,
            "model_id": loaded.model_id,
            "arch": loaded.arch.name,
            "embed_dim": loaded.embed_dim,
            "precision": encoder.precision,
            "text_precision": encoder.text_precision,
            "index_factories": factories,
            "counts": counts,
            "created_at": time.time(),
        }
        final = index_files.publish_generation(settings.index_dir, tmp, manifest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    say(f"index generation {final.name}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return final


def _save_candidates(
    folder: Path,
    name: str,
    ids: list[str],
    vectors: np.ndarray,
    factory: str | None,
    factories: dict,
    counts: dict,
) -> None:
    index_files.save_vectors(folder, name, ids, vectors)
    index, used = build_index(vectors, factory=factory)
    index_files.save_faiss(folder, name, index)
    factories[name] = used
    counts[name] = len(ids)
