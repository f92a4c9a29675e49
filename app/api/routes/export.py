"""The competition result files over HTTP, streamed by the same code as ``tuwen export``."""

from __future__ import annotations

import itertools

import anyio.to_thread
from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import StreamingResponse

from app.api.deps import IndexDep, require_search_key
from app.schemas import ErrorOut
from common.errors import TuwenError
from indexer.results import RESULT1, RESULT2, Task, csv_chunks

router = APIRouter(prefix="/api/export", tags=["export"], dependencies=[Depends(require_search_key)])
RESPONSES = {200: {"content": {"text/csv": {}}}} | {code: {"model": ErrorOut} for code in (401, 404, 503)}


async def _stream(index, task: Task) -> StreamingResponse:
    chunks = csv_chunks(index, task)
    try:
        # the first block is computed before answering, so a missing query set is a 404, not a cut stream
        first = await anyio.to_thread.run_sync(next, chunks, "")
    except TuwenError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc
    return StreamingResponse(
        itertools.chain([first], chunks),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{task.filename}"'},
    )


@router.get("/result1.csv", response_class=StreamingResponse, responses=RESPONSES)
async def export_result1(index: IndexDep) -> StreamingResponse:
    """result1.csv: top 5 candidate images for every text query (附件2)."""
    return await _stream(index, RESULT1)


@router.get("/result2.csv", response_class=StreamingResponse, responses=RESPONSES)
async def export_result2(index: IndexDep) -> StreamingResponse:
    """result2.csv: top 5 candidate captions for every query image (附件3)."""
    return await _stream(index, RESULT2)
