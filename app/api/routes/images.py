"""Image bytes by id: looked up in the store, never joined into a filesystem path."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import FileResponse
from PIL import Image

from app.api.deps import SessionDep, require_search_key
from app.schemas import ErrorOut
from indexer import store
from models.imageio import sniff_format

router = APIRouter(prefix="/api/images", tags=["images"], dependencies=[Depends(require_search_key)])
MAX_ID_CHARS = 255  # the store's column width
Image.init()  # fills Image.MIME from every format plugin (empty until a plugin is loaded)


@router.get(
    "/{image_id}",
    name="get_image",
    response_class=FileResponse,
    responses={200: {"content": {"image/*": {}}}, 401: {"model": ErrorOut}, 404: {"model": ErrorOut}},
)
def get_image(image_id: str, session: SessionDep) -> FileResponse:
    """The bytes of a stored image, with the content type of its real format."""
    # longer than the column, or with a NUL (which PostgreSQL refuses in text): never a stored id
    storable = len(image_id) <= MAX_ID_CHARS and "\x00" not in image_id
    record = store.get_image(session, image_id=image_id) if storable else None
    if record is None:
        raise HTTPException(status_code=404, detail=f"unknown image id: {image_id[:100]!r}")
    path = Path(record.path)
    if not path.is_file():
        raise HTTPException(status_code=404, detail=f"image {image_id!r} is stored but its file is gone")
    fmt = record.format or sniff_format(path)  # the format read from the bytes at ingest, not the name
    media_type = Image.MIME.get(fmt or "", "application/octet-stream")
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": "private, max-age=3600"})
