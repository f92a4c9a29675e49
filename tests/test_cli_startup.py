"""Every ``tuwen`` command builds the whole parser first, so building it must not pull in the
heavy stages (torch, OpenVINO, Ray, the studies, the demo): ``tuwen --help`` took 7.6 s when it did,
1.5 s since. Checked in a fresh interpreter, where nothing is imported yet."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# FAISS is not among them: the corpus reader that ``analyze`` parses for reaches it, and it loads in
# a tenth of a second.
HEAVY = ("torch", "openvino", "ray", "cn_clip", "sklearn", "matplotlib", "umap", "tuwen.demo.run")

PROBE = """
import json, sys
from tuwen.cli import build_parser
parser = build_parser()
commands = sorted(parser._subparsers._group_actions[0].choices)
print(json.dumps({"commands": commands, "loaded": [m for m in %r if m in sys.modules]}))
"""


def test_building_the_parser_imports_no_stage():
    done = subprocess.run(
        [sys.executable, "-c", PROBE % (HEAVY,)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["loaded"] == [], found["loaded"]
    expected = {"ingest", "index", "export", "export-model", "db", "corpus", "train", "eval", "serve"}
    assert expected | {"analyze", "demo", "demo-data"} <= set(found["commands"]), found["commands"]
