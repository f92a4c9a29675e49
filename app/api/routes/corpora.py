"""Search any collection (issue 18): the corpora, a search by text, item or image, an item, its image.

Thin: each route reads the request, calls ``app.core.corpus_search`` and shapes the answer.
Everything the competition endpoints promise holds here too, through the same dependencies: the
search key, the query length, the upload limit (the middleware and ``read_upload``) and the
guarded decoder (decompression bombs). Statuses: 404 unknown corpus or item, 409 not encoded or
changed since (naming the command) or re-ranked without QB-Norm statistics, 422 a bad field,
filter, target, ``k``, ``offset`` or ``rerank``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse
from PIL import Image

from app.api.deps import (
    CorpusDep,
    SettingsDep,
    StateDep,
    check_query,
    item_image_url,
    require_search_key,
    run_model,
)
from app.core import corpus_search
from app.core.corpora import ServedCorpus
from app.core.corpus_search import Plan
from app.core.encoding import QueryEncoder
from app.core.uploads import decode_upload, read_upload
from app.schemas import (
    CorpusHit,
    CorpusItemOut,
    CorpusOut,
    CorpusSearchIn,
    CorpusSearchOut,
    ErrorOut,
    SearchInputError,
)
from indexer.collection.filters import FilterError
from indexer.collection.search import SearchPage
from models.imageio import sniff_format

router = APIRouter(prefix="/api/corpora", tags=["corpora"], dependencies=[Depends(require_search_key)])
ERRORS = {code: {"model": ErrorOut} for code in (401, 404, 409, 413, 503)} | {
    422: {"model": SearchInputError}
}
BAD_BODY = {400: {"model": ErrorOut, "description": "the body is not valid JSON / multipart form data"}}
Image.init()  # fills Image.MIME from every format plugin


@router.get("", response_model=list[CorpusOut], responses={401: {"model": ErrorOut}})
async def list_corpora(state: StateDep) -> list[CorpusOut]:
    """Every corpus the service can search (and those added but not encoded yet)."""
    generation = await state.current()
    listed = corpus_search.listing(
        served=await state.corpora.all(),
        catalog=state.corpora.catalog,
        competition=generation.corpora if generation else {},
    )
    return [CorpusOut(**c) for c in listed]


def _page(request: Request, corpus: ServedCorpus, plan: Plan, page: SearchPage) -> CorpusSearchOut:
    hits = [
        CorpusHit(
            id=h.id,
            score=h.score,
            caption=h.row.get("caption"),
            image_url=item_image_url(request, corpus.corpus, h.row),
            time=h.row.get("time"),
            attributes=h.row.get("attributes", {}),
            rerank_score=h.rerank_score,
        )
        for h in page.results
    ]
    return CorpusSearchOut(
        corpus=corpus.corpus,
        generation=corpus.name,
        target=plan.target,
        results=hits,
        next_offset=page.next_offset,
        total=page.total,
        plan=page.plan,
        rerank=plan.rerank,
    )


async def _text_vector(request: Request, queries: QueryEncoder, query: str):
    vector = queries.cached_text(query)
    if vector is None:
        vector = await run_model(request, queries.encode_text, query)
    return vector


@router.post("/{name}/search", response_model=CorpusSearchOut, responses=ERRORS | BAD_BODY)
async def search(
    request: Request, corpus: CorpusDep, body: CorpusSearchIn, settings: SettingsDep
) -> CorpusSearchOut:
    """A text query (``q``) or "more like this" (``item``), filtered by ``where``, one page of ``k``."""
    known = corpus.columns.known_fields
    if (body.q is None) == (body.item is None):
        raise FilterError("q", "send either q (a text) or item (an item id)", known)
    plan = corpus_search.plan(
        corpus=corpus,
        target=body.target,
        where=body.where,
        k=body.k,
        offset=body.offset,
        rerank=body.rerank,
        query="item" if body.item is not None else "text",
    )
    if body.item is not None:
        page = await run_model(
            request, lambda: corpus_search.search_item(plan=plan, corpus=corpus, item=body.item)
        )
        return _page(request, corpus, plan, page)
    vector = await _text_vector(request, corpus.queries, check_query(body.q, settings))
    page = await run_model(request, lambda: corpus_search.search_vector(plan=plan, vector=vector))
    return _page(request, corpus, plan, page)


def _where_form(where: str | None, corpus: ServedCorpus) -> dict | None:
    if where is None or not where.strip():
        return None
    try:
        parsed = json.loads(where)
    except ValueError as exc:
        raise FilterError("where", f"where is not JSON: {exc}", corpus.columns.known_fields) from exc
    if not isinstance(parsed, dict):
        raise FilterError("where", "where must be a JSON object", corpus.columns.known_fields)
    return parsed


@router.post(
    "/{name}/search/image",
    response_model=CorpusSearchOut,
    responses=ERRORS | BAD_BODY,
)
async def search_image(
    request: Request,
    corpus: CorpusDep,
    settings: SettingsDep,
    file: Annotated[UploadFile, File(description="an image file (JPEG, PNG, GIF, WebP, BMP...)")],
    k: Annotated[int, Form()] = 10,
    offset: Annotated[int, Form()] = 0,
    target: Annotated[str | None, Form(description="image | text")] = None,
    where: Annotated[str | None, Form(description="the filter, as JSON")] = None,
    rerank: Annotated[str, Form(description="none | qb-norm (with target text)")] = "none",
) -> CorpusSearchOut:
    """An uploaded image against the corpus's images (or captions), filtered, one page."""
    plan = corpus_search.plan(
        corpus=corpus,
        target=target,
        where=_where_form(where, corpus),
        k=k,
        offset=offset,
        rerank=rerank,
        query="image",
    )
    data = await read_upload(file, limit_bytes=settings.max_upload_bytes)
    queries = corpus.queries
    vector = await run_model(
        request, lambda: queries.encode_image(decode_upload(data, resolution=queries.resolution))
    )
    page = await run_model(request, lambda: corpus_search.search_vector(plan=plan, vector=vector))
    return _page(request, corpus, plan, page)


def _row(corpus: ServedCorpus, item_id: str) -> dict:
    corpus_search.check_item_id(item_id, corpus)
    row = corpus_search.item_row(corpus=corpus, item=item_id)
    if row is None:
        raise corpus_search.UnknownItem(f"corpus {corpus.corpus} has no item {item_id[:100]!r}")
    return row


@router.get("/{name}/items/{item_id}", response_model=CorpusItemOut, responses=ERRORS)
async def get_item(request: Request, corpus: CorpusDep, item_id: str) -> CorpusItemOut:
    """One item with its fields; its image bytes are at ``image_url``."""
    row = _row(corpus, item_id)
    return CorpusItemOut(
        corpus=corpus.corpus,
        id=row["id"],
        caption=row.get("caption"),
        image_url=item_image_url(request, corpus.corpus, row),
        time=row.get("time"),
        attributes=row.get("attributes", {}),
    )


@router.get(
    "/{name}/items/{item_id}/image",
    response_class=FileResponse,
    responses={200: {"content": {"image/*": {}}}} | ERRORS,
)
def get_item_image(corpus: CorpusDep, item_id: str) -> FileResponse:
    """The bytes of an item's image, with the content type of its real format."""
    row = _row(corpus, item_id)
    path = Path(row["image_path"]) if row.get("image_path") else None
    if path is None or not path.is_file():
        raise HTTPException(status_code=404, detail=f"item {item_id[:100]!r} has no image file")
    media_type = Image.MIME.get(sniff_format(path) or "", "application/octet-stream")
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": "private, max-age=3600"})
