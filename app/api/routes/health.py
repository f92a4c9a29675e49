"""Liveness, readiness and figures about what is being served.

``/healthz`` is the process; ``/readyz`` is 200 once something is searchable (the competition
index or any corpus) and says what, and the store's state: ``degraded`` (with the reason) while
the store is unreachable. Degraded stays 200 on purpose: every search still answers, and replicas
on one database all lose it together, so taking them out of rotation would turn a write outage
into a full one. Neither reads the store.
"""

from __future__ import annotations

from datetime import datetime, timezone

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from app.api.deps import MaybeGenerationDep, StateDep, require_search_key
from app.core.state import Generation, ServiceState
from app.schemas import ErrorOut, Health, IndexInfo, ModelInfo, Ready, Stats, StoreState

router = APIRouter(tags=["health"])


def _iso(ts: float | None) -> str:
    return datetime.fromtimestamp(ts or 0, tz=timezone.utc).isoformat(timespec="seconds")


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is up."""
    return Health(status="ok")


def _corpora(state: ServiceState) -> dict[str, str]:
    return {name: served.name for name, served in sorted(state.corpora.live().items())}


@router.get("/readyz", response_model=Ready, responses={503: {"model": ErrorOut}})
async def readyz(generation: MaybeGenerationDep, state: StateDep):
    """Something is searchable (503 until then); what is loaded, and the store's state."""
    await state.corpora.all()  # notices corpora encoded since the last look
    corpora = _corpora(state)
    if generation is None and not corpora:
        detail = state.last_error or (
            f"no index loaded yet: run `tuwen index` ({state.settings.index_dir}) "
            "or encode a corpus (`tuwen corpus encode NAME --model SPEC`)"
        )
        return JSONResponse({"detail": detail}, status_code=503)
    return Ready(
        status=state.health.state,
        generation=generation.name if generation else None,
        model_id=generation.queries.model_id if generation else None,
        corpora=corpora,
        store=StoreState(**state.health.status()),
    )


def _model_and_index(generation: Generation) -> tuple[ModelInfo, IndexInfo]:
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
    return model, index


@router.get(
    "/api/stats",
    response_model=Stats,
    tags=["stats"],
    dependencies=[Depends(require_search_key)],
    responses={401: {"model": ErrorOut}},
)
async def stats(generation: MaybeGenerationDep, state: StateDep) -> Stats:
    """Store counts and state, model, index types and build time, the served corpora."""
    model, index = _model_and_index(generation) if generation is not None else (None, None)
    return Stats(
        ready=generation is not None,
        store=state.store_counts,
        store_state=StoreState(**state.health.status()),
        corpora=_corpora(state),
        model=model,
        index=index,
        text_cache=generation.queries.cache_info() if generation is not None else None,
        reload_error=state.last_error,
        loading=state.loading,
    )
