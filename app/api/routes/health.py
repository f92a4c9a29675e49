"""Liveness, readiness and figures about what is being served."""

from __future__ import annotations

from datetime import datetime, timezone

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from app.api.deps import MaybeGenerationDep, SessionDep, StateDep, require_search_key
from app.schemas import ErrorOut, Health, IndexInfo, ModelInfo, Ready, Stats
from indexer import store

router = APIRouter(tags=["health"])


def _iso(ts: float | None) -> str:
    return datetime.fromtimestamp(ts or 0, tz=timezone.utc).isoformat(timespec="seconds")


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is up."""
    return Health(status="ok")


@router.get("/readyz", response_model=Ready, responses={503: {"model": ErrorOut}})
async def readyz(generation: MaybeGenerationDep, state: StateDep):
    """An index and its model are loaded (503 until then)."""
    if generation is None:
        detail = state.last_error or f"no index loaded yet: run `tuwen index` ({state.settings.index_dir})"
        return JSONResponse({"detail": detail}, status_code=503)
    return Ready(status="ready", generation=generation.name, model_id=generation.queries.model_id)


@router.get(
    "/api/stats",
    response_model=Stats,
    tags=["stats"],
    dependencies=[Depends(require_search_key)],
    responses={401: {"model": ErrorOut}},
)
def stats(generation: MaybeGenerationDep, state: StateDep, session: SessionDep) -> Stats:
    """Store counts, model, index types and build time."""
    counts = store.counts(session)
    if generation is None:
        return Stats(
            ready=False,
            store=counts,
            model=None,
            index=None,
            text_cache=None,
            reload_error=state.last_error,
            loading=state.loading,
        )
    manifest, encoder = generation.manifest, generation.queries.encoder
    model = ModelInfo(
        spec=manifest.model_spec,
        model_id=encoder.model_id,
        arch=encoder.loaded.arch.name,
        device=str(encoder.device),
        precision=encoder.precision,
    )
    index = IndexInfo(
        generation=generation.name,
        built_at=_iso(manifest.created_at),
        loaded_at=_iso(generation.loaded_at),
        index_types=manifest.index_factories,
        counts={name: len(vs.ids) for name, vs in generation.index.sets.items()},
    )
    return Stats(
        ready=True,
        store=counts,
        model=model,
        index=index,
        text_cache=generation.queries.cache_info(),
        reload_error=state.last_error,
        loading=state.loading,
    )
