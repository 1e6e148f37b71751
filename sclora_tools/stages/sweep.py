"""`sclora sweep`: the predicted SC-LoRA trade-off for many betas from one calibration, with no
training: the share of Cov+ and of Cov- energy inside each beta's subspace, in total and per
layer, as a table, a frontier PNG and a per-layer heatmap PNG; `--init` also writes an init
folder per beta. Each layer's weight and covariances are read once for all betas."""

from __future__ import annotations

import csv
import time
from pathlib import Path

from rich.table import Table

from .. import ui
from ..calibration import check_ranks, locate_model, subspace_sites
from ..core.sweep import prepare_site, share, sweep_site
from ..errors import UsageError
from ..io import plots
from ..io.atomic import staged_directory
from ..io.checkpoint import CheckpointReader
from ..io.covariances import open_covariances
from ..io.manifest import new_manifest, read_manifest, verify_files, write_manifest

DEFAULT_BETAS = (0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0)
TABLE, FRONTIER, LAYERS = "table.csv", "frontier.png", "layers.png"


def sweep(
    calibration_dir: str | Path,
    output_dir: str | Path | None = None,
    *,
    betas: list[float] | tuple[float, ...] = DEFAULT_BETAS,
    rank: int = 128,
    write_init: bool = False,
    alpha: float | None = None,
    model: str | Path | None = None,
    plots_enabled: bool = True,
    progress: bool = True,
) -> dict:
    """Sweep beta over one calibration; returns the sweep's manifest (written to `output_dir` if given)."""
    started = time.time()
    calibration_dir = Path(calibration_dir)
    betas = check_options(betas, rank, output_dir, write_init, plots_enabled)
    calibration = read_manifest(calibration_dir, "calibration")
    verify_files(calibration_dir, calibration)
    reader = CheckpointReader(locate_model(calibration, model))
    sites = subspace_sites(calibration)
    check_ranks(reader, sites, rank)
    layers = sweep_layers(reader, calibration_dir, sites, betas, rank, progress)
    manifest = new_manifest(
        "sweep",
        model=calibration["model"],
        config={"betas": betas, "rank": rank, "targets": list(sites), "normalization": calibration["config"]["normalization"],
                "init": write_init, "alpha": float(rank if alpha is None else alpha) if write_init else None},
        datasets=calibration["datasets"],
        parents=[{"kind": "calibration", "path": str(calibration_dir.resolve()), "manifest": calibration}],
        table=totals(layers, betas),
        layers={name: {"energy_pos": [p[0] for p in rows], "energy_neg": [p[1] for p in rows]} for name, rows in shares(layers).items()},
        summary={"seconds_sweep": round(time.time() - started, 2), "layers": len(layers)},
    )
    if output_dir is not None:
        manifest = write_outputs(Path(output_dir), manifest, calibration_dir, model, plots_enabled, progress)
    report(manifest, output_dir)
    return manifest


def check_options(betas, rank: int, output_dir, write_init: bool, plots_enabled: bool) -> list[float]:
    values = sorted({float(b) for b in betas})
    if not values or any(not 0.0 <= b <= 1.0 for b in values):
        raise UsageError(f"--betas must be values in [0, 1], got {', '.join(str(b) for b in betas) or 'none'}.")
    if rank <= 0:
        raise UsageError(f"--rank must be a positive integer, got {rank}.")
    if write_init and output_dir is None:
        raise UsageError("--init writes one init folder per beta and needs -o DIR; pass an output directory.")
    if plots_enabled and output_dir is not None:
        plots.pyplot()  # fail before any work if matplotlib is missing
    return values


def sweep_layers(reader, calibration_dir: Path, sites: dict, betas: list[float], rank: int, progress: bool) -> dict:
    """{target: (points per beta, trace+, trace-)}; a covariance shared by several targets is read once."""
    layers, cached = {}, {}
    with open_covariances(calibration_dir, "pos") as pos, open_covariances(calibration_dir, "neg") as neg, \
            ui.progress_bar(progress) as bar:
        task = bar.add_task("sweep", total=len(sites), rate="")
        for target, site in sites.items():
            if site["key"] not in cached:
                cached = {site["key"]: (pos.get(site["key"]), neg.get(site["key"]))}
            prepared = prepare_site(reader.read(f"{target}.weight"), *cached[site["key"]], site["side"])
            layers[target] = (sweep_site(prepared, betas, rank), prepared.trace_pos, prepared.trace_neg)
            bar.update(task, advance=1, rate=target)
    return layers


