"""``tuwen train`` and ``tuwen eval`` (registered here; heavy imports happen in the handlers)."""

from __future__ import annotations


def register(sub, *, common) -> None:
    """Add this package's subcommands to the ``tuwen`` parser."""
