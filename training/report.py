"""The run's metrics log (``metrics.jsonl``) and its curves (``curves.png``)."""

from __future__ import annotations

import json
from pathlib import Path


class MetricsLog:
    """One JSON object per line: ``{"kind": "train"|"val", "step", "epoch", ...}``."""

    def __init__(self, path: Path, *, keep_until_step: int | None = None):
        self.path = path
        if keep_until_step is None:
            path.write_text("", encoding="utf-8")
        else:  # resuming: drop what the interrupted run logged after its checkpoint
            kept = [r for r in self.read() if r.get("step", 0) <= keep_until_step]
            path.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")

    def read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        return [
            json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()
        ]

    def write(self, record: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")


def plot_curves(records: list[dict], out: Path) -> Path | None:
    """Training loss and validation R@5 in both directions against the step."""
    # imported here: matplotlib (~1 s) draws the curves and nothing else; the Agg backend must be
    # chosen before pyplot is imported, and importing this module must not choose it for others
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in records if r["kind"] == "train"]
    val = [r for r in records if r["kind"] == "val"]
    if not train and not val:
        return None
    fig, (ax_loss, ax_r5) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], lw=1)
    ax_loss.set(xlabel="step", ylabel="training loss", title="loss")
    for direction, label in (("t2i", "text→image"), ("i2t", "image→text")):
        ax_r5.plot([r["step"] for r in val], [r[direction]["r5"] for r in val], marker="o", label=label)
    ax_r5.set(xlabel="step", ylabel="R@5 (%)", title="validation R@5", ylim=(0, 100))
    ax_r5.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