def shares(layers: dict) -> dict[str, list[tuple[float, float]]]:
    return {name: [(share(p.captured_pos, t_pos), share(p.captured_neg, t_neg)) for p in points]
            for name, (points, t_pos, t_neg) in layers.items()}


def totals(layers: dict, betas: list[float]) -> list[dict]:
    """Per beta: captured energy over all layers / total energy over all layers, and sum R(S)."""
    trace_pos = sum(t for _, t, _ in layers.values())
    trace_neg = sum(t for _, _, t in layers.values())
    rows = []
    for i, beta in enumerate(betas):
        points = [points[i] for points, _, _ in layers.values()]
        rows.append({"beta": beta,
                     "energy_pos": share(sum(p.captured_pos for p in points), trace_pos),
                     "energy_neg": share(sum(p.captured_neg for p in points), trace_neg),
                     "objective": sum(p.objective for p in points)})
    return rows


def write_outputs(output_dir: Path, manifest: dict, calibration_dir: Path, model, plots_enabled: bool, progress: bool) -> dict:
    config = manifest["config"]
    with staged_directory(output_dir, "sweep") as staging:
        write_table(staging / TABLE, manifest["table"])
        if plots_enabled:
            write_plots(staging, manifest)
        if config["init"]:
            manifest["inits"] = write_inits(staging, calibration_dir, config, model, progress)
        manifest = write_manifest(staging, manifest, exclude=tuple(f"{folder}/" for folder in manifest.get("inits", {}).values()))
    return manifest


def write_table(path: Path, table: list[dict]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["beta", "energy_pos", "energy_neg", "objective"])
        writer.writeheader()
        writer.writerows(table)


def write_plots(directory: Path, manifest: dict) -> None:
    table, layers, betas = manifest["table"], manifest["layers"], manifest["config"]["betas"]
    plots.frontier_png(directory / FRONTIER, betas, [row["energy_pos"] for row in table], [row["energy_neg"] for row in table],
                       manifest["config"]["rank"])
    names = list(layers)
    plots.layers_png(directory / LAYERS, betas, [short_name(n) for n in names],
                     [layers[n]["energy_pos"] for n in names], [layers[n]["energy_neg"] for n in names])


def short_name(module: str) -> str:
    """model.layers.3.self_attn.q_proj -> 3.q_proj"""
    parts = module.split(".")
    index = next((p for p in parts if p.isdigit()), None)
    return f"{index}.{parts[-1]}" if index is not None else module


def init_folder(beta: float) -> str:
    return f"beta-{beta:g}"


def write_inits(staging: Path, calibration_dir: Path, config: dict, model, progress: bool) -> dict[str, str]:
    from .. import init as run_init  # the public init entry point, one call per beta

    folders = {}
    for beta in config["betas"]:
        folders[f"{beta:g}"] = init_folder(beta)
        run_init(calibration_dir, staging / init_folder(beta), beta=beta, rank=config["rank"], alpha=config["alpha"],
                 model=model, progress=progress)
    return folders


def report(manifest: dict, output_dir) -> None:
    table = Table(title=f"sclora sweep: rank {manifest['config']['rank']}, {manifest['summary']['layers']} layers",
                     title_justify="left")
    for column in ("beta", "Cov+ energy in S", "Cov- energy in S", "sum R(S)"):
        table.add_column(column, justify="right")
    for row in manifest["table"]:
        table.add_row(f"{row['beta']:g}", f"{row['energy_pos']:.2%}", f"{row['energy_neg']:.2%}", f"{row['objective']:.4g}")
    ui.show(table)
    where = f"written to {output_dir}" if output_dir is not None else "pass -o DIR to write the table, the PNGs and --init folders"
    ui.show(f"sweep: {manifest['summary']['seconds_sweep']} s; {where}")
