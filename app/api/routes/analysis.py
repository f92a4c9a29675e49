"""The analysis reports written under ``$TUWEN_HOME/analysis/`` (by ``tuwen analyze …``), listed.

The service never imports the analysis code: a report is a folder with a ``report.json`` and an
``index.html``, read here as files; ``app.main`` serves the folders themselves at ``/analysis/``.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import anyio.to_thread
from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from app.api.deps import SettingsDep, require_search_key
from app.schemas import ErrorOut
from common.reports import INDEX_HTML, is_report, report_json, reports_dir
from common.settings import Settings

ANALYSIS_PREFIX = "/analysis"


class ReportOut(BaseModel):
    folder: str
    kind: str
    title: str
    corpus: str | None = None
    created: str | None = None
    url: str


def analysis_dir(settings: Settings) -> Path:
    return reports_dir(settings.home_dir)


class ReportFiles(StaticFiles):
    """The report folders as static files (``index.html`` for a folder). Paths that leave the
    folder (``..``, symlinks) are refused by ``StaticFiles``; the folder may appear only after the
    service starts, so its absence is a 404, not an error."""

    def __init__(self, settings: Settings):
        super().__init__(directory=analysis_dir(settings), html=True, check_dir=False)

    async def check_config(self) -> None:
        return None


def list_reports(root: Path) -> list[ReportOut]:
    """Folders under ``root`` holding a readable ``report.json`` and an ``index.html``, newest first."""
    found = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if not is_report(folder):
            continue
        try:
            data = json.loads(report_json(folder).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # half-written or foreign: not a report yet
        if not isinstance(data, dict):
            continue
        found.append(
            ReportOut(
                folder=folder.name,
                kind=str(data.get("kind", "report")),
                title=str(data.get("title", folder.name)),
                corpus=None if data.get("corpus") is None else str(data["corpus"]),
                created=None if data.get("created") is None else str(data["created"]),
                url=f"{ANALYSIS_PREFIX}/{folder.name}/{INDEX_HTML}",
            )
        )
    return sorted(found, key=lambda r: (r.created or "", r.folder), reverse=True)


router = APIRouter(tags=["analysis"], dependencies=[Depends(require_search_key)])


@router.get("/api/analysis/reports", response_model=list[ReportOut], responses={401: {"model": ErrorOut}})
async def reports(settings: SettingsDep) -> list[ReportOut]:
    """The reports of `tuwen analyze clusters|alignment|…`, each with the URL of its page."""
    return await anyio.to_thread.run_sync(list_reports, analysis_dir(settings))


@router.get(f"{ANALYSIS_PREFIX}/", response_class=HTMLResponse, include_in_schema=False)
async def reports_page(settings: SettingsDep) -> HTMLResponse:
    items = await anyio.to_thread.run_sync(list_reports, analysis_dir(settings))
    rows = "".join(
        f'<li><a href="{html.escape(r.url)}">{html.escape(r.title)}</a> '
        f"<small>{html.escape(r.kind)} · {html.escape(r.created or '')}</small></li>"
        for r in items
    )
    body = (
        f"<ul>{rows}</ul>" if rows else "<p>还没有报告：运行 <code>tuwen analyze clusters NAME</code>。</p>"
    )
    return HTMLResponse(
        '<!doctype html><html lang="zh-CN"><head><meta charset="utf-8"><title>分析报告</title>'
        '<link rel="stylesheet" href="/static/style.css"></head>'
        f'<body><main><h1>分析报告</h1>{body}<p><a href="/">← 返回检索</a></p></main></body></html>'
    )
