"""Schema migrations on SQLite and PostgreSQL, from a store made by the release before them.

``tests/fixtures/store-v0.db`` was written by that release (commit 4ac927d: ``create_all``, a small
demo corpus ingested); ``store-v0.postgresql.sql`` is the DDL it produced on PostgreSQL.
"""

from __future__ import annotations

import shutil
import sqlite3
import threading
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from conftest import _drop_schema, _postgres_schema_url
from sqlalchemy import create_engine, inspect, text

from common.errors import TuwenError
from indexer import store
from tuwen.cli import main

FIXTURES = Path(__file__).parent / "fixtures"
V0_TABLES = {"images": "collection, image_id", "texts": "collection, text_id", "pairs": "position"}


def _v0_rows() -> dict[str, list[tuple]]:
    con = sqlite3.connect(FIXTURES / "store-v0.db")
    try:
        return {
            t: con.execute(f"SELECT * FROM {t} ORDER BY {key}").fetchall() for t, key in V0_TABLES.items()
        }
    finally:
        con.close()


def _v0_columns(table: str) -> str:
    con = sqlite3.connect(FIXTURES / "store-v0.db")
    try:
        return ", ".join(r[1] for r in con.execute(f"PRAGMA table_info({table})"))
    finally:
        con.close()


def _rows(url: str) -> dict[str, list[tuple]]:
    """The v0 tables' rows in their v0 columns (later revisions add columns, e.g. images.sha256)."""
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = {
            t: [tuple(r) for r in conn.execute(text(f"SELECT {_v0_columns(t)} FROM {t} ORDER BY {key}"))]
            for t, key in V0_TABLES.items()
        }
    engine.dispose()
    return rows


def _load_v0_into_postgresql(url: str) -> None:
    ddl = (FIXTURES / "store-v0.postgresql.sql").read_text(encoding="utf-8")
    statements = [s for s in "\n".join(ln for ln in ddl.splitlines() if not ln.startswith("--")).split(";")]
    engine = create_engine(url)
    with engine.begin() as conn:
        for statement in statements:
            if statement.strip():
                conn.exec_driver_sql(statement)
        for table, rows in _v0_rows().items():
            columns = [c["name"] for c in inspect(conn).get_columns(table)]
            insert = text(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(':' + c for c in columns)})"
            )
            conn.execute(insert, [dict(zip(columns, r, strict=True)) for r in rows])
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def v0_store(request, tmp_path) -> str:
    """The URL of a store as the release before migrations left it."""
    if request.param == "sqlite":
        shutil.copy(FIXTURES / "store-v0.db", tmp_path / "store.db")
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    base_url = request.getfixturevalue("postgres_url")
    url, schema = _postgres_schema_url(base_url)
    _load_v0_into_postgresql(url)
    yield url
    _drop_schema(base_url, schema)


def _schema_differences(url: str) -> list:
    engine = create_engine(url)
    with engine.connect() as conn:
        diff = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), store.Base.metadata
        )
    engine.dispose()
    return diff


def _revision(url: str) -> str | None:
    return store.url_revision(url)[0]


def test_the_fixture_is_a_pre_migration_store_with_rows():
    rows = _v0_rows()
    assert all(rows[t] for t in V0_TABLES)  # every table has rows to lose
    con = sqlite3.connect(FIXTURES / "store-v0.db")
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    con.close()
    assert tables == set(V0_TABLES)


def test_an_old_store_is_stamped_and_upgraded_keeping_every_row(v0_store):
    assert _revision(v0_store) == store.UNVERSIONED
    engine = store.make_engine(v0_store)
    engine.dispose()
    assert _revision(v0_store) == store.head_revision()
    assert _rows(v0_store) == _v0_rows()
    assert _schema_differences(v0_store) == []  # every table and column of this release is there
    with store.transaction(store.make_engine(v0_store)) as s:  # and opening again changes nothing
        assert store.counts(s)["pairs"] == len(_v0_rows()["pairs"])


