"""A training run's folder: ``config.json`` beside its checkpoints, read and written here only."""

from __future__ import annotations

import json
from pathlib import Path

from common.errors import TuwenError
from common.files import write_json_atomic

RUN_CONFIG = "config.json"


def run_config_path(checkpoint: str | Path) -> Path:
    return Path(checkpoint).expanduser().parent / RUN_CONFIG


def read_run_config(checkpoint: str | Path) -> dict:
    """The ``config.json`` beside ``checkpoint``, or {} when there is none (not a run's checkpoint)."""
    path = run_config_path(checkpoint)
    if not (Path(checkpoint).expanduser().is_file() and path.is_file()):
        return {}
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise TuwenError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(config, dict):
        raise TuwenError(f"{path}: expected a JSON object")
    return config


def write_run_config(folder: Path, config: dict) -> Path:
    """Replace the run's ``config.json`` atomically: a reader (``tuwen eval``, the service) never
    sees half of it, and a crash leaves the previous one."""
    return write_json_atomic(Path(folder) / RUN_CONFIG, config)
