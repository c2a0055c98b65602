"""The metrics log (JSON lines) and its plot (PNG via matplotlib's Agg backend).

One JSON object per line. Epoch records have `"kind": "epoch"` and the keys `step`, `epoch`,
`lr`, `loss` (mean training loss over the epoch), `train_acc`, `test_loss`, `test_acc` (null
without a test set), `grad_norm` (mean pre-clipping global norm over the epoch) and `time`
(seconds of training so far). Step records (every N steps when asked) have `"kind": "step"`
and `step`, `epoch`, `lr`, `loss`, `grad_norm`, `time`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tdsl.train.checkpoint import write_file_atomic


class MetricsLog:
    """Appends records to a JSONL file, flushing each line so a crash loses at most one."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def truncate_after(self, step: int) -> None:
        """Drop records past `step` (a resumed run re-logs them), atomically."""
        kept = [r for r in self.read() if r.get("step", 0) <= step]
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept)
        write_file_atomic(self.path, text.encode("utf-8"))


def plot_metrics(records: list[dict[str, Any]], path: str | Path) -> None:
    """Loss and accuracy per epoch, side by side, written atomically as a PNG."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    epochs = [r for r in records if r.get("kind") == "epoch"]
    x = [r["epoch"] for r in epochs]
    fig = Figure(figsize=(9, 3.5), dpi=100)
    ax_loss, ax_acc = fig.subplots(1, 2)
    ax_loss.plot(x, [r["loss"] for r in epochs], marker="o", label="train")
    if any(r.get("test_loss") is not None for r in epochs):
        ax_loss.plot(x, [r.get("test_loss") for r in epochs], marker="o", label="test")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.plot(x, [r["train_acc"] for r in epochs], marker="o", label="train")
    if any(r.get("test_acc") is not None for r in epochs):
        ax_acc.plot(x, [r.get("test_acc") for r in epochs], marker="o", label="test")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(0, 1))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    write_file_atomic(Path(path), buf.getvalue())
