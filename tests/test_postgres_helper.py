"""tests/postgres.py: a throwaway server answers at ``url``, goes away on ``stop()`` and comes back
with its data on ``start()`` (what an outage test needs), and leaves nothing behind."""

from __future__ import annotations

import contextlib

import pytest
from postgres import PostgresUnavailable, throwaway_postgres
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError


def _run(url: str, sql: str):
    engine = create_engine(url, connect_args={"connect_timeout": 5})
    try:
        with engine.begin() as conn:
            result = conn.execute(text(sql))
            return result.scalar() if result.returns_rows else None
    finally:
        engine.dispose()


def test_throwaway_server_stops_and_starts_with_its_data():
    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(throwaway_postgres())
        except PostgresUnavailable as exc:
            pytest.skip(str(exc))
        _run(server.url, "CREATE TABLE kept (x int)")
        _run(server.url, "INSERT INTO kept VALUES (7)")
        server.stop()
        with pytest.raises(OperationalError):
            _run(server.url, "SELECT 1")
        server.start()
        assert _run(server.url, "SELECT x FROM kept") == 7
    assert not server.folder.exists()
