"""State-changing endpoints: off unless TUWEN_API_KEY is set, and then only with that key."""

from __future__ import annotations

import anyio.to_thread
from fastapi import APIRouter, Depends, HTTPException

from app.api.deps import StateDep, require_admin, require_store
from app.schemas import ErrorOut, ReloadOut
from common.errors import TuwenError

router = APIRouter(
    prefix="/api/admin",
    tags=["admin"],
    dependencies=[Depends(require_admin), Depends(require_store)],  # 503 while the store is down
    responses={code: {"model": ErrorOut} for code in (401, 403, 503)},
)


@router.post("/reload", response_model=ReloadOut, responses={409: {"model": ErrorOut}})
async def reload_index(state: StateDep) -> ReloadOut:
    """Load the generation CURRENT names now, if it is not already the live one."""
    try:
        swapped = await anyio.to_thread.run_sync(lambda: state.refresh(force=True))
    except TuwenError as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from exc
    generation = state.generation
    return ReloadOut(
        swapped=swapped,
        generation=generation.name if generation else None,
        model_id=generation.queries.model_id if generation else None,
    )
