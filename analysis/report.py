"""One writer for every study's output folder: ``report.json``, tables (CSV + Markdown), figures
(PNG) and an ``index.html`` that shows them offline, in that order, with their captions.

The folder's layout (where reports live, the two file names) is ``common.reports``'s, which the
service reads too. matplotlib is imported where a figure is drawn: ``analysis.cli`` imports this module
for ``markdown_table``, and ``tuwen --help`` should not load matplotlib.
"""

from __future__ import annotations

import csv
import html
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from common.files import write_atomic
from common.reports import report_json, report_page

NO_CJK_FONT = (
    "No CJK font is installed: Chinese text in the figures shows as boxes (install fonts-wqy-zenhei)."
)
# Fonts that draw Chinese, first found wins (Debian: fonts-wqy-zenhei, fonts-noto-cjk).
CJK_FONTS = ["WenQuanYi Zen Hei", "Noto Sans CJK SC", "Noto Sans CJK JP", "Source Han Sans SC", "SimHei"]
CJK_FONT_FILES = ("wqy", "notosanscjk", "sourcehansans", "simhei")


def use_cjk_font() -> bool:
    """Let matplotlib draw Chinese captions and keywords where a CJK font is installed (False: none is)."""
    import matplotlib  # heavy: on use only (see the module docstring)
    from matplotlib import font_manager

    matplotlib.use("Agg")
    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)  # "weight normal … using 500"
    installed = {f.name for f in font_manager.fontManager.ttflist}
    found = [name for name in CJK_FONTS if name in installed]
    if not found:  # installed after matplotlib cached its font list: add the files themselves
        for path in font_manager.findSystemFonts():
            if any(key in Path(path).name.lower() for key in CJK_FONT_FILES):
                font_manager.fontManager.addfont(path)
        installed = {f.name for f in font_manager.fontManager.ttflist}
        found = [name for name in CJK_FONTS if name in installed]
    matplotlib.rcParams["font.sans-serif"] = found + list(matplotlib.rcParams["font.sans-serif"])
    matplotlib.rcParams["font.family"] = "sans-serif"
    matplotlib.rcParams["axes.unicode_minus"] = False
    return bool(found)


@dataclass
class _Part:
    kind: str  # "figure" | "table" | "note"
    title: str
    caption: str = ""
    files: list[str] = field(default_factory=list)
    html: str = ""


class Report:
    """Collects a study's parts in the order a reader should see them, then writes the folder."""

    def __init__(self, out: str | Path, *, kind: str, title: str):
        self.out = Path(out).expanduser()
        self.out.mkdir(parents=True, exist_ok=True)
        self.kind, self.title = kind, title
        self.parts: list[_Part] = []

    def note(self, title: str, text: str) -> None:
        self.parts.append(_Part("note", title, html=f"<p>{html.escape(text)}</p>"))

    def figure(self, name: str, fig, *, title: str, caption: str = "") -> Path:
        """Save a matplotlib figure as ``<name>.png`` and close it."""
        import matplotlib.pyplot as plt  # heavy: on use only (see the module docstring)

        path = self.out / f"{name}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        img = f'<img src="{html.escape(path.name)}" alt="{html.escape(title)}">'
        self.parts.append(_Part("figure", title, caption, [path.name], img))
        return path

    def table(self, name: str, rows: list[dict], *, title: str, caption: str = "") -> tuple[Path, Path]:
        """Write ``<name>.csv`` and ``<name>.md`` (columns in the first row's order)."""
        columns = list(rows[0]) if rows else []
        csv_path, md_path = self.out / f"{name}.csv", self.out / f"{name}.md"
        with open(csv_path, "w", encoding="utf-8", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        md_path.write_text(markdown_table(rows), encoding="utf-8")
        self.parts.append(_Part("table", title, caption, [csv_path.name, md_path.name], html_table(rows)))
        return csv_path, md_path

    def finish(self, data: dict) -> Path:
        """Write ``report.json`` (``data`` plus what the folder holds) and ``index.html``."""
        payload = {
            "kind": self.kind,
            "title": self.title,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **data,
            "parts": [
                {"kind": p.kind, "title": p.title, "caption": p.caption, "files": p.files} for p in self.parts
            ],
        }
        path = report_json(self.out)
        text = json.dumps(payload, ensure_ascii=False, indent=1, default=_jsonable)
        write_atomic(path, text)  # the service lists a folder by these two files
        write_atomic(report_page(self.out), self._html())
        return path

    def _html(self) -> str:
        sections = []
        for part in self.parts:
            caption = f"<p class=caption>{html.escape(part.caption)}</p>" if part.caption else ""
            links = " ".join(f'<a href="{html.escape(f)}">{html.escape(f)}</a>' for f in part.files)
            sections.append(
                f"<section><h2>{html.escape(part.title)}</h2>{caption}{part.html}"
                + (f"<p class=files>{links}</p>" if part.kind == "table" else "")
                + "</section>"
            )
        return _PAGE.format(title=html.escape(self.title), body="\n".join(sections))


def markdown_table(rows: list[dict]) -> str:
    if not rows:
        return ""
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def html_table(rows: list[dict]) -> str:
    if not rows:
        return "<p>(empty)</p>"
    columns = list(rows[0])
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(row.get(c, '')))}</td>" for c in columns) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _jsonable(value):
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


_PAGE = """<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font-family: "PingFang SC", "Noto Sans CJK SC", "WenQuanYi Zen Hei", sans-serif; margin: 2rem auto;
  max-width: 1100px; padding: 0 1rem; color: #222; }}
h1 {{ font-size: 1.6rem; }} h2 {{ font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }}
img {{ max-width: 100%; }} .caption {{ color: #555; }} .files a {{ margin-right: 1em; font-size: .9em; }}
table {{ border-collapse: collapse; font-size: .9em; }}
td, th {{ border: 1px solid #ccc; padding: .25em .6em; }}
th {{ background: #f4f4f4; }}
</style></head>
<body><h1>{title}</h1>
{body}
</body></html>
"""
