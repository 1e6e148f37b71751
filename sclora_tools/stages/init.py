"""`sclora init`: covariances + W0 -> residual model (W_res), PEFT adapter (A_init, B_init) and
the corrections that rebuild W0 bit-exactly. Streams the checkpoint one tensor at a time."""

from __future__ import annotations

import dataclasses
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import ui
from ..calibration.serving import check_ranks, check_serves, locate_model, sites_for_method
from ..core import methods
from ..core.finite import all_finite
from ..core.layer_init import InitSettings, LayerInit, SiteCovariances, initialize_layer
from ..errors import NumericalError, UsageError
from ..io import memory
from ..io.adapter import LoraPair, write_adapter
from ..io.atomic import staged_directory
from ..io.checkpoint import DEFAULT_SHARD_BYTES, CheckpointReader, copy_model_files, module_of, tensor_bytes
from ..io.corrections import FILE as CORRECTIONS
from ..io.corrections import write_corrections
from ..io.covariances import open_covariances
from ..io.locks import holds_output_lock
from ..io.manifest import Manifest, load_manifest, new_manifest, parent_entry, verify_files, write_manifest
from ..io.manifest_types import CALIBRATION_ROLES, Role, SiteRecord
from ..io.prefetch import prefetched
from ..io.streaming_writer import StreamingWriter, specs_of
from ..layer_pool import OrderedPool, threads_per_worker, worker_count


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
    check_serves(calibration, method)
    model_dir = locate_model(calibration, model)
    reader = CheckpointReader(model_dir)
    sites = LayerSites(subspace=calibration.config.site_of_target(), method=sites_for_method(calibration, method))
    check_ranks(reader, sites.subspace, rank)
    if method == "sclora":
        warn_unstable_beta(calibration, reader, sites.subspace, beta)
    with staged_directory(Path(output_dir), "init") as staging:
        layers, source_hashes, written = write_residual(reader, calibration_dir, sites, settings, staging / "residual", shard_bytes, progress)
        copy_model_files(model_dir, staging / "residual")
        pairs = {name: LoraPair(a=layer.a, b=layer.b) for name, layer in layers.items()}
        write_adapter(staging / "adapter", pairs, settings.rank, settings.alpha, calibration.model.id)
        write_corrections(staging / CORRECTIONS, {name: layer.correction for name, layer in layers.items()})
        manifest = new_manifest(
            "init",
            model={**calibration.raw["model"], "path": str(model_dir)},
            config={"method": method, "beta": beta if methods.METHODS[method].uses_beta else None, "rank": rank,
                    "alpha": settings.alpha, "scale": settings.scale, "seed": seed, "targets": list(sites.subspace),
                    "normalization": calibration.config.normalization, "checkpoint_dtype": calibration.model.checkpoint_dtype,
                    "method_settings": method_settings(method)},
            datasets=calibration.raw["datasets"],
            parents=[parent_entry(calibration_dir, calibration)],
            source_tensors=source_hashes,
            layers={name: layer.diagnostics for name, layer in layers.items()},
            summary=totals(layers, time.time() - started),
        )
        manifest = write_manifest(staging, manifest, known=written)
    typed = Manifest.from_dict(manifest)
    warn_degenerate_null_space(typed)
    report(typed, Path(output_dir))
    return manifest


@dataclass(frozen=True)
class LayerSites:
    """Per target: the SC-LoRA site (where the energy diagnostics are measured) and the site the
    method reads (empty when it reads none)."""

    subspace: dict[str, SiteRecord]
    method: dict[str, SiteRecord]


