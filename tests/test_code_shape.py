"""The product's functions stay short enough to read at once.

A function over ``MAX_LINES`` lines must say why in its docstring, on a line starting with
"Long because" (the issue that set the rule: one clear house, #9). Tests and benchmarks are exempt.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("app", "analysis", "common", "indexer", "models", "training", "tuwen")
MAX_LINES = 60


def long_functions() -> list[str]:
    found = []
    for package in PRODUCT:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in ast.walk(tree):
                if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    continue
                length = node.end_lineno - node.lineno + 1
                docstring = ast.get_docstring(node) or ""
                excused = any(line.strip().startswith("Long because") for line in docstring.splitlines())
                if length > MAX_LINES and not excused:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_unexplained_long_function():
    assert long_functions() == []
