"""``PUT`` / ``DELETE /api/corpora/{name}/items/{id}``: keep a corpus current through the API (issue 19).

The admin key is required even when searches are open (401 without it; 403 naming TUWEN_API_KEY
when the server has none: the write endpoints are off), and the store must be up (503 otherwise).
What happens to a put item is ``app.core.corpus_writes``: the answer comes after it is searchable.
"""

from __future__ import annotations

import json
from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, UploadFile

from app.api.deps import SettingsDep, StateDep, require_admin, require_store
from app.core import corpus_writes
from app.core.corpus_writes import PutRequest, WriteError
from app.core.uploads import read_upload
from app.schemas import ErrorOut, SearchInputError
from indexer.corpus.read import RepeatedKey, unique_object

router = APIRouter(
    prefix="/api/corpora",
    tags=["corpora"],
    dependencies=[Depends(require_admin), Depends(require_store)],
    # the admin key (401, 403 when writes are off), the corpus and item (404), a stale corpus (409),
    # the input (413 upload too large, 422), the store (503 with Retry-After)
    responses={code: {"model": ErrorOut} for code in (400, 401, 403, 404, 409, 413, 503)}
    | {422: {"model": SearchInputError}},  # ours names the field; FastAPI's lists the body's errors
)


async def _run(fn, *args) -> dict:
    try:
        return await anyio.to_thread.run_sync(fn, *args)
    except WriteError as exc:
        raise HTTPException(status_code=exc.status, detail=exc.detail) from exc


JSON_FIELDS = ("caption", "time", "attributes")


@router.put("/{name}/items/{item_id}")
async def put_item(
    name: str,
    item_id: str,
    request: Request,
    state: StateDep,
    settings: SettingsDep,
    image: Annotated[UploadFile | None, File(description="the item's image (JPEG, PNG, ...)")] = None,
    caption: Annotated[str | None, Form()] = None,
    time: Annotated[str | None, Form(description="ISO date/datetime or an integer")] = None,
    attributes: Annotated[str | None, Form(description='a JSON object, e.g. {"price": 199}')] = None,
) -> dict:
    """Add or replace one item; answered once it is stored and searchable on this server.

    Multipart form fields (with an ``image`` file), or a JSON object with ``caption``, ``time``
    and ``attributes`` for an item without an image."""
    if request.headers.get("content-type", "").split(";")[0].strip() == "application/json":
        caption, time, attributes = _json_fields(await request.body())
    data = await read_upload(image, limit_bytes=settings.max_upload_bytes) if image is not None else None
    put = PutRequest(item_id, data, caption, time, attributes)
    return await _run(corpus_writes.put_item, settings, state.engine, state.deltas, name, put)


@router.delete("/{name}/items/{item_id}")
async def delete_item(name: str, item_id: str, state: StateDep) -> dict:
    """Remove one item; it is never in a result of this server from the answer on."""
    return await _run(corpus_writes.delete_item, state.engine, state.deltas, name, item_id)


def _json_fields(body: bytes) -> tuple[str | None, str | None, str | None]:
    """(caption, time, attributes as JSON text) of a JSON body, as the form fields would give them."""
    try:
        fields = json.loads(body, object_pairs_hook=unique_object)
    except RepeatedKey as exc:
        raise HTTPException(status_code=422, detail=f"body: {exc}") from None
    except ValueError as exc:
        raise HTTPException(status_code=422, detail=f"body: not valid JSON ({exc})") from None
    if not isinstance(fields, dict):
        raise HTTPException(status_code=422, detail="body: a JSON object of caption, time, attributes")
    if "image" in fields:
        raise HTTPException(
            status_code=422, detail="image: send the image as a file (field image) of a multipart body"
        )
    unknown = sorted(set(fields) - set(JSON_FIELDS))
    if unknown:
        raise HTTPException(
            status_code=422, detail=f"{unknown[0]}: not a field of an item (caption, time, attributes)"
        )
    caption, time, attributes = (fields.get(name) for name in JSON_FIELDS)
    if caption is not None and not isinstance(caption, str):
        raise HTTPException(status_code=422, detail="caption: a string")
    # time and attributes as the form would send them: app.core.corpus_writes checks both
    as_text = None if attributes is None else json.dumps(attributes, ensure_ascii=False)
    return caption, None if time is None else str(time), as_text
