"""Writing a file atomically: the one way every stage replaces a file that readers may open.

A reader sees the old file or the new one, never a half-written one, and a file that was
reported written survives a crash (``kill -9`` or power loss): the temporary file is written
beside the target (same filesystem, so the rename is atomic), flushed and fsynced, renamed over
the target, and the folder is fsynced so that the rename itself is durable.

A folder of files (an index generation, converted towers) is published the same way:
written under a temporary name beside its final one, every file fsynced, then renamed
(``publish_folder``, or ``atomic_folder`` as a context manager).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new entry in ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a folder; the rename is still atomic
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on a clean exit it replaces ``target`` durably.

    The caller writes the temporary path by any means (``np.save``, ``faiss.write_index``,
    ``torch.save``, a CSV writer). On an exception the temporary file is removed and ``target``
    is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(target)
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


def write_atomic(target: str | Path, data: str | bytes, *, encoding: str = "utf-8") -> Path:
    """Replace ``target`` with ``data`` (text is encoded with ``encoding``) atomically and durably."""
    target = Path(target)
    payload = data.encode(encoding) if isinstance(data, str) else data
    with atomic_path(target) as tmp:
        tmp.write_bytes(payload)
    return target


def write_json_atomic(target: str | Path, obj: object, *, indent: int | None = 1) -> Path:
    """``write_atomic`` of ``obj`` as UTF-8 JSON (non-ASCII kept as is)."""
    return write_atomic(target, json.dumps(obj, ensure_ascii=False, indent=indent))


def temp_sibling(target: str | Path, *, suffix: str = "tmp") -> Path:
    """A fresh hidden name beside ``target`` (same folder, so a rename onto ``target`` is atomic)."""
    target = Path(target)
    return target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.{suffix}")


def publish_folder(
    tmp: Path, target: Path, *, replace: bool = False, keep: Callable[[Path], bool] | None = None
) -> Path:
    """Rename the finished folder ``tmp`` to ``target`` durably: its files fsynced first.

    ``keep``: a ``target`` that is already there and that ``keep`` accepts stays, and ``tmp`` is
    dropped: another process published the same content first (two servers converting one model
    into a shared cache), and its readers may be reading it now. ``replace``: any other existing
    ``target`` is removed (a stale cache rebuilt); readers of a replaced folder must tolerate its
    absence for that moment. A live pointer that switches between folders
    (``indexer.index_files``'s ``CURRENT``) needs neither.
    """
    for path in tmp.rglob("*"):
        if path.is_file():
            fsync_file(path)
    try:
        os.replace(tmp, target)  # atomic where nothing is there yet, and never over a full folder
    except OSError:
        if not target.is_dir():
            raise
        if keep is not None and keep(target):
            shutil.rmtree(tmp, ignore_errors=True)
            return target
        if not replace:
            raise
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    fsync_dir(target.parent)
    return target


@contextmanager
def atomic_folder(
    target: str | Path, *, replace: bool = True, keep: Callable[[Path], bool] | None = None
) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``target``; on a clean exit it becomes ``target``
    (``publish_folder``, with ``replace`` and ``keep``); on an exception it is removed and
    ``target`` is left as it was."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(target, suffix="tmpdir")
    tmp.mkdir()
    try:
        yield tmp
        publish_folder(tmp, target, replace=replace, keep=keep)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
