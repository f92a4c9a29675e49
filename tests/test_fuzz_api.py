"""Schemathesis against the app's own OpenAPI schema, in process (ASGI), on a real tiny index:
every operation with generated valid and invalid inputs, search open and search behind the key.
Checks: no 5xx, status codes, content types, headers and bodies as documented, invalid input
refused, auth enforced where declared. Not checked: that every schema-valid request succeeds, since
no schema can say "these bytes must decode as an image" or "not only spaces" (those are 422s)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import positive_data_acceptance
from test_service_fixtures import make_settings

from app.main import create_app
from indexer import store

KEY = "fuzz-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
MODES = {"open": {"api_key": KEY}, "keyed": {"api_key": KEY, "require_key_for_search": True}}
FUZZ = settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


class LateApp:
    """An ASGI app filled in by a fixture: schemathesis needs the app when the schema is loaded
    (so every request, its auth probes included, goes in process), the index exists only later."""

    app = None

    async def __call__(self, scope, receive, send) -> None:
        await self.app(scope, receive, send)


def _schema(mode: str, app: LateApp):
    # the schema does not depend on the index: read it from an app that is never started
    # (schemathesis.pytest.from_fixture would defer all this, but it breaks on pytest 9's node ids)
    schema = create_app(make_settings(Path("unused"), **MODES[mode])).openapi()
    loaded = schemathesis.openapi.from_dict(schema)
    loaded.app = app
    return loaded


OPEN, KEYED = LateApp(), LateApp()
open_schema, keyed_schema = _schema("open", OPEN), _schema("keyed", KEYED)


@pytest.fixture(scope="module")
def built(built_settings):
    return built_settings


def _serve(late: LateApp, built, mode: str):
    late.app = create_app(built.model_copy(update=MODES[mode]))
    yield
    asgi.shutdown_lifespans()  # schemathesis started the lifespan once: close the store engine now
    late.app = None


@pytest.fixture(scope="module")
def open_app(built):
    yield from _serve(OPEN, built, "open")


@pytest.fixture(scope="module")
def keyed_app(built):
    yield from _serve(KEYED, built, "keyed")


@open_schema.parametrize()
@FUZZ
def test_open_search_answers_as_documented(case, open_app):
    # the key is sent (admin needs it; search ignores it): the auth check then also probes
    # the admin endpoint without it and with a wrong one, which must be refused
    case.call_and_validate(headers=AUTH, excluded_checks=[positive_data_acceptance])


@keyed_schema.parametrize()
@FUZZ
def test_search_behind_the_key_answers_as_documented(case, keyed_app):
    case.call_and_validate(headers=AUTH, excluded_checks=[positive_data_acceptance])


@pytest.fixture(scope="module")
def candidate(built) -> tuple[str, bytes]:
    """(id, bytes) of a stored candidate image: random bytes never decode, so the fuzzer alone
    would reach only the 4xx answers of the upload and image endpoints."""
    engine = store.make_engine(built.store_url)
    with store.transaction(engine) as session:
        record = store.list_images(session, collection=store.IMAGE_CANDIDATES)[0]
    engine.dispose()
    return record.image_id, Path(record.path).read_bytes()


@pytest.mark.parametrize("path", ["/api/search/image", "/api/search/image-to-image"])
@pytest.mark.parametrize("k", [1, 100])
def test_real_image_uploads_answer_as_documented(open_app, candidate, path, k):
    case = open_schema[path]["POST"].Case(query={"k": k}, body={"file": candidate[1]})
    response = case.call_and_validate(excluded_checks=[positive_data_acceptance])
    assert response.status_code == 200
    assert len(response.json()["results"]) == k


def test_a_stored_image_answers_as_documented(open_app, candidate):
    case = open_schema["/api/images/{image_id}"]["GET"].Case(path_parameters={"image_id": candidate[0]})
    response = case.call_and_validate(excluded_checks=[positive_data_acceptance])
    assert (response.status_code, response.content) == (200, candidate[1])


@given(image_id=st.text(min_size=1, max_size=300))
@example(image_id="Image2\x000000001-0000.jpg")  # PostgreSQL refuses NUL in text: was a 500 there
@example(image_id="..\\..\\store.db")
@example(image_id="x" * 256)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_image_id_is_a_json_404_on_each_store(image_id, empty_store_client):
    # the fuzzed schema runs on SQLite; ids reach the store, so PostgreSQL is fuzzed here too
    r = empty_store_client.get(f"/api/images/{quote(image_id, safe='')}")
    assert r.status_code == 404, (image_id, r.status_code, r.text[:200])
    assert isinstance(r.json()["detail"], str)


@pytest.fixture
def empty_store_client(database_url, tmp_path):
    """The app on an empty store of each backend, with no index (ids are looked up all the same)."""
    with TestClient(create_app(make_settings(tmp_path / "home", database_url=database_url))) as c:
        yield c


BAD_K = ["abc", "5.5", "", "1e3", "-1", "0", "101", "99999999999999999999999", "٣"]


@pytest.mark.parametrize("k", BAD_K, ids=[f"k={k!r}" for k in BAD_K])
@pytest.mark.parametrize("path", ["/api/search/text", "/api/search/image", "/api/search/image-to-image"])
def test_bad_k_is_a_documented_422_naming_k_on_every_search(open_app, candidate, path, k):
    if path == "/api/search/text":
        case = open_schema[path]["GET"].Case(query={"q": "黑色双肩包", "k": k})
    else:
        case = open_schema[path]["POST"].Case(query={"k": k}, body={"file": candidate[1]})
    response = case.call_and_validate(excluded_checks=[positive_data_acceptance])
    assert response.status_code == 422
    assert [e["loc"] for e in response.json()["detail"]] == [["query", "k"]]
