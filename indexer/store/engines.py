"""Opening the store: engines, schema revisions (Alembic) and the per-process shared engine.

``open_store(url)`` is the one way a stage opens the store: one transaction on the process's
engine for ``url``, whose schema was checked (and upgraded, under a lock) on its first open.
``make_engine`` is the same check on an engine of one's own (``tuwen db``, tests of migrations).
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, create_engine, event, inspect, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from common.errors import TuwenError

log = logging.getLogger(__name__)
# Alembic's INFO lines ("Context impl SQLiteImpl.", plugin set-up) come on every open; upgrade_store
# logs one line of its own instead.
logging.getLogger("alembic").setLevel(logging.WARNING)


def make_engine(url: str, *, upgrade: bool = True) -> Engine:
    """An engine on a store at this release's schema revision.

    A fresh database is created by running the migrations; a store of an older release is
    upgraded (under a lock, see ``upgrade_store``). Automatic because every entry point (ingest,
    index, train, serve) opens the store here, so none ever runs against a missing column, and the
    lock makes replicas starting together safe; ``tuwen db upgrade`` does the same ahead of a
    rollout. With ``upgrade=False`` an out-of-date store is refused with a message saying to run
    ``tuwen db upgrade``.
    """
    engine = _open_engine(url)
    try:
        if upgrade:
            upgrade_store(engine)
        else:
            check_revision(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine


def _open_engine(url: str) -> Engine:
    """An engine as it is, schema untouched; SQLite gets WAL so the server can read during ingest."""
    try:
        parsed = make_url(url)
        engine = create_engine(parsed, pool_pre_ping=True)
    except (SQLAlchemyError, ValueError, ImportError) as exc:
        raise TuwenError(f"bad database URL {url!r}: {exc}") from exc
    if engine.dialect.name == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA busy_timeout=30000")  # first: switching to WAL may wait for a lock
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.close()

    return engine


def upgrade_url(url: str) -> tuple[str | None, str]:
    """``tuwen db upgrade``: (revision before, head) of the store at ``url``."""
    engine = _open_engine(url)
    try:
        return upgrade_store(engine)
    finally:
        engine.dispose()


def url_revision(url: str) -> tuple[str | None, str]:
    """``tuwen db status``: (the store's revision, this release's head), changing nothing."""
    engine = _open_engine(url)
    try:
        with _store_errors(engine), engine.connect() as conn:
            return store_revision(conn), head_revision()
    finally:
        engine.dispose()


# --- Schema revisions (Alembic, migrations in indexer/migrations/) ------------------------------

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"  # indexer/migrations
BASELINE_REVISION = "0001_baseline"  # the schema of the releases before migrations
UNVERSIONED = "none (made before migrations)"  # a store of such a release: its tables, no alembic_version
_BASELINE_TABLES = ("images", "texts", "pairs")


def alembic_config(*, connection: Connection | None = None, url: str | None = None) -> Config:
    """Alembic's configuration, found through the package path (no alembic.ini needed)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@functools.cache
def _revisions() -> tuple[str, frozenset[str]]:
    """(head, every revision this release knows)."""
    script = ScriptDirectory.from_config(alembic_config())
    return script.get_current_head(), frozenset(s.revision for s in script.walk_revisions())


def head_revision() -> str:
    return _revisions()[0]


def store_revision(connection: Connection) -> str | None:
    """The store's revision: None for an empty database, ``UNVERSIONED`` for a pre-migrations store."""
    current = MigrationContext.configure(connection).get_current_revision()
    if current is not None:
        return current
    present = set(inspect(connection).get_table_names()) & set(_BASELINE_TABLES)
    if not present:
        return None
    if len(present) < len(_BASELINE_TABLES):
        missing = ", ".join(t for t in _BASELINE_TABLES if t not in present)
        raise TuwenError(
            f"the store at {_shown(connection.engine)} has table(s) {', '.join(sorted(present))} but not "
            f"{missing} and no alembic_version: not a tuwen store, or damaged; use another database"
        )
    return UNVERSIONED


