"""The one way commands talk to a person: progress lines on stderr, results on stdout."""

from __future__ import annotations

import sys


def say(line: str) -> None:
    """A progress line on stderr, flushed at once so it interleaves with tqdm bars and logs."""
    print(line, file=sys.stderr, flush=True)
