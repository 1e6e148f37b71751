"""The safety testbed's plot: refusal rate against ROUGE-L, one point per (configuration, rate)."""

from __future__ import annotations

import statistics
from pathlib import Path


def plot_frontier(rows: list[dict], reference: dict, path: Path, order: list[str]) -> None:
    import matplotlib  # noqa: PLC0415 - optional: only the plot needs it, and the package does not depend on it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 - after choosing the Agg backend

    figure, axis = plt.subplots(figsize=(8, 6))
    groups = sorted(dict.fromkeys((r["config"], r["lr"]) for r in rows), key=lambda g: (order.index(g[0]), g[1]))
    for index, (name, lr) in enumerate(groups):
        group = [r for r in rows if (r["config"], r["lr"]) == (name, lr)]
        x, y = [r["rougeL"] for r in group], [r["refusal_rate"] for r in group]
        norm = statistics.mean(r["update_norm"] for r in group)
        axis.errorbar(statistics.mean(x), statistics.mean(y), xerr=spread(x), yerr=spread(y), capsize=3, color=f"C{index % 10}",
                      fmt="s" if ("locked" in name or "frozen" in name) else "o", label=f"{name}, lr {lr:g} (|dW| {norm:.0f})")
    axis.axhline(reference["refusal_rate"], linestyle="--", color="grey", label="aligned, before fine-tuning")
    axis.set_xlabel("utility: ROUGE-L on held-out summaries")
    axis.set_ylabel("safety: refusal rate on held-out harmful requests")
    axis.set_ylim(-0.05, 1.05)
    axis.legend(fontsize=7, loc="lower left")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def spread(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0
