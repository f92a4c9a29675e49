"""``tuwen serve`` (registered here; uvicorn and the app are imported in the handler)."""

from __future__ import annotations

from tuwen.settings import Settings


def register(sub, *, common) -> None:
    """Add this package's subcommands to the ``tuwen`` parser."""
    p = sub.add_parser("serve", help="serve the search page and REST API (uvicorn, one process)")
    common(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.set_defaults(handler=_serve)


def _serve(args) -> int:
    from tuwen.settings import get_settings

    serve(settings=get_settings(args.home), host=args.host, port=args.port)
    return 0


def serve(*, settings: Settings, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Load store, index and model (a clear error if they don't fit), then run uvicorn until Ctrl-C."""
    import uvicorn

    from app.core.state import ServiceState
    from app.main import check_settings, create_app

    check_settings(settings)
    state = ServiceState.open(settings)  # TuwenError here is printed by the CLI as one line
    app = create_app(settings, state=state)
    uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=5)
