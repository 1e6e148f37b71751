"""`sclora init`: covariances + W0 -> residual model (W_res), PEFT adapter (A_init, B_init) and
the corrections that rebuild W0 bit-exactly. Streams the checkpoint one tensor at a time."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from .. import models, ui
from ..core import methods
from ..core.layer_init import InitSettings, LayerInit, initialize_layer
from ..errors import InputError, MismatchError, NumericalError, UsageError
from ..io import memory
from ..io.adapter import LoraPair, write_adapter
from ..io.atomic import staged_directory
from ..io.checkpoint import DEFAULT_SHARD_BYTES, CheckpointReader, ShardedWriter, copy_model_files, module_of
from ..io.corrections import FILE as CORRECTIONS
from ..io.corrections import write_corrections
from ..io.covariances import open_covariances
from ..io.hashing import sha256_tensor
from ..io.locks import holds_output_lock
from ..io.manifest import Manifest, load_manifest, new_manifest, parent_entry, verify_files, write_manifest
from ..io.manifest_types import CALIBRATION_ROLES, Role, SiteRecord


@holds_output_lock("output_dir")
def init(
    calibration_dir: str | Path,
    output_dir: str | Path,
    *,
    beta: float = 0.5,
    rank: int = 128,
    alpha: float | None = None,
    method: str = "sclora",
    model: str | Path | None = None,
    seed: int = 0,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    progress: bool = True,
) -> dict:
    """Initialise adapters from a calibration; returns the written manifest."""
    started = time.time()
    calibration_dir = Path(calibration_dir)
    calibration = load_manifest(calibration_dir, "calibration")
    verify_files(calibration_dir, calibration)
    settings = check_settings(method, beta, rank, alpha, seed)
    model_dir = locate_model(calibration, model)
    reader = CheckpointReader(model_dir)
    sites = calibration.config.site_of_target()
    check_ranks(reader, sites, rank)
    warn_unstable_beta(calibration, reader, sites, beta)
    with staged_directory(Path(output_dir), "init") as staging:
        layers, source_hashes = write_residual(reader, calibration_dir, sites, settings, staging / "residual", shard_bytes, progress)
        copy_model_files(model_dir, staging / "residual")
        pairs = {name: LoraPair(a=layer.a, b=layer.b) for name, layer in layers.items()}
        write_adapter(staging / "adapter", pairs, settings.rank, settings.alpha, calibration.model.id)
        write_corrections(staging / CORRECTIONS, {name: layer.correction for name, layer in layers.items()})
        manifest = new_manifest(
            "init",
            model={**calibration.raw["model"], "path": str(model_dir)},
            config={"method": method, "beta": beta, "rank": rank, "alpha": settings.alpha, "scale": settings.scale,
                    "seed": seed, "targets": list(sites), "normalization": calibration.config.normalization,
                    "checkpoint_dtype": calibration.model.checkpoint_dtype},
            datasets=calibration.raw["datasets"],
            parents=[parent_entry(calibration_dir, calibration)],
            source_tensors=source_hashes,
            layers={name: layer.diagnostics for name, layer in layers.items()},
            summary=totals(layers, time.time() - started),
        )
        manifest = write_manifest(staging, manifest)
    report(Manifest.from_dict(manifest), Path(output_dir))
    return manifest


def check_settings(method: str, beta: float, rank: int, alpha: float | None, seed: int) -> InitSettings:
    if method not in methods.METHODS:
        raise UsageError(f"--method {method!r} is unknown; choose one of {', '.join(methods.METHODS)}.")
    if not 0.0 <= beta <= 1.0:
        raise UsageError(f"--beta must lie in [0, 1], got {beta}; 0 favours the new task, 1 favours preservation.")
    if rank <= 0:
        raise UsageError(f"--rank must be a positive integer, got {rank}.")
    alpha = float(rank if alpha is None else alpha)
    if alpha <= 0:
        raise UsageError(f"--alpha must be positive, got {alpha}.")
    return InitSettings(method=method, beta=beta, rank=rank, alpha=alpha, seed=seed)


def locate_model(calibration: Manifest, override: str | Path | None) -> Path:
    """The calibrated model's directory (or --model), checked against the recorded weight hashes."""
    if override is not None:
        path = Path(override).expanduser()
        if not path.is_dir():
            raise InputError(f"--model {override} is not a directory; pass the local model directory.")
    else:
        recorded = Path(calibration.model.path)
        path = recorded if recorded.is_dir() else models.resolve_model(calibration.model.spec).path
    if models.weight_file_hashes(path) != calibration.model.weight_files:
        raise MismatchError(
            f"the weights in {path} are not the ones this calibration was made for ({calibration.model.id}); "
            "pass --model with the calibrated model or re-run calibrate."
        )
    return path.resolve()


