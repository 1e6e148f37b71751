"""`sclora sweep`: the predicted SC-LoRA trade-off for many betas from one calibration, with no
training: the share of Cov+ and of Cov- energy inside each beta's subspace, in total and per
layer, as a table, a frontier PNG and a per-layer heatmap PNG. Each layer's weight and
covariances are read once for all betas. (`--init`, an init folder per beta: workflows/sweep.py.)"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path

from rich.table import Table

from .. import ui
from ..calibration.serving import check_ranks, locate_model
from ..core.sweep import BetaPoint, prepare_site, share, sweep_site
from ..errors import UsageError
from ..io import plots
from ..io.atomic import staged_directory
from ..io.checkpoint import CheckpointReader
from ..io.covariances import open_covariances
from ..io.manifest import Manifest, load_manifest, new_manifest, parent_entry, verify_files, write_manifest
from ..io.manifest_types import Role

DEFAULT_BETAS = (0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0)
TABLE, FRONTIER, LAYERS = "table.csv", "frontier.png", "layers.png"


@dataclass(frozen=True)
class LayerSweep:
    """One layer over all betas: the captured energies per beta and the layer's total energies."""

    points: list[BetaPoint]
    trace_pos: float
    trace_neg: float

    def shares(self, label: str) -> list[float]:
        total = self.trace_pos if label == "pos" else self.trace_neg
        return [share(p.captured_pos if label == "pos" else p.captured_neg, total) for p in self.points]


def sweep(
    calibration_dir: str | Path,
    output_dir: str | Path | None = None,
    *,
    betas: list[float] | tuple[float, ...] = DEFAULT_BETAS,
    rank: int = 128,
    model: str | Path | None = None,
    plots_enabled: bool = True,
    progress: bool = True,
) -> dict:
    """Sweep beta over one calibration; returns the sweep's manifest (written to `output_dir` if given)."""
    started = time.time()
    calibration_dir = Path(calibration_dir)
    betas = check_options(betas, rank, output_dir, plots_enabled)
    calibration = load_manifest(calibration_dir, "calibration")
    verify_files(calibration_dir, calibration)
    reader = CheckpointReader(locate_model(calibration, model))
    sites = calibration.config.site_of_target()
    check_ranks(reader, sites, rank)
    layers = sweep_layers(reader, calibration_dir, sites, betas, rank, progress)
    table = totals(layers, betas)
    shares = {name: {"energy_pos": layer.shares("pos"), "energy_neg": layer.shares("neg")} for name, layer in layers.items()}
    manifest = new_manifest(
        "sweep",
        model=calibration.raw["model"],
        config={"betas": betas, "rank": rank, "targets": list(sites), "normalization": calibration.config.normalization},
        datasets=calibration.raw["datasets"],
        parents=[parent_entry(calibration_dir, calibration)],
        table=table,
        layers=shares,
        summary={"seconds_sweep": round(time.time() - started, 2), "layers": len(layers)},
    )
    if output_dir is not None:
        manifest = write_outputs(Path(output_dir), manifest, Swept(betas, rank, table, shares), plots_enabled)
    report(Manifest.from_dict(manifest), table, output_dir)
    return manifest


def check_options(betas, rank: int, output_dir, plots_enabled: bool) -> list[float]:
    values = sorted({float(b) for b in betas})
    if not values or any(not 0.0 <= b <= 1.0 for b in values):
        raise UsageError(f"--betas must be values in [0, 1], got {', '.join(str(b) for b in betas) or 'none'}.")
    if rank <= 0:
        raise UsageError(f"--rank must be a positive integer, got {rank}.")
    if plots_enabled and output_dir is not None:
        plots.pyplot()  # fail before any work if matplotlib is missing
    return values


def sweep_layers(reader, calibration_dir: Path, sites: dict, betas: list[float], rank: int, progress: bool) -> dict[str, LayerSweep]:
    """Every layer over every beta; a covariance shared by several targets (q/k/v) is read once."""
    layers, cached = {}, {}
    with open_covariances(calibration_dir, Role.POS) as pos, open_covariances(calibration_dir, Role.NEG) as neg, \
            ui.progress_bar(progress) as bar:
        task = bar.add_task("sweep", total=len(sites), rate="")
        for target, site in sites.items():
            if site.key not in cached:
                cached = {site.key: (pos.get(site.key), neg.get(site.key))}
            prepared = prepare_site(reader.read(f"{target}.weight"), *cached[site.key], site.side)
            layers[target] = LayerSweep(sweep_site(prepared, betas, rank), prepared.trace_pos, prepared.trace_neg)
            bar.update(task, advance=1, rate=target)
    return layers


def totals(layers: dict[str, LayerSweep], betas: list[float]) -> list[dict]:
    """Per beta: captured energy over all layers / total energy over all layers, and sum R(S)."""
    trace_pos = sum(layer.trace_pos for layer in layers.values())
    trace_neg = sum(layer.trace_neg for layer in layers.values())
    rows = []
    for i, beta in enumerate(betas):
        points = [layer.points[i] for layer in layers.values()]
        rows.append({"beta": beta,
                     "energy_pos": share(sum(p.captured_pos for p in points), trace_pos),
                     "energy_neg": share(sum(p.captured_neg for p in points), trace_neg),
                     "objective": sum(p.objective for p in points)})
    return rows


@dataclass(frozen=True)
class Swept:
    """What the sweep's files show: the totals per beta (table.csv and the frontier) and each
    layer's energy shares per beta (the per-layer heatmap)."""

    betas: list[float]
    rank: int
    table: list[dict]
    layers: dict[str, dict[str, list[float]]]


def write_outputs(output_dir: Path, manifest: dict, swept: Swept, plots_enabled: bool) -> dict:
    with staged_directory(output_dir, "sweep") as staging:
        write_table(staging / TABLE, swept.table)
        if plots_enabled:
            write_plots(staging, swept)
        manifest = write_manifest(staging, manifest)
    return manifest


def write_table(path: Path, table: list[dict]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["beta", "energy_pos", "energy_neg", "objective"])
        writer.writeheader()
        writer.writerows(table)


def write_plots(directory: Path, swept: Swept) -> None:
    table, layers, betas, rank = swept.table, swept.layers, swept.betas, swept.rank
    plots.frontier_png(directory / FRONTIER, betas, [row["energy_pos"] for row in table], [row["energy_neg"] for row in table], rank)
    names = list(layers)
    plots.layers_png(directory / LAYERS, betas, [short_name(n) for n in names],
                     [layers[n]["energy_pos"] for n in names], [layers[n]["energy_neg"] for n in names])


def short_name(module: str) -> str:
    """model.layers.3.self_attn.q_proj -> 3.q_proj"""
    parts = module.split(".")
    index = next((p for p in parts if p.isdigit()), None)
    return f"{index}.{parts[-1]}" if index is not None else module


def report(manifest: Manifest, table_rows: list[dict], output_dir) -> None:
    table = Table(title=f"sclora sweep: rank {manifest.config.rank}, {manifest.summary.layers} layers", title_justify="left")
    for column in ("beta", "Cov+ energy in S", "Cov- energy in S", "sum R(S)"):
        table.add_column(column, justify="right")
    for row in table_rows:
        table.add_row(f"{row['beta']:g}", f"{row['energy_pos']:.2%}", f"{row['energy_neg']:.2%}", f"{row['objective']:.4g}")
    ui.show(table)
    where = f"written to {output_dir}" if output_dir is not None else "pass -o DIR to write the table and the PNGs"
    ui.show(f"sweep: {manifest.summary.seconds_sweep} s; {where}")