def test_a_fresh_store_is_made_by_the_migrations_and_equals_the_models(database_url):
    assert _revision(database_url) is None
    store.make_engine(database_url).dispose()
    assert _revision(database_url) == store.head_revision()
    assert _schema_differences(database_url) == []


def test_without_upgrade_an_old_store_is_refused_with_what_to_run(v0_store):
    with pytest.raises(
        TuwenError, match=r"is at revision none \(made before migrations\), this release needs "
    ):
        store.make_engine(v0_store, upgrade=False)
    assert _revision(v0_store) == store.UNVERSIONED  # untouched
    store.upgrade_url(v0_store)
    store.make_engine(v0_store, upgrade=False).dispose()


def test_concurrent_openers_upgrade_once(v0_store):
    """Service replicas starting together: one migrates under the lock, the others find head."""
    barrier, errors = threading.Barrier(4), []

    def open_store() -> None:
        barrier.wait()
        try:
            store.make_engine(v0_store).dispose()
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    engine = create_engine(v0_store)
    with engine.connect() as conn:
        assert conn.scalars(text("SELECT version_num FROM alembic_version")).all() == [store.head_revision()]
    engine.dispose()
    assert _rows(v0_store) == _v0_rows()


def test_a_store_from_a_newer_release_is_refused(database_url):
    store.make_engine(database_url).dispose()
    engine = create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
    engine.dispose()
    with pytest.raises(TuwenError, match="9999_future, which this release does not know"):
        store.make_engine(database_url)


def test_a_database_with_only_some_old_tables_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'odd.db'}"
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE images (x INTEGER)"))
    engine.dispose()
    with pytest.raises(TuwenError, match="has table.s. images but not texts, pairs"):
        store.make_engine(url)


def test_db_commands(tmp_path, capsys):
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(FIXTURES / "store-v0.db", home / "store.db")
    assert main(["db", "status", "--home", str(home)]) == 0
    assert "needs `tuwen db upgrade`" in capsys.readouterr().out
    assert main(["db", "upgrade", "--home", str(home)]) == 0
    assert f"store at revision {store.head_revision()} (was none" in capsys.readouterr().err
    assert main(["db", "status", "--home", str(home)]) == 0
    assert "up to date" in capsys.readouterr().out
    con = sqlite3.connect(home / "store.db")
    con.execute("UPDATE alembic_version SET version_num = '9999_future'")
    con.commit()
    con.close()
    assert main(["db", "upgrade", "--home", str(home)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "9999_future" in err


def test_the_upgrade_adds_the_corpus_tables(v0_store):
    store.make_engine(v0_store).dispose()
    engine = create_engine(v0_store)
    with engine.connect() as conn:
        tables = set(inspect(conn).get_table_names())
    engine.dispose()
    assert {"corpora", "corpus_fields", "corpus_items", "corpus_attributes"} <= tables
    assert {"vectors", "corpus_changes"} <= tables  # 0003: work saved by content, the change log


def test_a_failed_upgrade_leaves_the_store_as_it_was(v0_store):
    """DDL runs in one transaction: the stamp and the tables made before the failure are undone too."""
    engine = create_engine(v0_store)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE corpus_attributes (clash INTEGER)"))  # the last table 0002 creates
    engine.dispose()
    with pytest.raises(TuwenError, match="cannot open the store at"):
        store.make_engine(v0_store)
    engine = create_engine(v0_store)
    with engine.begin() as conn:
        tables = set(inspect(conn).get_table_names())
        conn.execute(text("DROP TABLE corpus_attributes"))
    engine.dispose()
    assert tables == set(V0_TABLES) | {"corpus_attributes"}  # no alembic_version, no corpora
    assert _rows(v0_store) == _v0_rows()
    store.make_engine(v0_store).dispose()
    assert _revision(v0_store) == store.head_revision()
