"""Changing a corpus item by item: put (add or replace) and delete, each appended to the change log.

Every function here works inside the caller's store transaction, so an item row, its attributes
and its ``corpus_changes`` row (and, for the API, its ``vectors`` row) are written together or not
at all. The log's ``seq`` only grows; a server follows it by reading the rows after the last it
applied, and a generation records the last ``seq`` it folded in (``last_seq``).

An item is *changed* when what it is differs: caption, image path, its bytes' digest or status,
time or an attribute value (not the file line it came from); an unchanged put writes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import delete, func, select, text

from common.errors import TuwenError
from indexer import store
from indexer.corpus.items import Attribute
from indexer.corpus.read import KIND_FLOAT, KIND_INT, KIND_STR, TIME_DATETIME, TIME_INT

PUT, DELETE = "put", "delete"
_CHUNK = 500


@dataclass(frozen=True)
class ItemData:
    """One item as it is stored: what a corpus file's row or an API put becomes."""

    item_id: str
    source: str  # "file:line", "file: item N" or "api"
    caption: str | None
    image_path: str | None
    image_status: str | None  # store.STATUS_*; None when the item has no image
    time: datetime | int | None = None
    attributes: dict[str, Attribute] = field(default_factory=dict)
    image_sha256: str | None = None
    caption_sha256: str | None = None
    image_detail: str = ""
    mask_path: str | None = None  # the mask modality (0004): absolute path, its digest, its area share
    mask_sha256: str | None = None
    mask_area: float | None = None  # None: no mask, or it did not decode

    def content(self, kinds: dict[str, str]) -> tuple:
        """What tells a change: everything but the source."""
        values = {f: typed(v, kinds[f]) for f, v in self.attributes.items() if v is not None}
        mask = (self.mask_path, self.mask_sha256)
        return (self.caption, self.image_path, self.image_status, self.image_sha256, self.time, values, mask)

    def row(self, corpus: str, position: int) -> dict:
        return {
            "corpus": corpus,
            "position": position,
            "item_id": self.item_id,
            "source": self.source,
            "caption": self.caption,
            "image_path": self.image_path,
            "image_status": self.image_status,
            "image_detail": self.image_detail,
            "time_at": self.time if isinstance(self.time, datetime) else None,
            "time_int": self.time if isinstance(self.time, int) else None,
            "image_sha256": self.image_sha256,
            "caption_sha256": self.caption_sha256,
            "mask_path": self.mask_path,
            "mask_sha256": self.mask_sha256,
            "mask_area": self.mask_area,
        }

    def data(self) -> dict:
        """The item as the change log carries it (JSON)."""
        return {
            "caption": self.caption,
            "image_path": self.image_path,
            "image_status": self.image_status,
            "image_sha256": self.image_sha256,
            "caption_sha256": self.caption_sha256,
            "time": self.time.isoformat() if isinstance(self.time, datetime) else self.time,
            "attributes": {f: v for f, v in self.attributes.items() if v is not None},
            "source": self.source,  # "api" for the API's puts: what a server's delta follows
        }


def typed(value: Attribute, kind: str) -> Attribute:
    """``value`` as a field of ``kind`` holds it (an int in a float field is a float)."""
    if value is None:
        return None
    if kind == KIND_FLOAT:
        return float(value)
    return str(value) if kind == KIND_STR else value


def value_columns(value: Attribute, kind: str) -> dict:
    column = {KIND_INT: "int_value", KIND_FLOAT: "float_value"}.get(kind, "str_value")
    return {"int_value": None, "float_value": None, "str_value": None, column: typed(value, kind)}


