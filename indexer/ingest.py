"""``tuwen ingest``: the released 附件 folders into the store, every image file checked.

Missing or unreadable images are named (id and path) and counted, never fatal. Everything is
written in one transaction, each collection replaced whole: a rerun duplicates nothing and a
crash leaves the previous store as it was.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from common.errors import TuwenError
from common.runtime import check_workers
from common.settings import Settings
from indexer import store
from indexer.csv_io import CsvTable, read_csv
from models.imageio import ImageDecodeError, open_image

log = logging.getLogger(__name__)
CHECK_SIZE = (64, 64)  # JPEG draft scale: enough to prove the file decodes, far cheaper


@dataclass
class Problem:
    source: str  # "file:line" or the collection
    image_id: str
    path: str
    status: str
    detail: str

    def __str__(self) -> str:
        return f"{self.status}: {self.image_id} ({self.path}): {self.detail} [{self.source}]"


@dataclass
class IngestReport:
    counts: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    mislabelled: int = 0
    encodings: dict[str, str] = field(default_factory=dict)

    def summary_lines(self) -> list[str]:
        lines = [f"{name}: {n}" for name, n in self.counts.items()]
        lines += [f"encoding of {f}: {e}" for f, e in self.encodings.items()]
        if self.mislabelled:
            lines.append(
                f"{self.mislabelled} image(s) are not what their extension says (read by content, fine)"
            )
        missing = sum(p.status == store.STATUS_MISSING for p in self.problems)
        unreadable = sum(p.status == store.STATUS_UNREADABLE for p in self.problems)
        lines.append(f"missing images: {missing}, unreadable images: {unreadable}")
        return lines


def check_image(path: str) -> dict:
    """Status, real format and size of one image file (runs in worker processes)."""
    out = {"status": store.STATUS_OK, "detail": "", "format": None, "width": None, "height": None}
    out["sha256"] = None
    if not os.path.isfile(path):
        return {**out, "status": store.STATUS_MISSING, "detail": "file not found"}
    try:
        data = Path(path).read_bytes()  # read once: checked, measured and digested (issue 19)
        out["sha256"] = hashlib.sha256(data).hexdigest()
        # the guarded decoder first: it refuses bombs before Pillow opens them and says what is wrong
        open_image(data, draft_size=CHECK_SIZE)
        with Image.open(io.BytesIO(data)) as img:
            out.update(format=img.format, width=img.width, height=img.height)
    except (ImageDecodeError, OSError, ValueError, SyntaxError) as exc:
        return {**out, "status": store.STATUS_UNREADABLE, "detail": str(exc) or type(exc).__name__}
    return out


def check_paths(paths: list[str], *, workers: int, progress: bool, desc: str) -> list[dict]:
    """``check_image`` of each path, in order; in worker processes when there are enough to pay off."""
    if workers > 1 and len(paths) > 64:
        with ProcessPoolExecutor(workers) as pool:
            checked = pool.map(check_image, paths, chunksize=64)
            return list(tqdm(checked, total=len(paths), desc=desc, disable=not progress))
    return [check_image(p) for p in tqdm(paths, desc=desc, disable=not progress)]


def _safe_path(folder: Path, image_id: str) -> Path | None:
    """``folder/image_id`` if the id is a plain file name (a CSV can't point outside the folder)."""
    if not image_id or image_id in {".", ".."} or "/" in image_id or "\\" in image_id or "\x00" in image_id:
        return None
    return folder / image_id


def _check_images(
    ids_and_sources: list[tuple[str, str]],
    folder: Path,
    collection: str,
    report: IngestReport,
    workers: int,
    progress: bool,
) -> list[dict]:
    paths = [_safe_path(folder, image_id) for image_id, _ in ids_and_sources]
    checkable = [str(p) for p in paths if p is not None]
    results = check_paths(checkable, workers=workers, progress=progress, desc=f"check {collection}")
    results_iter = iter(results)
    rows = []
    for position, ((image_id, source), path) in enumerate(zip(ids_and_sources, paths, strict=True)):
        if path is None:
            checked = {
                "status": store.STATUS_UNREADABLE,
                "format": None,
                "width": None,
                "height": None,
                "sha256": None,
                "detail": "image id is not a plain file name",
            }
        else:
            checked = next(results_iter)
        path_str = str(path) if path is not None else ""
        if checked["status"] != store.STATUS_OK:
            report.problems.append(
                Problem(source, image_id, path_str or image_id, checked["status"], checked["detail"])
            )
        elif checked["format"] and _extension_format(image_id) not in {None, checked["format"]}:
            report.mislabelled += 1
            checked["detail"] = f"{checked['format']} named {Path(image_id).suffix}"
        rows.append({"image_id": image_id, "position": position, "path": path_str, **checked})
    return rows


def _extension_format(name: str) -> str | None:
    return {
        ".jpg": "JPEG",
        ".jpeg": "JPEG",
        ".png": "PNG",
        ".gif": "GIF",
        ".bmp": "BMP",
        ".webp": "WEBP",
    }.get(Path(name).suffix.lower())


def _unique(table: CsvTable, column: str, report: IngestReport) -> list[tuple[str, dict, str]]:
    """(id, row, "file:line") in file order; empty and repeated ids are reported and skipped."""
    seen: dict[str, int] = {}
    out = []
    for line, row in table.rows:
        value = (row.get(column) or "").strip()
        where = f"{table.path}:{line}"
        if not value:
            report.warnings.append(f"{where}: empty {column}, row skipped")
            continue
        if value in seen:
            report.warnings.append(f"{where}: {column} {value} repeats line {seen[value]}, row skipped")
            continue
        seen[value] = line
        out.append((value, row, where))
    return out


def _image_list(csv_path: Path, folder: Path, report: IngestReport) -> list[tuple[str, str]]:
    """Image ids from ``csv_path`` (column image_id), or the folder's files when it is absent."""
    if csv_path.is_file():
        table = read_csv(csv_path, required=["image_id"])
        report.encodings[str(csv_path)] = table.encoding
        return [(i, where) for i, _, where in _unique(table, "image_id", report)]
    report.warnings.append(f"{csv_path} not found: using every file in {folder} (sorted by name)")
    return [(p.name, str(folder)) for p in sorted(folder.iterdir()) if p.is_file()]


def _text_rows(table: CsvTable, report: IngestReport) -> list[dict]:
    rows = []
    for position, (text_id, row, where) in enumerate(_unique(table, "text_id", report)):
        caption = (row.get("caption") or "").strip()
        if not caption:
            report.warnings.append(f"{where}: empty caption for {text_id}")
        rows.append({"text_id": text_id, "position": position, "caption": caption})
    return rows


Write = Callable[[store.Session], None]
# (folder, text CSV, its collection and label, image CSV, its collection and label) of 附件2 and 附件3
_QUERY_PARTS = (
    ("附件2", "word_test.csv", store.TEXT_QUERIES, "text queries",
     "image_data.csv", store.IMAGE_CANDIDATES, "candidate images"),
    ("附件3", "word_data.csv", store.TEXT_CANDIDATES, "candidate texts",
     "image_test.csv", store.IMAGE_QUERIES, "image queries"),
)  # fmt: skip


def ingest(
    *,
    root: str | Path,
    settings: Settings,
    workers: int | None = None,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
) -> IngestReport:
    """Read 附件1/2/3 under ``root`` (any may be absent) into the store at ``settings.store_url``.

    Every file is read and every image checked first; then all collections are replaced in one
    transaction, so a failure or a kill mid-way leaves the store as it was.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise TuwenError(f"{root}: not a folder (expected the folder holding 附件1/ 附件2/ 附件3/)")
    parts = {name: root / name for name in ("附件1", "附件2", "附件3") if (root / name).is_dir()}
    if not parts:
        raise TuwenError(f"{root}: none of 附件1/ 附件2/ 附件3/ is there")
    workers = check_workers(workers)
    report = IngestReport()
    writes: list[Write] = []
    if "附件1" in parts:
        writes.append(_read_training(parts["附件1"], report, workers=workers, progress=progress))
    for part, *names in _QUERY_PARTS:
        if part in parts:
            writes.append(
                _read_query_part(part, parts[part], names, report, workers=workers, progress=progress)
            )
    settings.home_dir.mkdir(parents=True, exist_ok=True)
    with store.open_store(settings.store_url) as session:
        for write in writes:
            write(session)
    for absent in sorted({"附件1", "附件2", "附件3"} - set(parts)):
        report.warnings.append(f"{root / absent} not found: its data in the store is unchanged")
    if echo:
        _echo_report(report, echo)
    return report


def _read_training(folder: Path, report: IngestReport, *, workers: int, progress: bool) -> Write:
    """附件1: pairs by the CSV's image_id (never by directory order) and each image checked once."""
    table = read_csv(folder / "ImageWordData.csv", required=["image_id", "caption"])
    report.encodings[str(table.path)] = table.encoding
    pairs, first_seen = [], {}
    for line, row in table.rows:
        image_id = (row.get("image_id") or "").strip()
        caption = (row.get("caption") or "").strip()
        if not image_id or not caption:
            report.warnings.append(f"{table.path}:{line}: empty image_id or caption, row skipped")
            continue
        pairs.append({"position": line, "image_id": image_id, "caption": caption})
        first_seen.setdefault(image_id, f"{table.path}:{line}")
    images = _check_images(
        list(first_seen.items()), folder / "ImageData", store.TRAIN_IMAGES, report, workers, progress
    )
    report.counts["training pairs"] = len(pairs)
    report.counts["training images"] = len(images)

    def write(session: store.Session) -> None:
        store.replace_pairs(session, rows=pairs)
        store.replace_images(session, collection=store.TRAIN_IMAGES, rows=images)

    return write


def _read_query_part(
    part: str, folder: Path, names: list[str], report: IngestReport, *, workers: int, progress: bool
) -> Write:
    """附件2 or 附件3: one text table and one image list, each into its collection."""
    text_csv, text_collection, text_label, image_csv, image_collection, image_label = names
    table = read_csv(folder / text_csv, required=["text_id", "caption"])
    report.encodings[str(table.path)] = table.encoding
    texts = _text_rows(table, report)
    image_ids = _image_list(folder / image_csv, folder / "ImageData", report)
    images = _check_images(image_ids, folder / "ImageData", image_collection, report, workers, progress)
    report.counts[f"{text_label} ({part})"] = len(texts)
    report.counts[f"{image_label} ({part})"] = len(images)

    def write(session: store.Session) -> None:
        store.replace_texts(session, collection=text_collection, rows=texts)
        store.replace_images(session, collection=image_collection, rows=images)

    return write


def _echo_report(report: IngestReport, echo: Callable[[str], None]) -> None:
    for problem in report.problems:
        echo(str(problem))
    for warning in report.warnings:
        echo(f"warning: {warning}")
    for line in report.summary_lines():
        echo(line)
