"""Top-k retrieval in both directions: text → images, image → captions, image → images.

``rerank=qb-norm`` (text → images, image → captions; issue 21): the candidate set's segment search
(``indexer.collection.search``, the same code as a collection's) ranks the candidates, re-ranks
the first ``RERANK_DEPTH`` by QB-Norm with the statistics stored in the generation, and answers
the first ``k``. A generation without them is a 409 naming `tuwen index`; an unknown value is
FastAPI's 422 naming ``rerank``.
"""

from __future__ import annotations

from typing import Annotated, Literal

import anyio.to_thread
import numpy as np
from fastapi import APIRouter, Depends, File, HTTPException, Query, Request, UploadFile
from sqlalchemy.orm import Session

from app.api.deps import (
    GenerationDep,
    K,
    SettingsDep,
    StateDep,
    check_query,
    image_url,
    require_search_key,
    run_model,
    store_unavailable,
)
from app.core.corpora import COMPETITION_SETS
from app.core.encoding import QueryEncoder
from app.core.state import Generation, ServiceState
from app.core.uploads import decode_upload, read_upload
from app.schemas import (
    ErrorOut,
    ImageHit,
    ImageToImageOut,
    ImageToTextOut,
    InvalidInputOut,
    TextHit,
    TextSearchOut,
)
from indexer import store
from indexer.collection.search import RERANK_DEPTH
from indexer.index_files import LoadedIndex

router = APIRouter(prefix="/api/search", tags=["search"], dependencies=[Depends(require_search_key)])
ERRORS = {code: {"model": ErrorOut} for code in (401, 404, 409, 413, 503)} | {422: {"model": InvalidInputOut}}
UPLOAD_ERRORS = ERRORS | {
    400: {"model": ErrorOut, "description": "the body is not valid multipart form data"}
}
UploadField = Annotated[UploadFile, File(description="an image file (JPEG, PNG, GIF, WebP, BMP...)")]
Rerank = Annotated[
    Literal["none", "qb-norm"],
    Query(
        description="none | qb-norm: QB-Norm with the query bank stored in the index generation "
        f"(附件1's training pairs); the first {RERANK_DEPTH:,} candidates re-ranked"
    ),
]
Hit = tuple[str, float, float | None]  # id, cosine similarity, re-ranked score


def _require_set(index: LoadedIndex, name: str) -> None:
    if name not in index.sets:
        raise HTTPException(
            status_code=404, detail=f"the live index has no {name}: ingest them and run `tuwen index`"
        )


def _search(index: LoadedIndex, name: str, vector: np.ndarray, k: int) -> list[Hit]:
    scores, ids = index.search(name, vector, k)
    return [(i, float(s), None) for i, s in zip(ids[0], scores[0], strict=False)]


def _reranked_search(generation: Generation, name: str, vector: np.ndarray, k: int) -> list[Hit]:
    """The top ``k`` of ``name`` after QB-Norm: the candidate set's segment search (as a corpus)."""
    served = generation.corpora.get(name)
    search = served.searches.get(COMPETITION_SETS[name]) if served is not None else None
    if search is None or not search.can_rerank:
        raise HTTPException(
            status_code=409,
            detail=f"the index generation {generation.name} has no QB-Norm statistics for {name} (built "
            "before the service could re-rank, with --bank-size 0, or without 附件1's training pairs): "
            "rebuild it with `tuwen index`",
        )
    page = search.search(np.asarray(vector, dtype=np.float32).reshape(-1), k=k, rerank="qb-norm")
    return [(h.id, h.score, h.rerank_score) for h in page.results]


async def _ranked(
    request: Request, generation: Generation, name: str, vector: np.ndarray, k: int, rerank: str
) -> list[Hit]:
    if rerank == "none":
        return await run_model(request, _search, generation.index, name, vector, k)
    return await run_model(request, _reranked_search, generation, name, vector, k)


def _embed_upload(queries: QueryEncoder, data: bytes) -> np.ndarray:
    return queries.encode_image(decode_upload(data, resolution=queries.resolution))


async def _upload_vector(request: Request, generation, file: UploadFile, settings) -> np.ndarray:
    data = await read_upload(file, limit_bytes=settings.max_upload_bytes)
    return await run_model(request, _embed_upload, generation.queries, data)


def _image_hits(request: Request, hits: list[Hit]) -> list[ImageHit]:
    return [ImageHit(image_id=i, score=s, url=image_url(request, i), rerank_score=r) for i, s, r in hits]


@router.get("/text", response_model=TextSearchOut, responses=ERRORS)
async def search_text(
    request: Request,
    generation: GenerationDep,
    settings: SettingsDep,
    q: Annotated[str, Query(description="the query text (Chinese)")],
    k: K = 5,
    rerank: Rerank = "none",
) -> TextSearchOut:
    """Candidate images closest to a text query, best first."""
    query = check_query(q, settings)
    _require_set(generation.index, store.IMAGE_CANDIDATES)
    queries = generation.queries
    vector = queries.cached_text(query)
    if vector is None:
        vector = await run_model(request, queries.encode_text, query)
    hits = await _ranked(request, generation, store.IMAGE_CANDIDATES, vector, k, rerank)
    return TextSearchOut(query=query, generation=generation.name, results=_image_hits(request, hits))


def _captions(generation: Generation, state: ServiceState, text_ids: list[str]) -> dict[str, str]:
    """Captions from the generation's columns (no store); an index built before them reads the store."""
    served = generation.corpora.get(store.TEXT_CANDIDATES)
    if served is not None:
        columns = served.columns
        return {i: columns.captions[r] or "" for i in text_ids if (r := columns.row_of(i)) is not None}
    if state.engine is None:
        raise store_unavailable(state)
    with Session(state.engine) as session:  # an old generation: a store outage is a 503 here
        return store.get_captions(session, collection=store.TEXT_CANDIDATES, text_ids=text_ids)


@router.post("/image", response_model=ImageToTextOut, responses=UPLOAD_ERRORS)
async def search_image(
    request: Request,
    generation: GenerationDep,
    state: StateDep,
    settings: SettingsDep,
    file: UploadField,
    k: K = 5,
    rerank: Rerank = "none",
) -> ImageToTextOut:
    """Candidate captions closest to an uploaded image, best first."""
    _require_set(generation.index, store.TEXT_CANDIDATES)
    vector = await _upload_vector(request, generation, file, settings)
    hits = await _ranked(request, generation, store.TEXT_CANDIDATES, vector, k, rerank)
    captions = await anyio.to_thread.run_sync(_captions, generation, state, [i for i, *_ in hits])
    results = [TextHit(text_id=i, caption=captions.get(i, ""), score=s, rerank_score=r) for i, s, r in hits]
    return ImageToTextOut(generation=generation.name, results=results)


@router.post("/image-to-image", response_model=ImageToImageOut, responses=UPLOAD_ERRORS)
async def search_image_to_image(
    request: Request,
    generation: GenerationDep,
    settings: SettingsDep,
    file: UploadField,
    k: K = 5,
    rerank: Annotated[
        Literal["none"],
        Query(description="none only: QB-Norm's bank of the images is of captions (text queries)"),
    ] = "none",
) -> ImageToImageOut:
    """Candidate images closest to an uploaded image, best first."""
    _require_set(generation.index, store.IMAGE_CANDIDATES)
    vector = await _upload_vector(request, generation, file, settings)
    hits = await run_model(request, _search, generation.index, store.IMAGE_CANDIDATES, vector, k)
    return ImageToImageOut(generation=generation.name, results=_image_hits(request, hits))
