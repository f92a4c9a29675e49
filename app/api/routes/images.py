"""Image bytes by id: looked up in the live generation's columns (no store), never joined into a path.

The candidate images' paths are loaded with the generation, so the page's thumbnails keep
loading through a store outage. Other stored images (query and training images) are looked up
in the store, and are a 503 while it is down.
"""

from __future__ import annotations

from pathlib import Path

import anyio.to_thread
from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import FileResponse
from PIL import Image
from sqlalchemy.orm import Session

from app.api.deps import MaybeGenerationDep, StateDep, require_search_key, store_unavailable
from app.schemas import ErrorOut
from indexer import store
from models.imageio import sniff_format

router = APIRouter(prefix="/api/images", tags=["images"], dependencies=[Depends(require_search_key)])
MAX_ID_CHARS = 255  # the store's column width
Image.init()  # fills Image.MIME from every format plugin (empty until a plugin is loaded)


def _from_store(state, image_id: str) -> tuple[str, str | None] | None:
    if state.engine is None or not state.health.ready:
        raise store_unavailable(state)
    with Session(state.engine) as session:
        record = store.get_image(session, image_id=image_id)
        return (record.path, record.format) if record is not None else None


def _from_generation(generation, image_id: str) -> str | None:
    served = generation.corpora.get(store.IMAGE_CANDIDATES) if generation is not None else None
    row = served.columns.row_of(image_id) if served is not None else None
    return None if row is None else served.columns.image_paths[row]


@router.get(
    "/{image_id}",
    name="get_image",
    response_class=FileResponse,
    responses={200: {"content": {"image/*": {}}}} | {c: {"model": ErrorOut} for c in (401, 404, 503)},
)
async def get_image(image_id: str, generation: MaybeGenerationDep, state: StateDep) -> FileResponse:
    """The bytes of a stored image, with the content type of its real format."""
    # longer than the column, or with a NUL (which PostgreSQL refuses in text): never a stored id
    storable = len(image_id) <= MAX_ID_CHARS and "\x00" not in image_id
    path, fmt = _from_generation(generation, image_id) if storable else None, None
    if path is None and storable:
        found = await anyio.to_thread.run_sync(_from_store, state, image_id)
        path, fmt = found if found is not None else (None, None)
    if path is None:
        raise HTTPException(status_code=404, detail=f"unknown image id: {image_id[:100]!r}")
    file = Path(path)
    if not await anyio.to_thread.run_sync(file.is_file):
        raise HTTPException(status_code=404, detail=f"image {image_id!r} is stored but its file is gone")
    fmt = fmt or await anyio.to_thread.run_sync(sniff_format, file)  # the real format, not the name's
    media_type = Image.MIME.get(fmt or "", "application/octet-stream")
    return FileResponse(file, media_type=media_type, headers={"Cache-Control": "private, max-age=3600"})
