"""An analysis report's folder: the one home of its layout, as ``common/runs.py`` is for runs.

Every study writes ``$TUWEN_HOME/analysis/<name>/`` with a ``report.json`` (what the service
lists) and an ``index.html`` (what a person opens); the service reads the same names here.
"""

from __future__ import annotations

from pathlib import Path

REPORTS_FOLDER = "analysis"
REPORT_JSON = "report.json"
INDEX_HTML = "index.html"


def reports_dir(home: Path) -> Path:
    """Where the report folders live: ``$TUWEN_HOME/analysis``."""
    return Path(home) / REPORTS_FOLDER


def report_json(folder: Path) -> Path:
    return Path(folder) / REPORT_JSON


def report_page(folder: Path) -> Path:
    return Path(folder) / INDEX_HTML


def is_report(folder: Path) -> bool:
    """A real folder (not a link) with both files: what the service lists."""
    folder = Path(folder)
    return not folder.is_symlink() and report_json(folder).is_file() and report_page(folder).is_file()