def stored(
    session: store.Session, name: str, kinds: dict[str, str], ids: list[str] | None = None
) -> dict[str, tuple[int, tuple]]:
    """item id -> (stored position, ``ItemData.content``) of corpus ``name``'s items (all, or ``ids``)."""
    A, I = store.CorpusAttributeRecord, store.CorpusItemRecord  # noqa: E741
    columns = (I.position, I.item_id, I.caption, I.image_path, I.image_status, I.image_sha256)
    query = select(*columns, I.time_at, I.time_int, I.mask_path, I.mask_sha256).where(I.corpus == name)
    if ids is None:
        rows = session.execute(query).all()
    else:
        chunks = [ids[start : start + _CHUNK] for start in range(0, len(ids), _CHUNK)]
        rows = [r for chunk in chunks for r in session.execute(query.where(I.item_id.in_(chunk)))]
    attributes = select(A.field, A.position, A.int_value, A.float_value, A.str_value).where(A.corpus == name)
    if ids is not None and len(rows) <= _CHUNK:  # a few items (an API put): their attributes alone
        attributes = attributes.where(A.position.in_([r[0] for r in rows]))
    values: dict[int, dict[str, Attribute]] = {}
    for f, position, i, x, s in session.execute(attributes):
        values.setdefault(position, {})[f] = i if i is not None else x if x is not None else s
    out = {}
    for position, item_id, caption, path, status, digest, at, number, mask_path, mask_sha256 in rows:
        time = at if at is not None else number
        attributes = {f: typed(v, kinds.get(f, KIND_STR)) for f, v in values.get(position, {}).items()}
        mask = (mask_path, mask_sha256)
        out[item_id] = (position, (caption, path, status, digest, time, attributes, mask))
    return out


def field_kinds(session: store.Session, name: str) -> dict[str, str]:
    F = store.CorpusFieldRecord
    rows = session.execute(select(F.field, F.kind).where(F.corpus == name).order_by(F.position))
    return dict(rows.all())


def merge_fields(
    session: store.Session, name: str, incoming: dict[str, str], *, where: str, text_numbers: bool
) -> dict[str, str]:
    """The corpus's field kinds with ``incoming``'s new fields added; a kind that does not fit is refused.

    An int fits a float field; with ``text_numbers`` (a CSV, whose numbers are text as written) a
    number fits a text field too. Anything else names the field, both kinds and ``where``.
    """
    kinds = field_kinds(session, name)
    check_fields(name, kinds, incoming, where=where, text_numbers=text_numbers)
    new = [f for f in incoming if f not in kinds]
    store.insert_rows(
        session,
        store.CorpusFieldRecord,
        [
            {"corpus": name, "field": f, "position": len(kinds) + i, "kind": incoming[f]}
            for i, f in enumerate(new)
        ],
    )
    return {**kinds, **{f: incoming[f] for f in new}}


def check_fields(
    name: str, kinds: dict[str, str], incoming: dict[str, str], *, where: str, text_numbers: bool
) -> None:
    """Refuse an incoming field whose kind does not fit the corpus's (see ``merge_fields``)."""
    for f, kind in incoming.items():
        have = kinds.get(f)
        if have is None or have == kind or (have, kind) == (KIND_FLOAT, KIND_INT):
            continue
        if have == KIND_STR and text_numbers:
            continue
        raise TuwenError(
            f"{where}: field {f!r} is {_KIND_WORDS[kind]} here, but corpus {name} holds "
            f"{_KIND_WORDS[have]} in it (its fields: {', '.join(f'{k}:{v}' for k, v in kinds.items())})"
        )


_KIND_WORDS = {KIND_INT: "an integer", KIND_FLOAT: "a number", KIND_STR: "text"}
_TIME_WORDS = {TIME_INT: "an integer", TIME_DATETIME: "a date/datetime"}


def merge_time_kind(record: store.CorpusRecord, time_kind: str | None, *, where: str) -> None:
    check_time_kind(record.name, record.time_kind, time_kind, where=where)
    record.time_kind = record.time_kind or time_kind


def check_time_kind(name: str, have: str | None, time_kind: str | None, *, where: str) -> None:
    if time_kind is None or have in (None, time_kind):
        return
    raise TuwenError(
        f"{where}: time is {_TIME_WORDS[time_kind]}, but corpus {name} holds "
        f"{_TIME_WORDS[have]} times: one kind of time per corpus"
    )


def put_items(
    session: store.Session, name: str, items: list[ItemData], kinds: dict[str, str]
) -> tuple[list[str], list[str]]:
    """Add new ids (after the last row) and replace changed ones (in place); (new ids, changed ids)."""
    known = stored(session, name, kinds, [i.item_id for i in items])
    I = store.CorpusItemRecord  # noqa: E741
    last = session.scalar(select(func.max(I.position)).where(I.corpus == name))
    next_position = (-1 if last is None else last) + 1
    rows, replaced, new, changed = [], [], [], []
    for item in items:
        old = known.get(item.item_id)
        if old is not None and old[1] == item.content(kinds):
            continue
        if old is None:
            position, next_position = next_position, next_position + 1
            new.append(item)
        else:
            position = old[0]
            replaced.append(position)
            changed.append(item)
        rows.append((position, item))
    _delete_positions(session, name, replaced)
    store.insert_rows(session, store.CorpusItemRecord, [item.row(name, p) for p, item in rows])
    store.insert_rows(
        session,
        store.CorpusAttributeRecord,
        [
            {"corpus": name, "field": f, "position": p, **value_columns(v, kinds[f])}
            for p, item in rows
            for f, v in item.attributes.items()
            if v is not None
        ],
    )
    log_changes(session, name, [(item.item_id, PUT, item.data()) for _, item in rows])  # in the order given
    _count_rows(session, name)
    return [i.item_id for i in new], [i.item_id for i in changed]


