"""Alembic environment: migrations run on the connection ``indexer.store`` hands over.

``indexer.store.upgrade_store`` opens the connection, takes the migration lock and begins the
transaction; Alembic sees an external transaction and leaves committing to it.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from indexer.store.schema import Base

config = context.config


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=True,  # SQLite alters tables by copy; a no-op elsewhere
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("the tuwen store migrates online only: run `tuwen db upgrade`")

_connection = config.attributes.get("connection")
if _connection is not None:
    _run(_connection)
else:  # plain `alembic` with sqlalchemy.url set, for writing new revisions
    _engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with _engine.begin() as conn:
        _run(conn)
    _engine.dispose()
