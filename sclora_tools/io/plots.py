"""PNG figures of a beta sweep: the frontier (+ energy against - energy, one point per beta) and a
per-layer heatmap. matplotlib is optional (the `plots` extra) and imported only here, lazily,
with the non-interactive Agg backend."""

from __future__ import annotations

from pathlib import Path

from ..errors import UsageError

INSTALL_HINT = "pip install 'sclora-tools[plots]'"


def pyplot():
    try:
        import matplotlib
    except ImportError:
        raise UsageError(f"the sweep's PNG figures need matplotlib, which is not installed; run `{INSTALL_HINT}` or pass --no-plots.") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def frontier_png(path: Path, betas: list[float], energy_pos: list[float], energy_neg: list[float], rank: int) -> None:
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(6, 4.5), dpi=120)
    axes.plot(energy_neg, energy_pos, marker="o", color="tab:blue")
    for i, (beta, x, y) in enumerate(zip(betas, energy_neg, energy_pos, strict=True)):  # alternate sides: near beta = 1 points crowd
        axes.annotate(f"beta={beta:g}", (x, y), textcoords="offset points", xytext=(6, -10 if i % 2 else 3), fontsize=8)
    axes.set_xlabel("share of Cov- energy in the subspace (what fine-tuning may disturb)")
    axes.set_ylabel("share of Cov+ energy in the subspace (what it learns from)")
    axes.set_title(f"SC-LoRA beta frontier, rank {rank}, all layers")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def layers_png(path: Path, betas: list[float], layer_names: list[str], pos_rows: list[list[float]], neg_rows: list[list[float]]) -> None:
    plt = pyplot()
    height = max(3.0, 0.12 * len(layer_names) + 1.5)
    figure, axes = plt.subplots(1, 2, figsize=(10, height), dpi=120, sharey=True)
    for ax, rows, title in ((axes[0], pos_rows, "Cov+ energy share"), (axes[1], neg_rows, "Cov- energy share")):
        image = ax.imshow(rows, aspect="auto", vmin=0.0, vmax=1.0, cmap="viridis", interpolation="nearest")
        ax.set_xticks(range(len(betas)), [f"{b:g}" for b in betas], fontsize=7)
        ax.set_xlabel("beta")
        ax.set_title(title)
        figure.colorbar(image, ax=ax, fraction=0.05)
    axes[0].set_yticks(range(len(layer_names)), layer_names, fontsize=max(3, min(8, 600 // max(len(layer_names), 1))))
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
