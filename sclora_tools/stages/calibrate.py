"""`sclora calibrate`: run the model over the + and - datasets and store, for every distinct
layer input (or output), the covariance of the real tokens' activations.

One process, or one per device under torchrun / accelerate launch (each rank takes a disjoint
share of the samples, rank 0 writes). The model runs whole in memory, through accelerate's
device map, or one decoder block at a time when it does not fit (sequential).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import data, models, ui
from ..calibration import batches as batching
from ..calibration import distributed, in_memory, placement, sequential
from ..calibration.resume import Checkpointer
from ..calibration.serving import needs_every_input, parse_for
from ..calibration.sink import CovarianceSink
from ..collect import Site, plan_sites
from ..core.covariance import NORMALIZATIONS
from ..core.covariance_codec import CHOICES, resolve_form
from ..errors import InputError, UsageError
from ..io.atomic import refuse_foreign_directory, staged_directory
from ..io.checkpoint import CheckpointReader
from ..io.locks import holds_output_lock
from ..io.manifest import Manifest, new_manifest, write_manifest
from ..io.manifest_settings import CalibrationConfig
from ..io.manifest_types import CALIBRATION_ROLES, CalibrationSummary, SiteRecord

ACCUMULATE_DTYPES = {"float64": torch.float64, "float32": torch.float32}
DEFAULT_STORAGE = "auto"


@dataclass
class Prepared:
    """Everything known before the first batch: model, sites, every rank's samples, records."""

    source: models.ModelSource
    net: torch.nn.Module
    placement: placement.Placement
    reader: CheckpointReader
    target_names: list[str]
    sites: list[Site]
    samples: dict  # Role -> every sample, longest first
    shards: dict  # Role -> this rank's samples
    examples: dict  # Role -> rendered examples
    datasets: dict  # Role -> LoadedDataset
    weight_hashes: dict[str, str]
    blocks: sequential.BlockRunner | None


@holds_output_lock("output_dir")
def calibrate(
    model: str,
    pos: str,
    neg: str,
    output_dir: str | Path,
    *,
    samples: int = 256,
    max_length: int = 512,
    batch_size: int = 8,
    targets: list[str] | None = None,
    dtype: str = "auto",
    device: str = "auto",
    seed: int = 0,
    normalization: str = "token",
    accumulate_dtype: str = "float64",
    for_methods: str | list[str] | None = None,
    storage: str = DEFAULT_STORAGE,
    sequential: str = "auto",
    device_map: str | None = None,
    checkpoint_every: int = 0,
    resume: bool = False,
    trust_remote_code: bool = False,
    progress: bool = True,
) -> dict | None:
    """Collect Cov+ and Cov- for every target layer; returns the written manifest (on rank 0;
    None on the other ranks of a distributed run, which write nothing).

    `for_methods` (names or "all") adds what those init methods need beyond SC-LoRA's sites:
    the input-side covariance of every target, in the same model pass."""
    check_options(samples, max_length, batch_size, normalization, accumulate_dtype, storage, checkpoint_every)
    placement.check_choice(sequential, device_map)
    serves = parse_for(for_methods)
    started, output_dir = time.time(), Path(output_dir)
    with distributed.session(device) as ranks:
        progress = progress and ranks.is_writer
        with ranks.phase():
            if ranks.is_writer:
                refuse_foreign_directory(output_dir, "calibration")
            run = prepare(model, (pos, neg), samples, seed, max_length, targets, dtype, sequential, device_map, ranks,
                          trust_remote_code, output_dir, progress, every_input=needs_every_input(serves))
            if run.blocks is not None and (checkpoint_every or resume):
                raise UsageError("--checkpoint-every and --resume work with the in-memory engine, not sequential calibration; "
                                 "run with --sequential off or without them.")
            config = CalibrationConfig(
                targets=tuple(run.target_names), sites=tuple(SiteRecord.from_dict(site_record(s)) for s in run.sites), samples=samples,
                max_length=max_length, batch_size=batch_size, dtype=dtype_name(run.net), device=str(ranks.device), seed=seed,
                normalization=normalization, accumulate_dtype=accumulate_dtype, storage_requested=storage, engine=run.placement.engine,
                sequential=sequential, model_bytes=run.placement.model_bytes, available_bytes=run.placement.available_bytes,
                world_size=ranks.world_size, checkpoint_every=checkpoint_every, for_methods=tuple(serves),
                samples_per_rank={role.value: batching.shard_positions(run.samples[role], ranks.world_size) for role in CALIBRATION_ROLES})
            checkpointer = Checkpointer.for_run(output_dir, ranks, run_identity(run, config), checkpoint_every, resume)
        tokens = {role: ranks.total(batching.token_count(run.shards[role])) for role in CALIBRATION_ROLES}
        config = dataclasses.replace(config, storage=storage_form(storage, serves, tokens, run.sites))
        counts = {role: (len(run.examples[role]), tokens[role]) for role in CALIBRATION_ROLES}
        with writer_staging(output_dir, ranks) as staging, CovarianceSink(staging, run.sites, config.storage, ranks, counts, normalization) as sink:
            collect(run, sink, batch_size, ACCUMULATE_DTYPES[accumulate_dtype], checkpointer, ranks, progress)
            with ranks.phase():
                manifest = None
                if ranks.is_writer:
                    sink.close()
                    manifest = write_calibration_manifest(staging, run, config, tokens, started, checkpointer.resumed_from())
        if ranks.is_writer:
            checkpointer.clear(output_dir)
            report(Manifest.from_dict(manifest), output_dir)
    return manifest


