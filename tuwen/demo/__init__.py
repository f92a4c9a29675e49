"""The demo: ``tuwen demo`` (``run_demo``) and the synthetic data it runs on.

- ``corpus``: the competition-layout corpus (附件1/2/3, ground truth), ``tuwen demo-data``;
- ``posts``: social posts for ``tuwen corpus add`` and the clusters / alignment studies;
- ``series``: the trend and fusion corpora of the supervised studies;
- ``training``: ``tiny`` trained from scratch with settings tuned on the demo corpus;
- ``run``: every stage in order (``run_demo``), then the search page.
"""

from __future__ import annotations

from typing import Any

_RUN = ("run_demo", "held_out_recall", "analysis_demo", "supervised_demo")


def __getattr__(name: str) -> Any:
    # ``from tuwen.demo import run_demo`` works as it did when this was one module, but lazily:
    # the generators (imported by the tests, the benches, ``tuwen demo-data``) need none of the
    # training, analysis and service code that ``run`` imports.
    if name in _RUN:
        from tuwen.demo import run

        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_RUN)