def _shown(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def _check_known(engine: Engine, current: str | None) -> None:
    if current not in (None, UNVERSIONED) and current not in _revisions()[1]:
        raise TuwenError(
            f"the store at {_shown(engine)} is at revision {current}, which this release does not know "
            f"(it needs {head_revision()}): the store was upgraded by a newer tuwen; use that release"
        )


def check_revision(engine: Engine) -> str:
    """The store's revision if it is this release's head, else a TuwenError saying what to run."""
    with _store_errors(engine), engine.connect() as conn:
        current = store_revision(conn)
    _check_known(engine, current)
    if current != head_revision():
        raise TuwenError(
            f"the store at {_shown(engine)} is at revision {current or 'none (empty)'}, this release "
            f"needs {head_revision()}: run `tuwen db upgrade`"
        )
    return current


def upgrade_store(engine: Engine) -> tuple[str | None, str]:
    """Bring the store to head; returns (revision before, head).

    Service replicas and commands may open one store at once, so the upgrade holds a lock for its
    whole transaction: a PostgreSQL advisory lock keyed by the schema, SQLite's write lock
    (``BEGIN IMMEDIATE``). The revision is read again under the lock, so whoever waited finds head
    and does nothing. DDL is transactional on both, so a failure leaves the previous revision.
    """
    head = head_revision()
    with _store_errors(engine), engine.connect() as conn:
        before = store_revision(conn)
        conn.rollback()
        _check_known(engine, before)
        if before == head:
            return before, head
        _lock_for_migration(conn)
        before = store_revision(conn)
        if before != head:
            config = alembic_config(connection=conn)
            if before == UNVERSIONED:
                command.stamp(config, BASELINE_REVISION)
            command.upgrade(config, "head")
            done = f"upgraded from revision {before}" if before else "created"
            log.info("store at %s %s to revision %s", _shown(engine), done, head)
        conn.commit()
    return before, head


def _lock_for_migration(conn: Connection) -> None:
    """Begin the migration transaction holding the store's migration lock."""
    if conn.dialect.name == "postgresql":
        key = "hashtext('tuwen-store-migrate:' || current_schema())"
        conn.execute(text(f"SELECT pg_advisory_xact_lock({key})"))
    elif conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")


@contextmanager
def _store_errors(engine: Engine) -> Iterator[None]:
    try:
        yield
    except SQLAlchemyError as exc:
        raise TuwenError(f"cannot open the store at {_shown(engine)}: {getattr(exc, 'orig', exc)}") from exc


@dataclass(frozen=True)
class _Shared:
    """A shared engine, the process that opened it, and its SQLite file's identity (None elsewhere)."""

    engine: Engine
    pid: int
    file: tuple[int, int] | None


# Most recently used last; a process that opens many stores (the test suite: one per temporary
# home) keeps the newest few open, not one pool of file handles per store it ever saw.
_ENGINES: OrderedDict[tuple[str, bool], _Shared] = OrderedDict()
_ENGINES_LOCK = threading.Lock()
MAX_SHARED_ENGINES = 8


def _sqlite_file(engine: Engine) -> Path | None:
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        return None
    return Path(database)


def _file_identity(engine: Engine) -> tuple[int, int] | None:
    """(device, inode) of the engine's SQLite file; None for other databases or a missing file."""
    path = _sqlite_file(engine)
    if path is None:
        return None
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _still_valid(shared: _Shared) -> bool:
    """The engine still fits this process and the database it checked.

    Not after a fork (the child opens its own: pooled connections must not cross a fork), nor
    when its SQLite file was deleted or replaced (a test or an operator removed ``store.db``):
    the schema check must run again on the new file, or every query would miss its tables.
    """
    if shared.pid != os.getpid():
        return False
    return _sqlite_file(shared.engine) is None or _file_identity(shared.engine) == shared.file


def shared_engine(url: str, *, upgrade: bool = True) -> Engine:
    """The process's engine for ``url``, opened (and its schema checked or upgraded) once.

    Every command opens the store through ``open_store``; the migration check runs on the first
    open of a URL in a process, not on every open. It runs again in a forked child and after a
    SQLite file was deleted or replaced (one ``stat`` per open tells). ``dispose_engines`` closes
    them all (tests that drop a PostgreSQL schema and reuse its URL, a process shutting down).
    """
    key = (url, upgrade)
    with _ENGINES_LOCK:
        shared = _ENGINES.get(key)
        if shared is not None and not _still_valid(shared):
            _forget(_ENGINES.pop(key))
            shared = None
        if shared is None:
            engine = make_engine(url, upgrade=upgrade)
            shared = _ENGINES[key] = _Shared(engine, os.getpid(), _file_identity(engine))
            while len(_ENGINES) > MAX_SHARED_ENGINES:
                _forget(_ENGINES.popitem(last=False)[1])
        _ENGINES.move_to_end(key)
        return shared.engine


def _forget(shared: _Shared) -> None:
    """Close ``shared``'s pooled connections (only forget them in a forked child: they are the
    parent's). Sessions still holding a connection keep it until they end."""
    shared.engine.dispose(close=shared.pid == os.getpid())


def dispose_engines() -> None:
    """Close every engine ``shared_engine`` opened (a forked worker or a test calls this)."""
    with _ENGINES_LOCK:
        while _ENGINES:
            _forget(_ENGINES.popitem()[1])


@contextmanager
def open_store(url: str, *, upgrade: bool = True) -> Iterator[Session]:
    """One transaction on the store at ``url``: the one way a stage opens the store.

    Commits on a clean exit, rolls back on an exception. The engine is shared per process
    (``shared_engine``), so the schema check runs once, not per call.
    """
    with transaction(shared_engine(url, upgrade=upgrade)) as session:
        yield session


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(engine: Engine) -> Iterator[Session]:
    with session_factory(engine).begin() as session:
        yield session
