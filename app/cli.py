"""``tuwen serve`` (registered here; uvicorn and the app are imported in the handler)."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import socket
import sys

from common.backend import BACKENDS, ENCODE_PRECISIONS
from common.errors import TuwenError
from common.settings import Settings

M_ARENA_MAX = -8  # glibc's mallopt parameter number
MALLOC_ARENAS = 2


def register(sub, *, common) -> None:
    """Add this package's subcommands to the ``tuwen`` parser."""
    p = sub.add_parser("serve", help="serve the search page and REST API (uvicorn, one process)")
    common(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=8000, help="port (default 8000)")
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        help="query encoding: torch|onnx|openvino (default $TUWEN_BACKEND, else auto)",
    )
    p.add_argument("--precision", choices=ENCODE_PRECISIONS, help="query encoding (default $TUWEN_PRECISION)")
    p.set_defaults(handler=_serve)


def _serve(args) -> int:
    from common.settings import get_settings

    settings = get_settings(args.home)
    if args.backend:
        settings.backend = args.backend
    if args.precision:
        settings.precision = args.precision
    serve(settings=settings, host=args.host, port=args.port)
    return 0


def serve(*, settings: Settings, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Load store, index and model (a clear error if they don't fit), then run uvicorn until Ctrl-C."""
    import uvicorn

    from app.core.state import ServiceState
    from app.main import check_settings, create_app

    check_settings(settings)
    check_can_listen(host, port)
    cap_malloc_arenas()
    state = ServiceState.open(settings)  # TuwenError here is printed by the CLI as one line
    app = create_app(settings, state=state)
    uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=5)


def _port(text: str) -> int:
    port = int(text) if text.strip().isdigit() else -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is a number from 0 to 65535, not {text!r}")
    return port


def check_can_listen(host: str, port: int) -> None:
    """Bind ``host:port`` once and let it go, before the model loads: uvicorn binds only after,
    so a port in use or an address this machine does not have failed after seconds of loading, as
    an uvicorn log line. Every address the host resolves to is bound as asyncio's ``create_server``
    (uvicorn's) binds them. (Another process may still take the port in between; uvicorn says so.)"""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise TuwenError(f"--host {host!r}: {exc.strerror}") from None
    for family, kind, proto, _name, address in dict.fromkeys(addresses):
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                raise TuwenError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def cap_malloc_arenas(arenas: int = MALLOC_ARENAS) -> None:
    """Cap glibc's malloc arenas (one per thread by default, up to 8 per core): with the thread pool
    serving requests, RSS kept creeping up for minutes as they fragmented; with two it stays flat
    (bench/bench_load.py). An explicit MALLOC_ARENA_MAX wins; other C libraries are left alone."""
    if "MALLOC_ARENA_MAX" in os.environ or not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):  # not glibc (musl, say): nothing to cap
        ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, arenas)
