"""Run logging: TensorBoard scalars (tensorboardX), an in-memory history, a metrics JSONL file and
a PNG plot of every metric written at the end."""

from __future__ import annotations

import json
import math
import os


class RunLog:
    """Scalars of one run, under `out_dir` (`tb/`, `metrics.jsonl`, `metrics.png`); inert unless `enabled`."""

    def __init__(self, out_dir: str, enabled: bool = True):
        self.out_dir, self.enabled = out_dir, enabled
        self.history: dict[str, list[dict[str, float]]] = {"train": [], "eval": []}
        self.writer = None
        if enabled:
            from tensorboardX import SummaryWriter

            os.makedirs(out_dir, exist_ok=True)
            self.writer = SummaryWriter(os.path.join(out_dir, "tb"))
            self.jsonl = open(os.path.join(out_dir, "metrics.jsonl"), "a", encoding="utf-8")

    def log(self, split: str, step: int, metrics: dict[str, float]) -> None:
        """Record `metrics` (python floats) of `split` ("train" / "eval") at `step`."""
        self.history[split].append({"step": step, **metrics})
        if not self.enabled:
            return
        for name, value in metrics.items():
            self.writer.add_scalar(f"{split}/{name}", value, step)
        self.jsonl.write(json.dumps({"split": split, "step": step, **metrics}) + "\n")

    def plot(self, path: str | None = None) -> str | None:
        """Write a PNG with one panel per metric (train and eval curves); returns its path."""
        if not self.enabled or not self.history["train"]:
            return None
        plt = pyplot()
        names = sorted({k for rows in self.history.values() for r in rows for k in r} - {"step"})
        cols = min(3, len(names))
        rows_n = math.ceil(len(names) / cols)
        fig, axes = plt.subplots(rows_n, cols, figsize=(4.5 * cols, 3.2 * rows_n), squeeze=False)
        for ax, name in zip(axes.flat, names):
            for split, style in (("train", "-"), ("eval", "o-")):
                pts = [(r["step"], r[name]) for r in self.history[split] if name in r]
                if pts:
                    ax.plot(*zip(*pts), style, label=split, markersize=3)
            ax.set_title(name)
            ax.set_xlabel("step")
            ax.legend()
        for ax in list(axes.flat)[len(names):]:
            ax.axis("off")
        fig.tight_layout()
        path = path or os.path.join(self.out_dir, "metrics.png")
        fig.savefig(path, dpi=80)
        plt.close(fig)
        return path

    def close(self) -> None:
        if self.enabled:
            self.writer.close()
            self.jsonl.close()


def pyplot():
    """`matplotlib.pyplot` on the file-only Agg backend (every plot here is written as a PNG; no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