def prepare(model, arguments, samples, seed, max_length, targets, dtype, sequential_choice, device_map, ranks, trust_remote_code,
            output_dir, progress, every_input: bool = False) -> Prepared:
    datasets = ranks.writer_first(lambda: {role: data.load_dataset_rows(argument, samples, seed)  # rank 0 fills the Hub cache
                                           for role, argument in zip(CALIBRATION_ROLES, arguments, strict=True)})
    source = ranks.writer_first(lambda: models.resolve_model(model))
    reader = CheckpointReader(source.path)
    tokenizer = models.load_tokenizer(source.path, trust_remote_code)
    compute_dtype = models.pick_dtype(dtype, reader.dtype_of(next(name for name in reader.names if name.endswith(".weight"))))
    where = placement.choose(sequential_choice, device_map, reader, compute_dtype, ranks.device)
    blocks = None
    if where.engine == "sequential":
        net = sequential.skeleton(source, compute_dtype, trust_remote_code)
        blocks = sequential.BlockRunner(net, reader, ranks.device, output_dir.parent, progress)
        target_names = models.discover_targets(net, targets)
        check_weights_present(reader, target_names)
        groups = blocks.shared_input_groups(target_names)
    else:
        net = models.load_model(source, compute_dtype, ranks.device, trust_remote_code, device_map=device_map)
        models.check_finite_weights(net)
        target_names = models.discover_targets(net, targets)
        check_weights_present(reader, target_names)
        groups = models.shared_input_groups(net, target_names, next(net.parameters()).device)
    sites = plan_sites(net, groups, every_input=every_input)
    if blocks is not None:
        blocks.check_sites(sites)
    examples = {role: data.render_all(datasets[role], tokenizer) for role in CALIBRATION_ROLES}
    tokenized = {role: batching.tokenize(examples[role], tokenizer, max_length) for role in CALIBRATION_ROLES}
    if ranks.is_writer:
        for role in CALIBRATION_ROLES:
            data.warn_truncated(batching.truncated_count(tokenized[role]), len(examples[role]), datasets[role].spec.name, max_length)
    shards = {role: batching.shard(tokenized[role], ranks.rank, ranks.world_size) for role in CALIBRATION_ROLES}
    return Prepared(source, net, where, reader, target_names, sites, tokenized, shards, examples, datasets,
                    models.weight_file_hashes(source.path), blocks)


def collect(run: Prepared, sink: CovarianceSink, batch_size: int, accumulate: torch.dtype, checkpointer: Checkpointer, ranks, progress: bool) -> None:
    """Every site's running sums for both datasets, handed to the sink as they finish."""
    if run.blocks is not None:
        with ranks.phase():
            run.blocks.capture(run.shards, batch_size)
        run.blocks.collect(run.sites, accumulate, sink, ranks)
        return
    for role in CALIBRATION_ROLES:
        with ranks.phase():
            moments = in_memory.collect_role(run.net, run.sites, run.shards[role], batch_size, accumulate, role, checkpointer, progress)
        sink.finish(role, moments)
        del moments


@contextlib.contextmanager
def writer_staging(output_dir: Path, ranks: distributed.Ranks):
    """The staged output directory on rank 0; nothing on the other ranks."""
    if not ranks.is_writer:
        yield None
        return
    with staged_directory(output_dir, "calibration") as staging:
        yield staging


