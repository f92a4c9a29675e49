"""``tuwen export``: write result1.csv / result2.csv of the live index, each validated before it is
renamed into place (the rules themselves live in ``indexer.results``)."""

from __future__ import annotations

from pathlib import Path

from common.errors import TuwenError
from common.files import atomic_path
from common.settings import Settings
from indexer.index_files import LoadedIndex, load_current
from indexer.results import TASKS, TOP_K, Task, csv_chunks, has_task, validate_result


def write_result(loaded: LoadedIndex, task: Task, out_dir: Path) -> Path:
    """Write and validate one result file, then rename it into place (a failed check leaves the old one)."""
    target = Path(out_dir) / task.filename
    with atomic_path(target) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            for chunk in csv_chunks(loaded, task):
                fh.write(chunk)
        validate_result(
            tmp,
            task=task,
            query_ids=loaded.sets[task.queries].ids,
            candidate_ids=loaded.sets[task.candidates].ids,
        )
    return target


def export_results(*, settings: Settings, out: str | Path, echo=None) -> list[Path]:
    """Write every result file the live index has data for into ``out``."""
    loaded = load_current(settings.index_dir)
    written = []
    for task in TASKS.values():
        if not has_task(loaded, task):
            if echo:
                echo(f"skipped {task.filename}: no {task.queries} / {task.candidates} indexed")
            continue
        path = write_result(loaded, task, Path(out))
        written.append(path)
        if echo:
            echo(f"wrote {path} ({len(loaded.sets[task.queries].ids)} queries x {TOP_K})")
    if not written:
        raise TuwenError("nothing to export: the index holds neither task's queries")
    return written
