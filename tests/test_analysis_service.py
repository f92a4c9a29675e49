"""``tuwen serve`` lists the reports under ``$TUWEN_HOME/analysis/`` and serves their files, and
nothing outside that folder (the service starts here with no index: reports need none)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from analysis.report import Report
from app.main import create_app
from common.settings import Settings


@pytest.fixture
def home_with_reports(tmp_path) -> Settings:
    settings = Settings(home=tmp_path / "home")
    root = settings.home_dir / "analysis"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report = Report(root / "clusters-posts", kind="clusters", title="Style clusters of posts")
    fig, ax = plt.subplots()
    ax.plot([1, 2], [3, 4])
    report.figure("silhouette", fig, title="Silhouette")
    report.finish({"corpus": "posts", "k": 6})
    (root / "half-written").mkdir()
    (root / "half-written" / "report.json").write_text("{not json", encoding="utf-8")
    (root / "half-written" / "index.html").write_text("<p>", encoding="utf-8")
    (settings.home_dir / "secret.txt").write_bytes(b"secret")
    return settings


def test_reports_are_listed_served_and_linked(home_with_reports):
    with TestClient(create_app(home_with_reports)) as client:
        listed = client.get("/api/analysis/reports").json()
        assert [(r["folder"], r["kind"], r["corpus"]) for r in listed] == [
            ("clusters-posts", "clusters", "posts")
        ]
        page = client.get(listed[0]["url"])
        assert page.status_code == 200 and "Style clusters of posts" in page.text
        assert client.get("/analysis/clusters-posts/silhouette.png").headers["content-type"] == "image/png"
        assert client.get("/analysis/clusters-posts/").status_code == 200  # the folder shows its index.html
        overview = client.get("/analysis/")
        assert overview.status_code == 200 and 'href="/analysis/clusters-posts/index.html"' in overview.text
        assert 'href="/analysis/"' in client.get("/").text  # the search page links the reports


@pytest.mark.parametrize(
    "path",
    [
        "/analysis/../secret.txt",
        "/analysis/%2e%2e/secret.txt",
        "/analysis/clusters-posts/..%2f..%2fsecret.txt",
        "/analysis/%2e%2e%2f%2e%2e%2fetc/passwd",
        "/analysis/missing/index.html",
    ],
)
def test_nothing_outside_the_reports_folder_is_served(home_with_reports, path):
    with TestClient(create_app(home_with_reports)) as client:
        response = client.get(path)
        assert response.status_code == 404
        assert b"secret" not in response.content


def test_no_reports_folder_yet(tmp_path):
    with TestClient(create_app(Settings(home=tmp_path / "empty"))) as client:
        assert client.get("/api/analysis/reports").json() == []
        assert "tuwen analyze clusters" in client.get("/analysis/").text
        assert client.get("/analysis/x/index.html").status_code == 404
