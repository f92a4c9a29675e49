"""``tuwen corpus add NAME FILE``: a corpus file into the store, replacing that corpus whole.

The file is read and typed by ``indexer.corpus.read``; every image is checked with ingest's
guarded check (missing or unreadable ones are named with their row and keep their caption);
then the corpus's rows, fields and attributes are replaced in one transaction, so a crash
mid-way leaves the previous corpus as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from sqlalchemy import delete

from common.runtime import check_workers
from common.settings import Settings
from indexer import store
from indexer.corpus.items import Attribute, CorpusInfo, check_name, corpus_info
from indexer.corpus.read import KIND_FLOAT, KIND_INT, ParsedCorpus, ParsedRow, read_corpus_file
from indexer.ingest import check_paths
from indexer.vector_cache import digest_text


def add_corpus(
    *,
    settings: Settings,
    name: str,
    file: str | Path,
    images: str | Path | None = None,
    workers: int | None = None,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
) -> CorpusInfo:
    """Read ``file`` into corpus ``name``, replacing any corpus of that name whole."""
    check_name(name)
    parsed = read_corpus_file(Path(file), images_dir=Path(images) if images is not None else None)
    paths = [r.image for r in parsed.rows if r.image]
    checked = iter(
        check_paths(paths, workers=check_workers(workers), progress=progress, desc=f"check {name}")
    )
    items = []
    for position, row in enumerate(parsed.rows):
        status = next(checked) if row.image else None
        items.append((position, row, status))
        if status and status["status"] != store.STATUS_OK and echo:
            echo(f"{status['status']}: {row.item_id} ({row.image}): {status['detail']} [{row.where}]")
    settings.home_dir.mkdir(parents=True, exist_ok=True)
    engine = store.make_engine(settings.store_url)
    try:
        with store.transaction(engine) as session:
            _replace(session, name, parsed, items)
    finally:
        engine.dispose()
    info = corpus_info(settings=settings, name=name)
    if echo:
        for warning in parsed.warnings:
            echo(f"warning: {warning}")
        echo(f"encoding of {parsed.path}: {parsed.encoding}")
        echo(_summary(info))
    return info


def _replace(
    session: store.Session, name: str, parsed: ParsedCorpus, items: list[tuple[int, ParsedRow, dict | None]]
) -> None:
    for model in (store.CorpusAttributeRecord, store.CorpusItemRecord, store.CorpusFieldRecord):
        session.execute(delete(model).where(model.corpus == name))
    session.execute(delete(store.CorpusRecord).where(store.CorpusRecord.name == name))
    session.add(
        store.CorpusRecord(
            name=name,
            source=str(parsed.path),
            format=parsed.format,
            rows=len(parsed.rows),
            time_kind=parsed.time_kind,
            added_at=datetime.now().replace(microsecond=0),
        )
    )
    store.insert_rows(
        session,
        store.CorpusFieldRecord,
        [
            {"corpus": name, "field": f, "position": i, "kind": k}
            for i, (f, k) in enumerate(parsed.fields.items())
        ],
    )
    store.insert_rows(session, store.CorpusItemRecord, [_item_row(name, *item) for item in items])
    store.insert_rows(
        session,
        store.CorpusAttributeRecord,
        [
            {"corpus": name, "field": f, "position": position, **_typed_value(value, parsed.fields[f])}
            for position, row, _ in items
            for f, value in row.attributes.items()
            if value is not None
        ],
    )


def _item_row(name: str, position: int, row: ParsedRow, status: dict | None) -> dict:
    return {
        "corpus": name,
        "position": position,
        "item_id": row.item_id,
        "source": row.where,
        "caption": row.caption,
        "image_path": row.image,
        "image_status": status["status"] if status else None,
        "image_detail": status["detail"] if status else "",
        "time_at": row.time if isinstance(row.time, datetime) else None,
        "time_int": row.time if isinstance(row.time, int) else None,
        "image_sha256": status.get("sha256") if status else None,
        "caption_sha256": digest_text(row.caption) if row.caption else None,
    }


def _typed_value(value: Attribute, kind: str) -> dict:
    column = {KIND_INT: "int_value", KIND_FLOAT: "float_value"}.get(kind, "str_value")
    return {"int_value": None, "float_value": None, "str_value": None, column: value}


def _summary(info: CorpusInfo) -> str:
    fields = ", ".join(f"{f} ({k})" for f, k in info.fields.items()) or "none"
    return (
        f"corpus {info.name}: {info.rows} rows, {info.images_ok}/{info.images} images readable, "
        f"{info.captions} captions, time: {info.time_kind or 'none'}, attributes: {fields}"
    )
