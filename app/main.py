"""The FastAPI application: ``create_app(settings)``; the lifespan loads store, index and model once."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.to_thread
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from app.api import errors
from app.api.main import api_router
from app.api.routes.analysis import ANALYSIS_PREFIX, ReportFiles
from app.core.security import document_search_key
from app.core.state import ServiceState
from app.core.uploads import UploadLimitMiddleware
from common.errors import TuwenError
from common.settings import Settings, get_settings

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).parent / "static"
INFERENCE_THREADS = 4  # concurrent model calls; more only oversubscribe the CPU cores torch uses


def check_settings(settings: Settings) -> None:
    if settings.require_key_for_search and not settings.api_key:
        raise TuwenError("TUWEN_REQUIRE_KEY_FOR_SEARCH=1 needs TUWEN_API_KEY to be set too")


def create_app(settings: Settings | None = None, *, state: ServiceState | None = None) -> FastAPI:
    """The app for ``settings``; ``state`` lets ``tuwen serve`` load (and fail cleanly) before uvicorn."""
    settings = settings or get_settings()
    check_settings(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = state or await anyio.to_thread.run_sync(ServiceState.open, settings)
        app.state.service = service
        app.state.inference_limiter = anyio.CapacityLimiter(INFERENCE_THREADS)
        try:
            yield
        finally:
            service.close()

    app = FastAPI(
        title="tuwen 图文检索",
        summary="Chinese image-text retrieval (Chinese-CLIP): search both ways, export the result CSVs",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.include_router(api_router)
    full_schema = app.openapi
    app.openapi = lambda: document_search_key(full_schema(), settings)

    errors.install(app)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    if not settings.require_key_for_search:  # a browser following a report link sends no key
        app.mount(ANALYSIS_PREFIX, ReportFiles(settings), name="analysis")

    if settings.cors_origins:  # none by default: the page is same-origin and needs no CORS
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(UploadLimitMiddleware, max_upload_bytes=settings.max_upload_bytes)
    return app
