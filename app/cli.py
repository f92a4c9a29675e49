"""``tuwen serve`` (registered here; uvicorn and the app are imported in the handler)."""

from __future__ import annotations


def register(sub, *, common) -> None:
    """Add this package's subcommands to the ``tuwen`` parser."""
