"""Admin protection, the search-key mode and CORS."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from test_service_fixtures import make_settings

from app.main import create_app
from common.errors import TuwenError

KEY = "s3cret-test-key"
RELOAD = "/api/admin/reload"


def client_for(built, **overrides) -> TestClient:
    return TestClient(create_app(make_settings(built.home, **overrides)))


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_admin_is_off_without_a_configured_key(built_settings):
    with client_for(built_settings) as c:
        for headers in ({}, bearer(""), bearer("anything")):
            r = c.post(RELOAD, headers=headers)
            assert r.status_code == 403
            assert "TUWEN_API_KEY" in r.json()["detail"]


def test_admin_needs_the_key_when_configured(built_settings):
    with client_for(built_settings, api_key=KEY) as c:
        missing = c.post(RELOAD)
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == "Bearer"
        assert c.post(RELOAD, headers=bearer("wrong")).status_code == 401
        assert c.post(RELOAD, headers={"Authorization": f"Basic {KEY}"}).status_code == 401
        ok = c.post(RELOAD, headers=bearer(KEY))
        assert ok.status_code == 200
        assert ok.json()["generation"] == c.get("/readyz").json()["generation"]
        assert ok.json()["swapped"] is False  # already the live one


def test_search_is_open_with_a_key_configured_by_default(built_settings):
    with client_for(built_settings, api_key=KEY) as c:
        assert c.get("/api/search/text", params={"q": "猫"}).status_code == 200


SEARCH_CALLS = [
    ("get", "/api/search/text?q=猫", {}),
    ("post", "/api/search/image", {"files": {"file": ("a.png", b"x", "image/png")}}),
    ("post", "/api/search/image-to-image", {"files": {"file": ("a.png", b"x", "image/png")}}),
    ("get", "/api/export/result1.csv", {}),
    ("get", "/api/stats", {}),
]


def test_search_key_required_mode(built_settings, small_corpus):
    image_id = small_corpus[1]["quirks"]["candidate_png"]
    with client_for(built_settings, api_key=KEY, require_key_for_search=True) as c:
        for method, url, kwargs in [*SEARCH_CALLS, ("get", f"/api/images/{image_id}", {})]:
            assert getattr(c, method)(url, **kwargs).status_code == 401, url
            assert getattr(c, method)(url, headers=bearer("nope"), **kwargs).status_code == 401, url
        assert c.get("/api/search/text", params={"q": "猫"}, headers=bearer(KEY)).status_code == 200
        assert c.get(f"/api/images/{image_id}", headers=bearer(KEY)).status_code == 200
        # liveness, readiness and the page stay open for probes and browsers
        assert c.get("/healthz").status_code == 200
        assert c.get("/readyz").status_code == 200
        assert c.get("/").status_code == 200


def test_search_key_mode_without_a_key_is_refused_at_start(built_settings):
    with pytest.raises(TuwenError, match="TUWEN_API_KEY"):
        create_app(make_settings(built_settings.home, require_key_for_search=True))


def test_cors_is_off_by_default(built_settings):
    with client_for(built_settings) as c:
        preflight = c.options(
            "/api/search/text",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
        )
        assert "access-control-allow-origin" not in preflight.headers
        r = c.get("/api/search/text", params={"q": "猫"}, headers={"Origin": "https://evil.example"})
        assert r.status_code == 200
        assert "access-control-allow-origin" not in r.headers


def test_cors_allows_only_the_configured_origins(built_settings):
    with client_for(built_settings, cors_origins=["https://ok.example"]) as c:
        good = c.get("/api/search/text", params={"q": "猫"}, headers={"Origin": "https://ok.example"})
        assert good.headers["access-control-allow-origin"] == "https://ok.example"
        bad = c.get("/api/search/text", params={"q": "猫"}, headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in bad.headers
