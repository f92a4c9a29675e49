"""Top-k retrieval in both directions: text → images, image → captions, image → images."""

from __future__ import annotations

from typing import Annotated

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
from indexer.index_files import LoadedIndex

router = APIRouter(prefix="/api/search", tags=["search"], dependencies=[Depends(require_search_key)])
ERRORS = {code: {"model": ErrorOut} for code in (401, 404, 413, 503)} | {422: {"model": InvalidInputOut}}
UPLOAD_ERRORS = ERRORS | {
    400: {"model": ErrorOut, "description": "the body is not valid multipart form data"}
}
UploadField = Annotated[UploadFile, File(description="an image file (JPEG, PNG, GIF, WebP, BMP...)")]


def _require_set(index: LoadedIndex, name: str) -> None:
    if name not in index.sets:
        raise HTTPException(
            status_code=404, detail=f"the live index has no {name}: ingest them and run `tuwen index`"
        )


def _search(index: LoadedIndex, name: str, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
    scores, ids = index.search(name, vector, k)
    return [(i, float(s)) for i, s in zip(ids[0], scores[0], strict=False)]


def _embed_upload(queries: QueryEncoder, data: bytes) -> np.ndarray:
    return queries.encode_image(decode_upload(data, resolution=queries.resolution))


async def _upload_vector(request: Request, generation, file: UploadFile, settings) -> np.ndarray:
    data = await read_upload(file, limit_bytes=settings.max_upload_bytes)
    return await run_model(request, _embed_upload, generation.queries, data)


def _image_hits(request: Request, hits: list[tuple[str, float]]) -> list[ImageHit]:
    return [ImageHit(image_id=i, score=s, url=image_url(request, i)) for i, s in hits]


@router.get("/text", response_model=TextSearchOut, responses=ERRORS)
async def search_text(
    request: Request,
    generation: GenerationDep,
    settings: SettingsDep,
    q: Annotated[str, Query(description="the query text (Chinese)")],
    k: K = 5,
) -> TextSearchOut:
    """Candidate images closest to a text query, best first."""
    query = check_query(q, settings)
    _require_set(generation.index, store.IMAGE_CANDIDATES)
    queries = generation.queries
    vector = queries.cached_text(query)
    if vector is None:
        vector = await run_model(request, queries.encode_text, query)
    hits = await run_model(request, _search, generation.index, store.IMAGE_CANDIDATES, vector, k)
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
) -> ImageToTextOut:
    """Candidate captions closest to an uploaded image, best first."""
    _require_set(generation.index, store.TEXT_CANDIDATES)
    vector = await _upload_vector(request, generation, file, settings)
    hits = await run_model(request, _search, generation.index, store.TEXT_CANDIDATES, vector, k)
    captions = await anyio.to_thread.run_sync(_captions, generation, state, [i for i, _ in hits])
    results = [TextHit(text_id=i, caption=captions.get(i, ""), score=s) for i, s in hits]
    return ImageToTextOut(generation=generation.name, results=results)


@router.post("/image-to-image", response_model=ImageToImageOut, responses=UPLOAD_ERRORS)
async def search_image_to_image(
    request: Request,
    generation: GenerationDep,
    settings: SettingsDep,
    file: UploadField,
    k: K = 5,
) -> ImageToImageOut:
    """Candidate images closest to an uploaded image, best first."""
    _require_set(generation.index, store.IMAGE_CANDIDATES)
    vector = await _upload_vector(request, generation, file, settings)
    hits = await run_model(request, _search, generation.index, store.IMAGE_CANDIDATES, vector, k)
    return ImageToImageOut(generation=generation.name, results=_image_hits(request, hits))