def check_ranks(reader: CheckpointReader, sites: dict[str, SiteRecord], rank: int) -> None:
    for target in sites:
        if f"{target}.weight" not in reader:
            raise MismatchError(f"the calibration targets {target}, which the model in {reader.model_dir} does not have; "
                                "pass --model with the calibrated model, or re-run calibrate.")
        d_out, d_in = reader.shape_of(f"{target}.weight")
        if rank > min(d_out, d_in):
            raise UsageError(f"--rank {rank} exceeds min(d_out, d_in) = {min(d_out, d_in)} of {target}; choose a rank <= {min(d_out, d_in)}.")


def warn_unstable_beta(calibration: Manifest, reader: CheckpointReader, sites: dict[str, SiteRecord], beta: float) -> None:
    """At beta = 1 the top eigenvalues of -Cov- are its zero ones wherever Cov- has rank < d_out
    (fewer - tokens than d_out, or an input site with d_in < d_out): the subspace is not unique."""
    if beta < 1.0:
        return
    neg_tokens = calibration.dataset(Role.NEG).tokens
    deficient = []
    for target, site in sites.items():
        d_out, d_in = reader.shape_of(f"{target}.weight")
        rank_bound = min(neg_tokens, d_in if site.side == "input" else d_out)
        if rank_bound < d_out:
            deficient.append(target)
    if deficient:
        ui.warn(f"beta = 1 leaves the subspace non-unique in {len(deficient)} layers (e.g. {deficient[0]}: Cov- has rank < d_out "
                f"with {neg_tokens} - tokens; paper, appendix B); use beta < 1 or calibrate with more - samples.")


def write_residual(reader, calibration_dir, sites, settings, out_dir, shard_bytes, progress):
    """Copy the checkpoint tensor by tensor, replacing each target weight with its W_res."""
    memory.return_large_blocks_to_the_os()
    writer = ShardedWriter(out_dir, shard_bytes)
    layers, source_hashes = {}, {}
    with open_covariances(calibration_dir, Role.POS) as pos, open_covariances(calibration_dir, Role.NEG) as neg, \
            ui.progress_bar(progress) as bar:
        task = bar.add_task("init", total=len(reader.names), rate="")
        for name in reader.names:
            tensor = reader.read(name)
            source_hashes[name] = sha256_tensor(tensor)
            target = module_of(name)
            if target in sites:
                layer = init_target(target, tensor, sites[target], pos, neg, settings, len(layers))
                layers[target], tensor = layer, layer.w_res
            writer.add(name, tensor)
            memory.trim()
            bar.update(task, advance=1, rate=target or "")
    writer.close()
    return layers, source_hashes


def init_target(target, weight, site, pos, neg, settings, index) -> LayerInit:
    if not bool(torch.isfinite(weight).all()):
        raise NumericalError(f"{target}.weight holds NaN or Inf; the checkpoint is damaged.")
    needs_cov = settings.method in methods.SUBSPACE_METHODS
    cov_pos = pos.get(site.key) if needs_cov else None
    cov_neg = neg.get(site.key) if needs_cov else None
    if needs_cov and not (bool(torch.isfinite(cov_pos).all()) and bool(torch.isfinite(cov_neg).all())):
        raise NumericalError(f"the calibration's covariance at {site.key} holds NaN or Inf; re-run calibrate (with --dtype float32).")
    layer = initialize_layer(weight, cov_pos, cov_neg, site.side, settings, index)
    if not bool(torch.isfinite(layer.w_res).all()):
        raise NumericalError(f"W_res of {target} holds NaN or Inf; check the calibration covariances.")
    return layer


def totals(layers: dict[str, LayerInit], seconds: float) -> dict:
    diagnostics = [layer.diagnostics for layer in layers.values()]
    out = {
        "seconds": round(seconds, 2),
        "layers": len(layers),
        "correction_bytes": sum(d["correction_bytes"] for d in diagnostics),
        "target_weight_bytes": sum(d["weight_bytes"] for d in diagnostics),
    }
    out["correction_fraction"] = out["correction_bytes"] / max(out["target_weight_bytes"], 1)
    for label in (role.short for role in CALIBRATION_ROLES):
        if all(f"captured_{label}" in d for d in diagnostics):
            captured = sum(d[f"captured_{label}"] for d in diagnostics)
            trace = sum(d[f"trace_{label}"] for d in diagnostics)
            out[f"energy_{label}"] = captured / trace if trace > 0 else 0.0
    return out


def report(manifest: Manifest, output_dir: Path) -> None:
    config, summary = manifest.config, manifest.summary
    rows = [("output", str(output_dir)), ("method", config.method),
            ("beta / rank / alpha", f"{config.beta} / {config.rank} / {config.alpha:g}"),
            ("layers", str(summary.layers))]
    if summary.energy_pos is not None:
        rows.append(("Cov+ energy in subspace", f"{summary.energy_pos:.2%}"))
        rows.append(("Cov- energy in subspace", f"{summary.energy_neg:.2%}"))
    rows.append(("exact-rebuild extra bytes", f"{summary.correction_bytes:,} ({summary.correction_fraction:.2%} of target weights)"))
    rows.append(("time", f"{summary.seconds} s"))
    ui.show(ui.summary_table("sclora init", rows))
