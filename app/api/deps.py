"""Dependencies of the routes, as ``Annotated`` aliases (the full-stack-fastapi-template way)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated, TypeVar
from urllib.parse import quote

import anyio.to_thread
from fastapi import Depends, HTTPException, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from app.core.corpora import ServedCorpus
from app.core.corpus_search import resolve
from app.core.encoding import QueryEncoder
from app.core.security import ADMIN_SCHEME, SEARCH_SCHEME, check_admin, check_search
from app.core.state import Generation, ServiceState
from app.core.store_health import RETRY_AFTER_S
from common.settings import Settings
from indexer.index_files import LoadedIndex

T = TypeVar("T")
# Two names for the one header, so the schema can say the search key is optional when it is.
admin_bearer = HTTPBearer(auto_error=False, scheme_name=ADMIN_SCHEME, description="TUWEN_API_KEY")
search_bearer = HTTPBearer(
    auto_error=False,
    scheme_name=SEARCH_SCHEME,
    description="TUWEN_API_KEY, checked only when TUWEN_REQUIRE_KEY_FOR_SEARCH=1",
)


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_state(request: Request) -> ServiceState:
    return request.app.state.service


SettingsDep = Annotated[Settings, Depends(get_settings)]
StateDep = Annotated[ServiceState, Depends(get_state)]
AdminCredentialsDep = Annotated[HTTPAuthorizationCredentials | None, Depends(admin_bearer)]
SearchCredentialsDep = Annotated[HTTPAuthorizationCredentials | None, Depends(search_bearer)]


def store_unavailable(state: ServiceState) -> HTTPException:
    """503 naming the store, with Retry-After: what needs the store says so during an outage."""
    return HTTPException(
        status_code=503,
        detail=state.health.unavailable_detail(),
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def require_store(state: StateDep) -> None:
    """Writes and the admin reload: 503 at once while the store is down (no wait on a timeout)."""
    if not state.health.ready:
        raise store_unavailable(state)


def get_session(state: StateDep) -> Iterator[Session]:
    """A session on the store (503 while it is down; a connection lost mid-request is a 503 too)."""
    if state.engine is None or not state.health.ready:
        raise store_unavailable(state)
    with Session(state.engine) as session:
        yield session


async def get_maybe_generation(state: StateDep) -> Generation | None:
    """The generation this request uses from start to end (checked for a newer one first)."""
    return await state.current()


MaybeGenerationDep = Annotated[Generation | None, Depends(get_maybe_generation)]


def get_generation(generation: MaybeGenerationDep, state: StateDep) -> Generation:
    if generation is None:
        raise HTTPException(
            status_code=503,
            detail=state.last_error
            or f"no index loaded yet: run `tuwen index` (looked in {state.settings.index_dir})",
        )
    return generation


SessionDep = Annotated[Session, Depends(get_session)]
GenerationDep = Annotated[Generation, Depends(get_generation)]


async def get_corpus(name: str, state: StateDep) -> ServedCorpus:
    """The corpus ``name`` as this request searches it: 404 unknown, 409 not encoded or stale."""
    generation = await state.current()
    served, load_error = await state.corpora.get(name)
    return resolve(
        name=name,
        served=served,
        load_error=load_error,
        catalog=state.corpora.catalog,
        competition=generation.corpora if generation else {},
    )


CorpusDep = Annotated[ServedCorpus, Depends(get_corpus)]


# Both derive from the one Generation FastAPI resolves per request, so they always agree.
def get_index(generation: GenerationDep) -> LoadedIndex:
    return generation.index


def get_encoder(generation: GenerationDep) -> QueryEncoder:
    return generation.queries


IndexDep = Annotated[LoadedIndex, Depends(get_index)]
EncoderDep = Annotated[QueryEncoder, Depends(get_encoder)]

K = Annotated[int, Query(ge=1, le=100, description="number of results, 1..100")]


def require_admin(settings: SettingsDep, credentials: AdminCredentialsDep) -> None:
    check_admin(settings, credentials)


def require_search_key(settings: SettingsDep, credentials: SearchCredentialsDep) -> None:
    check_search(settings, credentials)


def check_query(q: str, settings: Settings) -> str:
    query = q.strip()
    if not query:
        raise HTTPException(status_code=422, detail="the query is empty: type some Chinese text")
    if "\ufffd" in query:  # what the URL decoder makes of bytes that are not UTF-8 (a GBK client)
        raise HTTPException(
            status_code=422,
            detail="the query is not UTF-8 text (bytes that decode to nothing, shown as U+FFFD): "
            "send it as UTF-8, percent-encoded (红色 is %E7%BA%A2%E8%89%B2; in GBK it would be %BA%EC%C9%AB)",
        )
    if len(query) > settings.max_query_chars:
        raise HTTPException(
            status_code=422,
            detail=f"the query is too long: {len(query)} characters (limit {settings.max_query_chars})",
        )
    return query


async def run_model(request: Request, fn: Callable[..., T], *args) -> T:
    """Run blocking model work in a worker thread, a few at a time, off the event loop."""
    return await anyio.to_thread.run_sync(fn, *args, limiter=request.app.state.inference_limiter)


def image_url(request: Request, image_id: str) -> str:
    """Relative URL of an image (relative, so it stays right behind a reverse proxy)."""
    return f"{request.scope.get('root_path', '')}/api/images/{quote(image_id, safe='')}"


def item_image_url(request: Request, corpus: str, row: dict) -> str | None:
    """Relative URL of a corpus item's image bytes, None when the item has no image."""
    if not row.get("image_path"):
        return None
    item = quote(row["id"], safe="")
    return f"{request.scope.get('root_path', '')}/api/corpora/{quote(corpus, safe='')}/items/{item}/image"