def check_options(samples, max_length, batch_size, normalization, accumulate_dtype, storage, checkpoint_every) -> None:
    if samples <= 0 or max_length <= 0 or batch_size <= 0:
        raise UsageError("--samples, --max-length and --batch-size must be positive integers.")
    if normalization not in NORMALIZATIONS:
        raise UsageError(f"--normalize must be one of {', '.join(NORMALIZATIONS)}, not {normalization!r}.")
    if accumulate_dtype not in ACCUMULATE_DTYPES:
        raise UsageError(f"--accumulate-dtype must be float64 or float32, not {accumulate_dtype!r}.")
    if storage not in CHOICES:
        raise UsageError(f"--storage must be one of {', '.join(CHOICES)}, not {storage!r}.")
    if checkpoint_every < 0:
        raise UsageError("--checkpoint-every must be 0 (no checkpoints) or a positive number of batches.")


def storage_form(requested: str, serves: list[str], tokens: dict, sites: list[Site]) -> str:
    """`auto` is lossless when an input-side method was asked for: LoRA-Null and CorDA read the
    smallest eigenvalues (or the inverse) of a covariance, which a quantised form moves by up to
    21% of the reward (bench/covariance_storage.py), where SC-LoRA's top eigenvectors lose < 1e-7."""
    if requested == "auto" and needs_every_input(serves):
        return "float64-packed"
    return resolve_form(requested, min(tokens.values()), max(site.dim for site in sites))


def check_weights_present(reader: CheckpointReader, targets: list[str]) -> None:
    missing = [name for name in targets if f"{name}.weight" not in reader]
    if missing:
        raise InputError(
            f"the checkpoint stores no tensor {missing[0]}.weight (module names differ from checkpoint keys); re-save the model with save_pretrained."
        )


def site_record(site: Site) -> dict:
    return {"key": site.key, "module": site.module, "side": site.side, "dim": site.dim, "serves": list(site.serves)}


def dtype_name(net: torch.nn.Module) -> str:
    return str(next(net.parameters()).dtype).replace("torch.", "")


def run_identity(run: Prepared, config: CalibrationConfig) -> dict:
    """What a checkpoint's sums depend on; --resume refuses a checkpoint whose identity differs."""
    settings = config.to_dict()
    keep = ("targets", "sites", "samples", "max_length", "batch_size", "dtype", "seed", "accumulate_dtype", "engine")
    texts = {role.short: data.texts_record(run.datasets[role], run.examples[role], 0, role)["texts_sha256"] for role in CALIBRATION_ROLES}
    return {"model": run.weight_hashes, "data": texts, **{key: settings[key] for key in keep}}


def write_calibration_manifest(staging: Path, run: Prepared, config: CalibrationConfig, tokens: dict, started: float, resumed: dict) -> dict:
    records = [data.texts_record(run.datasets[role], run.examples[role], tokens[role], role, batching.truncated_count(run.samples[role]))
               for role in CALIBRATION_ROLES]
    checkpoint_dtype = run.reader.dtype_of(f"{run.target_names[0]}.weight")
    summary = CalibrationSummary(seconds=round(time.time() - started, 2), tokens=sum(tokens.values()), resumed_batches=resumed)
    manifest = new_manifest(
        "calibration",
        model={**run.source.describe(), "weight_files": run.weight_hashes, "checkpoint_dtype": str(checkpoint_dtype).replace("torch.", ""),
               "architecture": (run.net.config.architectures or [type(run.net).__name__])[0]},
        config=json.loads(json.dumps(config.to_dict())),  # tuples as lists: what load_manifest reads back
        datasets=records,
        summary=summary.to_dict(),
    )
    return write_manifest(staging, manifest)


def report(manifest: Manifest, output_dir: Path) -> None:
    config = manifest.config
    rows = [("output", str(output_dir)), ("model", manifest.model.id),
            ("targets", f"{len(config.targets)} layers, {len(config.sites)} covariance sites, stored as {config.storage}"),
            ("engine", f"{config.engine} on {config.world_size} process(es)")]
    rows += [(f"data {d.role}", f"{d.name}: {d.samples} samples, {d.tokens:,} tokens") for d in manifest.datasets]
    rows.append(("serves --method", ", ".join(config.for_methods)))
    rows.append(("time", f"{manifest.summary.seconds} s"))
    ui.show(ui.summary_table("sclora calibrate", rows))
