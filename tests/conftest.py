"""Shared fixtures: a generated demo corpus, a fresh TUWEN_HOME, and stores on SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path

import pytest
from postgres import PostgresUnavailable, throwaway_postgres
from sqlalchemy import create_engine, text

from common.settings import Settings
from tuwen.demo.corpus import generate_demo_corpus

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test may reach the network
# Modules share a pytest-xdist worker: after a UMAP test, numba's TBB pool prints "Unable to join
# threads..." into the captured output of every later fork (DataLoader workers, a CLI's JSON).
# numba's own work queue starts no pool that outlives a call. Of users' processes only `tuwen demo`
# (analysis and forks in one process) sets it, unless the user did (tuwen/cli.py).
os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")
DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
# The modules that took longest on a 2-core CPU (``--durations``), longest first. With ``-n 2 --dist
# loadscope --no-loadscope-reorder`` (the Makefile) xdist hands modules out in collection order, so
# these start first and the workers end together; by default it orders them by their number of
# tests, which left the one-test demo module (200-260 s) running alone at the end of the suite.
LONGEST_FIRST = (
    "test_demo.py",
    "test_ray_index.py",
    "test_train_rerank.py",
    "test_outage.py",
    "test_replicas.py",
    "test_backends.py",
    "test_service_swap.py",
    "test_ddp.py",
    "test_corpus_writes_processes.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The listed modules first, in that order, then the other modules with a slow test, then the
    rest; each module's tests keep their order (the sort is stable and its key per module)."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: (rank.get(item.path.name, len(rank)), item.path not in slow))


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory) -> tuple[Path, dict]:
    """A small corpus with every quirk, shared read-only by the tests of a session."""
    root = tmp_path_factory.mktemp("corpus")
    summary = generate_demo_corpus(
        root, seed=1, n_train=60, n_text_queries=12, n_image_queries=12, image_size=64
    )
    return root, summary


@pytest.fixture
def home(tmp_path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def settings(home) -> Settings:
    return Settings(home=home)


def _unreachable(url: str) -> str | None:
    """None if ``url`` answers, else the error in one line."""
    engine = create_engine(url, connect_args={"connect_timeout": 5})
    try:
        with engine.connect():
            return None
    except Exception as exc:  # noqa: BLE001
        return str(exc).strip().splitlines()[0]
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def postgres_url():
    """The PostgreSQL the store tests use: TUWEN_TEST_POSTGRES_URL if set, else a server at
    127.0.0.1:5432 (database ``test``), else a throwaway one started here (tests/postgres.py), else
    the tests that need it are skipped with how to get one."""
    configured = os.environ.get("TUWEN_TEST_POSTGRES_URL")
    if configured:
        error = _unreachable(configured)
        if error:
            pytest.fail(f"TUWEN_TEST_POSTGRES_URL={configured} is set but does not answer: {error}")
        yield configured
        return
    if _unreachable(DEFAULT_POSTGRES_URL) is None:
        yield DEFAULT_POSTGRES_URL
        return
    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(throwaway_postgres())
        except PostgresUnavailable as exc:
            pytest.skip(f"no PostgreSQL at 127.0.0.1:5432 and no throwaway one: {exc}")
        yield server.url


def _postgres_schema_url(base_url: str) -> tuple[str, str]:
    schema = f"t_{uuid.uuid4().hex[:10]}"
    engine = create_engine(base_url)
    try:
        with engine.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    finally:
        engine.dispose()
    sep = "&" if "?" in base_url else "?"
    return f"{base_url}{sep}options=-csearch_path%3D{schema}", schema


def _drop_schema(base_url: str, schema: str) -> None:
    engine = create_engine(base_url)
    with engine.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    """A store URL on each backend; PostgreSQL gets a schema of its own, dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    base_url = request.getfixturevalue("postgres_url")
    url, schema = _postgres_schema_url(base_url)
    yield url
    _drop_schema(base_url, schema)


def copy_home(source: Path, target: Path) -> Path:
    """A copy of the home folder ``source`` at ``target`` (store, index generations, converted models):
    far cheaper than ingesting and building again. SQLite's ``-shm`` is left behind (rebuilt on open)."""
    shutil.copytree(source, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*-shm"))
    return target


@pytest.fixture(scope="session")
def built_settings(small_corpus, tmp_path_factory) -> Settings:
    """Settings of a home with the small corpus ingested and indexed with ``tiny``, built once per
    session and shared read-only; a test that changes a built home works on a copy
    (``test_service_fixtures.built_copy``)."""
    from test_service_fixtures import build_home

    from models.encoder import open_encoder

    settings = build_home(tmp_path_factory.mktemp("api-home"), small_corpus[0])
    # A job this small runs on PyTorch under ``auto`` and converts nothing (issue 22); convert tiny
    # here once, as `tuwen export-model` would, so the servers of every copy reuse the towers.
    open_encoder("tiny", settings=settings)
    return settings


@pytest.fixture(scope="module")
def client(built_settings):
    """A TestClient of the app serving ``built_settings``, started once per module."""
    from fastapi.testclient import TestClient

    from app.main import create_app

    with TestClient(create_app(built_settings)) as c:
        yield c


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models and small batches: one torch thread, so shared cores don't make OpenMP spin."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def ingested_home(small_corpus, built_settings, tmp_path_factory) -> Path:
    """The home folder of one ingest of the small corpus (no index), made once per session; tests
    use the ``ingested`` fixture, a copy of it. It holds ``tiny``'s converted towers (from the
    session's build), so no module that indexes or encodes with ``tiny`` converts them again."""
    from indexer.ingest import ingest

    root, _ = small_corpus
    settings = Settings(home=tmp_path_factory.mktemp("ingested-once"))
    ingest(root=root, settings=settings, progress=False, echo=lambda _: None)
    if built_settings.converted_dir.exists():  # auto is PyTorch on some machines: nothing converted
        copy_home(built_settings.converted_dir, settings.converted_dir)
    return settings.home


@pytest.fixture(scope="module")
def ingested(ingested_home, tmp_path_factory) -> Settings:
    """Settings of a home with the small corpus ingested (no index): each module gets its own copy,
    so a module that builds indexes or encodes collections in it changes no other module's."""
    return Settings(home=copy_home(ingested_home, tmp_path_factory.mktemp("ingested-home")))
