"""``tuwen corpus add NAME FILE [--upsert]`` and ``tuwen corpus remove NAME ID...``.

The file is read and typed by ``indexer.corpus.read``; every image is checked (and its bytes
digested) with ingest's guarded check (missing or unreadable ones are named with their row and
keep their caption). Then, in one transaction:

- without ``--upsert`` the corpus's rows, fields and attributes are replaced whole;
- with ``--upsert`` new ids are added after the last row, changed ones replaced in place, the
  rest kept (``indexer.corpus.changes``); a field whose kind does not fit the corpus is refused.

Either way every item that is new, changed or gone is appended to the change log in the same
transaction, so a crash mid-way leaves the previous corpus and log as they were.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path

from sqlalchemy import delete

from common.errors import TuwenError
from common.runtime import check_workers
from common.settings import Settings
from indexer import store
from indexer.corpus import changes
from indexer.corpus.changes import DELETE, PUT, ItemData
from indexer.corpus.items import CorpusInfo, check_name, corpus_info
from indexer.corpus.masks import MaskInfo, mask_info
from indexer.corpus.read import ParsedCorpus, read_corpus_file
from indexer.ingest import check_paths
from indexer.vector_cache import digest_text

Echo = Callable[[str], None]


def add_corpus(
    *,
    settings: Settings,
    name: str,
    file: str | Path,
    images: str | Path | None = None,
    workers: int | None = None,
    progress: bool = True,
    echo: Echo | None = None,
    upsert: bool = False,
) -> CorpusInfo:
    """Read ``file`` into corpus ``name``: replacing it whole, or with ``upsert`` item by item."""
    check_name(name)
    parsed = read_corpus_file(Path(file), images_dir=Path(images) if images is not None else None)
    items = _checked_items(parsed, name, workers=workers, progress=progress, echo=echo)
    settings.home_dir.mkdir(parents=True, exist_ok=True)
    with store.open_store(settings.store_url) as session:
        record = session.get(store.CorpusRecord, name)
        if upsert and record is not None:
            done = _upsert(session, record, parsed, items)
        else:
            done = _replace(session, name, parsed, items)
    info = corpus_info(settings=settings, name=name)
    if echo:
        for warning in parsed.warnings:
            echo(f"warning: {warning}")
        echo(f"encoding of {parsed.path}: {parsed.encoding}")
        echo(f"corpus {name}: " + ", ".join(f"{n} {what}" for what, n in done.items()))
        echo(_summary(info))
    return info


def remove_items(
    *, settings: Settings, name: str, ids: Iterable[str], echo: Echo | None = None
) -> tuple[list[str], list[str]]:
    """``tuwen corpus remove``: (removed ids, unknown ids); the unknown ones are named, the rest removed."""
    check_name(name)
    with store.open_store(settings.store_url) as session:
        if session.get(store.CorpusRecord, name) is None:
            raise TuwenError(f"unknown corpus {name!r} (add one with `tuwen corpus add NAME FILE`)")
        removed, unknown = changes.delete_items(session, name, ids)
    if echo:
        if unknown:
            echo(f"not in corpus {name} ({len(unknown)}): {', '.join(unknown)}")
        echo(f"corpus {name}: {len(removed)} removed")
    return removed, unknown


def _checked_items(
    parsed: ParsedCorpus, name: str, *, workers: int | None, progress: bool, echo: Echo | None
) -> list[ItemData]:
    paths = [r.image for r in parsed.rows if r.image]
    checked = iter(
        check_paths(paths, workers=check_workers(workers), progress=progress, desc=f"check {name}")
    )
    items = []
    for row in parsed.rows:
        status = next(checked) if row.image else None
        mask = mask_info(row.mask) if row.mask else MaskInfo(None, None)
        if row.mask and mask.area is None and echo:
            echo(f"mask unreadable: {row.item_id} ({row.mask}): no mask embedding [{row.where}]")
        if status and status["status"] != store.STATUS_OK and echo:
            echo(f"{status['status']}: {row.item_id} ({row.image}): {status['detail']} [{row.where}]")
        items.append(
            ItemData(
                item_id=row.item_id,
                source=row.where,
                caption=row.caption,
                image_path=row.image,
                image_status=status["status"] if status else None,
                image_detail=status["detail"] if status else "",
                time=row.time,
                attributes=row.attributes,
                image_sha256=status.get("sha256") if status else None,
                caption_sha256=digest_text(row.caption) if row.caption else None,
                mask_path=row.mask,
                mask_sha256=mask.sha256,
                mask_area=mask.area,
            )
        )
    return items


def _upsert(
    session: store.Session, record: store.CorpusRecord, parsed: ParsedCorpus, items: list[ItemData]
) -> dict[str, int]:
    where = str(parsed.path)
    kinds = changes.merge_fields(
        session, record.name, parsed.fields, where=where, text_numbers=parsed.format == "csv"
    )
    changes.merge_time_kind(record, parsed.time_kind, where=where)
    new, changed = changes.put_items(session, record.name, items, kinds)
    return {"new": len(new), "changed": len(changed), "unchanged": len(items) - len(new) - len(changed)}


def _replace(
    session: store.Session, name: str, parsed: ParsedCorpus, items: list[ItemData]
) -> dict[str, int]:
    before = changes.stored(session, name, changes.field_kinds(session, name))
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
    store.insert_rows(session, store.CorpusItemRecord, [item.row(name, p) for p, item in enumerate(items)])
    store.insert_rows(
        session,
        store.CorpusAttributeRecord,
        [
            {"corpus": name, "field": f, "position": p, **changes.value_columns(v, parsed.fields[f])}
            for p, item in enumerate(items)
            for f, v in item.attributes.items()
            if v is not None
        ],
    )
    put = [i for i in items if i.item_id not in before or before[i.item_id][1] != i.content(parsed.fields)]
    gone = sorted(set(before) - {i.item_id for i in items})
    changes.log_changes(
        session, name, [(i.item_id, PUT, i.data()) for i in put] + [(i, DELETE, None) for i in gone]
    )
    return {"new or changed": len(put), "removed": len(gone), "rows": len(items)}


def _summary(info: CorpusInfo) -> str:
    fields = ", ".join(f"{f} ({k})" for f, k in info.fields.items()) or "none"
    return (
        f"corpus {info.name}: {info.rows} rows, {info.images_ok}/{info.images} images readable, "
        f"{info.captions} captions, time: {info.time_kind or 'none'}, attributes: {fields}"
    )
