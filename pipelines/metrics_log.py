"""The metrics log of a run (``metrics.jsonl``, one row per logged step) and its loss curve."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

__all__ = ["MetricsLog", "plot_curve"]


class MetricsLog:
    """``metrics.jsonl`` (one row per logged step, written by rank 0) and its loss curve."""

    def __init__(self, output_dir: Path, main: bool) -> None:
        self.path, self.main = output_dir / "metrics.jsonl", main

    def start(self, step: int) -> None:
        """A fresh log at step 0; on resume, drop the rows logged after the checkpoint."""
        if not self.main:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if step == 0 or not self.path.exists():
            self.path.write_text("")
            return
        keep = [ln for ln in self._rows() if json.loads(ln)["step"] <= step]
        self.path.write_text("".join(ln + "\n" for ln in keep))

    def _rows(self) -> list[str]:
        """The log's lines. A last line that does not parse is a write cut short (a kill or a full disk mid-row):
        it is dropped with a warning; an unparseable line before it is an error naming the file and line."""
        lines = [ln for ln in self.path.read_text().splitlines() if ln.strip()]
        for i, ln in enumerate(lines):
            try:
                row = json.loads(ln)
                if not isinstance(row, dict) or "step" not in row:
                    raise ValueError("no 'step'")
            except ValueError as err:
                if i == len(lines) - 1:
                    warnings.warn(f"{self.path}: dropping a torn last line ({ln[:40]!r}): a write was cut short",
                                  stacklevel=3)
                    return lines[:-1]
                raise ValueError(f"{self.path}, line {i + 1}: not a metrics row ({err}): {ln[:80]!r}") from None
        return lines

    def write(self, row: dict[str, Any]) -> None:
        if self.main:
            with self.path.open("a") as fh:
                fh.write(json.dumps(row) + "\n")

    def plot(self, title: str) -> Path | None:
        return plot_curve(self.path, self.path.with_name("loss_curve.png"), title=title) if self.main else None


def plot_curve(metrics_path: Path, png: Path, title: str = "") -> Path | None:
    """Loss (and learning rate) against step, from ``metrics.jsonl``."""
    rows = [json.loads(ln) for ln in Path(metrics_path).read_text().splitlines() if ln.strip()]
    if not rows:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    steps = [r["step"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, [r["loss"] for r in rows], label="loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax2 = ax.twinx()
    ax2.plot(steps, [r["lr"] for r in rows], color="tab:orange", alpha=0.5, label="lr")
    ax2.set_ylabel("learning rate")
    ax.set_title(title or "training loss")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png
