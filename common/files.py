"""Writing a file atomically: the one way every stage replaces a file that readers may open.

A reader sees the old file or the new one, never a half-written one, and a file that was
reported written survives a crash (``kill -9`` or power loss): the temporary file is written
beside the target (same filesystem, so the rename is atomic), flushed and fsynced, renamed over
the target, and the folder is fsynced so that the rename itself is durable.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
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
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
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
