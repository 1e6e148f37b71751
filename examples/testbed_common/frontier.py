"""Both testbeds' plot: the preserved metric against the task metric, one point per
(configuration, rate), mean over seeds with the seeds' spread as error bars."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Axes:
    """Which metrics the plot puts on x (the new task) and y (what must be kept), and their labels."""

    x: str
    x_label: str
    y: str
    y_label: str
    reference_label: str


SAFETY = Axes("rougeL", "utility: ROUGE-L on held-out summaries", "refusal_rate",
              "safety: refusal rate on held-out harmful requests", "aligned, before fine-tuning")
KNOWLEDGE = Axes("math_accuracy", "task: math accuracy on held-out word problems", "knowledge_em",
                 "world knowledge: exact match on held-out questions", "before fine-tuning")


def marker(index: int, frozen: bool) -> str:
    """Squares for a frozen factor; past the 10 colours of the cycle, other shapes, so that no two
    series look alike."""
    return ("s" if frozen else "o") if index < 10 else ("P" if frozen else "^")


def plot_frontier(rows: list[dict], reference: dict, path: Path, order: list[str], axes: Axes = SAFETY) -> None:
    import matplotlib  # noqa: PLC0415 - optional: only the plot needs it, and the package does not depend on it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 - after choosing the Agg backend

    figure, axis = plt.subplots(figsize=(8, 6))
    groups = sorted(dict.fromkeys((r["config"], r["lr"]) for r in rows), key=lambda g: (order.index(g[0]), g[1]))
    for index, (name, lr) in enumerate(groups):
        group = [r for r in rows if (r["config"], r["lr"]) == (name, lr)]
        x, y = [r[axes.x] for r in group], [r[axes.y] for r in group]
        norm = statistics.mean(r["update_norm"] for r in group)
        axis.errorbar(statistics.mean(x), statistics.mean(y), xerr=spread(x), yerr=spread(y), capsize=3, color=f"C{index % 10}",
                      fmt=marker(index, "locked" in name or "frozen" in name), label=f"{name}, lr {lr:g} (|dW| {norm:.0f})")
    axis.axhline(reference[axes.y], linestyle="--", color="grey", label=axes.reference_label)
    axis.set_xlabel(axes.x_label)
    axis.set_ylabel(axes.y_label)
    axis.set_ylim(-0.05, 1.05)
    axis.legend(fontsize=7, loc="best")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def spread(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0
