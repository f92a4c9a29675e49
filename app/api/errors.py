"""How exceptions become answers: one place for the status of each kind of failure.

- ``TuwenError``: 409 (a state the user resolves with a command; the message names it);
- collection search: ``UnknownCorpus`` / ``UnknownItem`` 404, ``FilterError`` 422 with the field
  and the corpus's fields;
- an unreachable store (a connection refused, a file that cannot be opened, a pool timeout): 503
  naming the store, with ``Retry-After``; the store monitor is told, so the log says it once;
- anything else: 500 with no detail (the traceback goes to the server log, never to the client).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from app.core.corpus_search import UnknownCorpus, UnknownItem
from app.core.store_health import RETRY_AFTER_S, UNREACHABLE, unreachable_cause
from common.errors import TuwenError
from indexer.collection.filters import FilterError

log = logging.getLogger(__name__)


def _store_down(request: Request, exc: BaseException) -> JSONResponse:
    service = getattr(request.app.state, "service", None)
    if service is not None:
        service.health.report_failure(exc)
        detail = service.health.unavailable_detail()
    else:
        detail = "the store is unreachable: retry later"
    return JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})


def allowed_methods(request: Request) -> set[str]:
    """Every method some route of this path answers (one path, e.g. an item, may have a GET route
    and a PUT / DELETE route in another router)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match != Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return methods


def install(app: FastAPI) -> None:
    @app.exception_handler(TuwenError)
    async def tuwen_error(request: Request, exc: TuwenError) -> JSONResponse:
        cause = unreachable_cause(exc)
        if cause is not None:
            return _store_down(request, cause)
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(FilterError)
    async def bad_search(_request: Request, exc: FilterError) -> JSONResponse:
        return JSONResponse({"detail": str(exc), **exc.to_dict()}, status_code=422)

    @app.exception_handler(UnknownCorpus)
    @app.exception_handler(UnknownItem)
    async def unknown(_request: Request, exc: TuwenError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 405:  # Starlette lists the first route's methods: list every route's
            headers = {**(exc.headers or {}), "Allow": ", ".join(sorted(allowed_methods(request)))}
            return JSONResponse({"detail": exc.detail}, status_code=405, headers=headers)
        return await http_exception_handler(request, exc)

    for kind in UNREACHABLE:
        app.add_exception_handler(kind, lambda request, exc: _store_down(request, exc))

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        cause = unreachable_cause(exc)
        if cause is not None:
            return _store_down(request, cause)
        # the traceback goes to the server log, never to the client
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal server error (see the server log)"}, status_code=500)