def method_settings(method: str) -> dict:
    """What the method is and which covariances it read, for the manifest and the card: SC-LoRA
    reads the layer-output covariance (collected at the input where that is cheaper), the
    input-side methods the covariance of the layer's input x."""
    spec = methods.METHODS[method]
    where = "layer-output" if spec.site == "subspace" else "input-side"
    return {"summary": spec.summary, "reads": [f"{where} Cov{Role.parse(role)}" for role in spec.roles]}


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
    """Copy the checkpoint tensor by tensor, replacing each target weight with its W_res. The next
    tensors are read and hashed on a background thread, target layers are computed two at a time
    where that pays (layer_pool), each tensor streams to its shard in checkpoint order as soon as
    it is ready, and a site's covariances are read once for all the targets it serves."""
    memory.return_large_blocks_to_the_os()
    layers, source_hashes = {}, {}
    workers = worker_count(max((math.prod(reader.shape_of(f"{target}.weight")) for target in sites.subspace), default=0))
    with open_covariances(calibration_dir, Role.POS) as pos, open_covariances(calibration_dir, Role.NEG) as neg, \
            StreamingWriter(out_dir, specs_of(reader), shard_bytes) as writer, ui.progress_bar(progress) as bar, \
            threads_per_worker(workers), OrderedPool(workers) as pool:
        covariances = CovarianceCache({Role.POS: pos, Role.NEG: neg}, eigen_device(settings))
        sink = ResidualSink(writer, layers, bar, bar.add_task("init", total=len(reader.names), rate=""))
        for name, tensor, digest in prefetched(reader):
            source_hashes[name] = digest
            target = module_of(name)
            if target in sites.subspace:
                needed, energy_site = target_inputs(target, sites, covariances, settings)
                pool.submit(name, compute_target, target, tensor, needed, energy_site, settings, pool.submitted)
            else:
                pool.put(name, tensor)
            sink.write(pool.ready())
        sink.write(pool.ready(drain=True))
        writer.close()
    return layers, source_hashes, writer.file_hashes


class ResidualSink:
    """Writes what the pool hands back, in order: a target's W_res (its LayerInit kept in
    `layers`) or a tensor copied as it is."""

    def __init__(self, writer: StreamingWriter, layers: dict, bar, task) -> None:
        self.writer, self.layers, self.bar, self.task = writer, layers, bar, task
        self.trimmer = memory.StreamTrimmer()

    def write(self, ready) -> None:
        for name, item in ready:
            target = module_of(name)
            if isinstance(item, LayerInit):  # kept without W_res: at 7B all of them would be 13 GB
                self.layers[target], item = dataclasses.replace(item, w_res=None), item.w_res
            self.writer.add(name, item)
            self.trimmer.after(tensor_bytes(item))
            self.bar.update(self.task, advance=1, rate=target or "")


class CovarianceCache:
    """The covariances of the last few (site, role) pairs read: q/k/v (and gate/up) share one
    site, and in checkpoint order o_proj comes between k_proj and q_proj. Kept on `device`: on a
    GPU the subspace's eigen work runs there (core.subspace follows the covariances)."""

    def __init__(self, files: dict, device: torch.device, keep: int = 4) -> None:
        self.files, self.device, self.keep = files, device, keep
        self.recent: OrderedDict[tuple[str, Role], torch.Tensor] = OrderedDict()

    def get(self, key: str, role: Role) -> torch.Tensor:
        if (key, role) not in self.recent:
            covariance = self.files[role].get(key)
            if not all_finite(covariance):
                raise NumericalError(f"the calibration's covariance at {key} holds NaN or Inf; re-run calibrate (with --dtype float32).")
            self.recent[(key, role)] = covariance.to(self.device)
            while len(self.recent) > self.keep:
                self.recent.popitem(last=False)
        self.recent.move_to_end((key, role))
        return self.recent[(key, role)]

    def site(self, site: SiteRecord, roles: tuple[Role, ...]) -> SiteCovariances:
        return SiteCovariances(*(self.get(site.key, role) if role in roles else None for role in CALIBRATION_ROLES), site.side)


def eigen_device(settings: InitSettings) -> torch.device:
    """A GPU for SC-LoRA's eigenproblems when there is one (the exact scheme stays on the CPU)."""
    return torch.device("cuda" if settings.method == "sclora" and torch.cuda.is_available() else "cpu")


