"""The one error type that means "the user's input or environment is wrong", and how a
filesystem error is told to the user."""

from __future__ import annotations

import os
from pathlib import Path


class TuwenError(Exception):
    """An error caused by the user's input or environment; its message is shown as is."""


def describe_os_error(exc: OSError) -> str:
    """One line for a filesystem error: the path and what is wrong with it.

    A link whose target is gone (a cache folder linked to an unmounted disk) makes ``mkdir``
    report "File exists" on the link itself; the line names the link and its missing target.
    """
    for name in (exc.filename, exc.filename2):
        if name is None:
            continue
        named = Path(os.fsdecode(name))
        for path in (named, *named.parents):
            if path.is_symlink() and not path.exists():
                target = os.readlink(path)
                return f"{path} is a link to {target}, which does not exist (mount it or remove the link)"
    return str(exc)
