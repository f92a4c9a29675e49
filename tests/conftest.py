"""Shared fixtures: a generated demo corpus, a fresh TUWEN_HOME, and stores on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from common.settings import Settings
from tuwen.demo.corpus import generate_demo_corpus

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test may reach the network
POSTGRES_URL = os.environ.get("TUWEN_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


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


def _postgres_schema_url() -> tuple[str, str]:
    schema = f"t_{uuid.uuid4().hex[:10]}"
    engine = create_engine(POSTGRES_URL)
    try:
        with engine.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"PostgreSQL at {POSTGRES_URL} is required for the store tests: {exc}")
    finally:
        engine.dispose()
    sep = "&" if "?" in POSTGRES_URL else "?"
    return f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}", schema


def _drop_schema(schema: str) -> None:
    engine = create_engine(POSTGRES_URL)
    with engine.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    """A store URL on each backend; PostgreSQL gets a schema of its own, dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    url, schema = _postgres_schema_url()
    yield url
    _drop_schema(schema)


@pytest.fixture(scope="module")
def built_settings(small_corpus, tmp_path_factory) -> Settings:
    """Settings of a home with the small corpus ingested and indexed with ``tiny`` (built once)."""
    from test_service_fixtures import shared_build

    return shared_build(small_corpus, tmp_path_factory)


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


@pytest.fixture(scope="module")
def ingested(small_corpus, tmp_path_factory) -> Settings:
    """Settings of a home with the small corpus ingested (no index)."""
    from indexer.ingest import ingest

    root, _ = small_corpus
    settings = Settings(home=tmp_path_factory.mktemp("ingested-home"))
    ingest(root=root, settings=settings, progress=False, echo=lambda _: None)
    return settings
