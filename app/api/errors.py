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
from fastapi.responses import JSONResponse

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