def target_inputs(target, sites: LayerSites, covariances: CovarianceCache, settings) -> tuple[SiteCovariances, SiteCovariances | None]:
    """What the method reads and, where B != 0, the SC-LoRA site for the diagnostics (read here,
    on the thread that owns the covariance files)."""
    subspace_site, read = sites.subspace[target], sites.method.get(target)
    energy_site = covariances.site(subspace_site, CALIBRATION_ROLES) if settings.method in methods.SUBSPACE_METHODS else None
    if read is None:
        return SiteCovariances(None, None, "input"), energy_site
    if energy_site is not None and read.key == subspace_site.key:
        return energy_site, energy_site
    return covariances.site(read, tuple(Role.parse(role) for role in methods.METHODS[settings.method].roles)), energy_site


def compute_target(target, weight, needed: SiteCovariances, energy_site, settings, index) -> LayerInit:
    """One target's initialisation, checked (runs on a layer_pool worker)."""
    if not all_finite(weight):
        raise NumericalError(f"{target}.weight holds NaN or Inf; the checkpoint is damaged.")
    try:
        layer = initialize_layer(weight, needed.pos, needed.neg, needed.side, settings, index, energy_site)
    except ValueError as exc:
        raise NumericalError(f"{settings.method} failed on {target} ({exc}); check the calibration covariances.") from exc
    if not all_finite(layer.w_res):
        raise NumericalError(f"W_res of {target} holds NaN or Inf; check the calibration covariances.")
    return layer


def null_space_summary(diagnostics: list[dict]) -> dict:
    """Where LoRA-Null's null spaces sit: the gap between the r-th and (r+1)-th smallest
    eigenvalues of the D- input covariance and the D- energy left inside, over all layers."""
    ratios = sorted(d["null_gap_ratio"] for d in diagnostics if d.get("null_gap_ratio") is not None)
    shares = [d["null_energy_share"] for d in diagnostics]
    return {"null_gap_ratio_min": ratios[0] if ratios else None,
            "null_gap_ratio_median": ratios[len(ratios) // 2] if ratios else None,
            "layers_not_unique": sum(1 for d in diagnostics if not d["null_space_unique"]),
            "null_energy_share_max": max(shares), "null_energy_share_mean": sum(shares) / len(shares)}


def warn_degenerate_null_space(manifest: Manifest) -> None:
    count = manifest.summary.layers_not_unique
    if count:
        ui.warn(f"the LoRA-Null null space is not unique in {count} layers (the (r+1) smallest eigenvalues of the - input "
                "covariance are all 0: fewer - tokens than input dimensions); calibrate with more - samples.")


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
    if diagnostics and all("null_energy_share" in d for d in diagnostics):
        out.update(null_space_summary(diagnostics))
    return out


def report(manifest: Manifest, output_dir: Path) -> None:
    config, summary = manifest.config, manifest.summary
    rows = [("output", str(output_dir)), ("method", config.method),
            ("beta / rank / alpha", f"{config.beta if config.beta is not None else '-'} / {config.rank} / {config.alpha:g}"),
            ("layers", str(summary.layers))]
    if summary.energy_pos is not None:
        rows.append(("Cov+ energy in span(B)", f"{summary.energy_pos:.2%}"))
        rows.append(("Cov- energy in span(B)", f"{summary.energy_neg:.2%}"))
    if summary.null_energy_share_max is not None:
        gap = summary.null_gap_ratio_min
        rows.append(("null-space eigen-gap", f"lambda_r+1 / lambda_r >= {gap:.3g}" if gap is not None else "exact null spaces (lambda_r = 0)"))
        rows.append(("Cov- input energy in null space", f"{summary.null_energy_share_mean:.2e} mean, {summary.null_energy_share_max:.2e} max"))
    rows.append(("exact-rebuild extra bytes", f"{summary.correction_bytes:,} ({summary.correction_fraction:.2%} of target weights)"))
    rows.append(("time", f"{summary.seconds} s"))
    ui.show(ui.summary_table("sclora init", rows))