def delete_items(
    session: store.Session, name: str, ids: Iterable[str], *, source: str | None = None
) -> tuple[list[str], list[str]]:
    """Remove the items with these ids; (removed ids, unknown ids), each in the order given."""
    wanted = list(dict.fromkeys(ids))
    I = store.CorpusItemRecord  # noqa: E741
    positions: dict[str, int] = {}
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start : start + _CHUNK]
        found = session.execute(select(I.item_id, I.position).where(I.corpus == name, I.item_id.in_(chunk)))
        positions.update(found.all())
    removed = [i for i in wanted if i in positions]
    _delete_positions(session, name, [positions[i] for i in removed])
    log_changes(session, name, [(i, DELETE, {"source": source} if source else None) for i in removed])
    _count_rows(session, name)
    return removed, [i for i in wanted if i not in positions]


def _delete_positions(session: store.Session, name: str, positions: list[int]) -> None:
    for model in (store.CorpusAttributeRecord, store.CorpusItemRecord):
        for start in range(0, len(positions), _CHUNK):
            chunk = positions[start : start + _CHUNK]
            session.execute(delete(model).where(model.corpus == name, model.position.in_(chunk)))


def _count_rows(session: store.Session, name: str) -> None:
    record = session.get(store.CorpusRecord, name)
    if record is not None:
        record.added_at = datetime.now()  # changed: what tells a server's catalog to look again
        I = store.CorpusItemRecord  # noqa: E741
        record.rows = session.scalar(select(func.count()).select_from(I).where(I.corpus == name)) or 0


def log_changes(session: store.Session, name: str, changes: list[tuple[str, str, dict | None]]) -> None:
    """Append (item id, put | delete, the put item's data) to the change log, in this transaction.

    On PostgreSQL the appenders take one transaction lock first, so ``seq`` order is commit order and
    a follower reading "after the last seq I applied" never skips a change that commits late
    (SQLite serialises writers anyway).
    """
    if not changes:
        return
    lock_changes(session)
    now = datetime.now()
    store.insert_rows(
        session,
        store.CorpusChangeRecord,
        [
            {
                "corpus": name,
                "item_id": item_id,
                "op": op,
                "at": now,
                "data": None if data is None else json.dumps(data, ensure_ascii=False),
            }
            for item_id, op, data in changes
        ],
    )


def lock_changes(session: store.Session) -> None:
    """Serialise the writers of corpora until this transaction ends (PostgreSQL: an advisory lock;
    SQLite serialises writers itself). Taken first by a write that reads before it writes, so two
    puts of one id never both find it absent; taken again by ``log_changes`` (re-entrant)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(hashtext('tuwen-corpus-changes'))"))


def last_seq(session: store.Session, name: str) -> int:
    """The last change of corpus ``name`` (0 when none): what a generation encoded now folds in."""
    C = store.CorpusChangeRecord
    return session.scalar(select(func.max(C.seq)).where(C.corpus == name)) or 0


API = "api"  # the source of an item put or deleted through the API


def foreign_changes_after(session: store.Session, name: str, seq: int) -> int:
    """Changes of corpus ``name`` after ``seq`` that did not come through the API (``corpus add``,
    ``corpus remove``): a server's delta does not follow them, so they wait for ``corpus encode``."""
    C = store.CorpusChangeRecord
    api = C.data.like('%"source": "api"%')
    query = select(func.count()).select_from(C).where(C.corpus == name, C.seq > seq, ~api | C.data.is_(None))
    return session.scalar(query) or 0


def changes_after(session: store.Session, seq: int, *, limit: int = 1000) -> list[store.CorpusChangeRecord]:
    """The log's rows after ``seq`` (every corpus), oldest first: what a following server applies."""
    C = store.CorpusChangeRecord
    return list(session.scalars(select(C).where(C.seq > seq).order_by(C.seq).limit(limit)))
