"""`sclora sweep [--init]`: the sweep stage, then (with --init) one `sclora init` folder per beta
inside the sweep's directory (DIR/beta-0.9/, exactly what `sclora init --beta 0.9` writes)."""

from __future__ import annotations

from pathlib import Path

from ..errors import UsageError
from ..io.manifest import Manifest
from ..stages.init import init
from ..stages.sweep import DEFAULT_BETAS
from ..stages.sweep import sweep as sweep_stage


def init_folder(beta: float) -> str:
    return f"beta-{beta:g}"


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
    """The sweep's manifest; with `write_init`, its "inits" maps each beta to its init folder.

    The sweep's own files are written (atomically) first; each init folder is then its own
    atomic, self-verifying artefact. Re-running replaces the whole directory."""
    if write_init and output_dir is None:
        raise UsageError("--init writes one init folder per beta and needs -o DIR; pass an output directory.")
    manifest = sweep_stage(calibration_dir, output_dir, betas=betas, rank=rank, model=model, plots_enabled=plots_enabled,
                           progress=progress)
    if not write_init:
        return manifest
    inits = {}
    for beta in Manifest.from_dict(manifest).config.betas:
        inits[f"{beta:g}"] = init_folder(beta)
        init(calibration_dir, Path(output_dir) / init_folder(beta), beta=beta, rank=rank, alpha=alpha, model=model, progress=progress)
    return {**manifest, "inits": inits}
