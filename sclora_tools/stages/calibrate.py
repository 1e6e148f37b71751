"""`sclora calibrate`: run the model over the + and - datasets and store, for every distinct
layer input (or output), the covariance of the real tokens' activations."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from .. import data, models, ui
from ..collect import Collector, Site, plan_sites
from ..core.covariance import NORMALIZATIONS, normalize
from ..errors import InputError, NumericalError, UsageError
from ..features import cut_ids
from ..io.atomic import staged_directory
from ..io.checkpoint import CheckpointReader
from ..io.covariances import write_covariances
from ..io.locks import holds_output_lock
from ..io.manifest import Manifest, new_manifest, write_manifest
from ..io.manifest_types import CALIBRATION_ROLES

ACCUMULATE_DTYPES = {"float64": torch.float64, "float32": torch.float32}


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
    trust_remote_code: bool = False,
    progress: bool = True,
) -> dict:
    """Collect Cov+ and Cov- for every target layer; returns the written manifest."""
    check_options(samples, max_length, batch_size, normalization, accumulate_dtype)
    started = time.time()
    datasets = {role: data.load_dataset_rows(argument, samples, seed) for role, argument in zip(CALIBRATION_ROLES, (pos, neg), strict=True)}
    source = models.resolve_model(model)
    reader = CheckpointReader(source.path)
    run_device = models.pick_device(device)
    tokenizer = models.load_tokenizer(source.path, trust_remote_code)
    probe_dtype = reader.dtype_of(next(name for name in reader.names if name.endswith(".weight")))
    net = models.load_model(source, models.pick_dtype(dtype, probe_dtype), run_device, trust_remote_code)
    models.check_finite_weights(net)
    target_names = models.discover_targets(net, targets)
    check_weights_present(reader, target_names)
    sites = plan_sites(net, models.shared_input_groups(net, target_names, run_device))
    checkpoint_dtype = reader.dtype_of(f"{target_names[0]}.weight")
    records, covariances = [], {}
    for role, loaded in datasets.items():
        examples = [data.render(row, tokenizer, loaded.spec, i) for i, row in enumerate(loaded.rows)]
        batches, truncated = token_batches(examples, tokenizer, max_length)
        data.warn_truncated(truncated, len(examples), loaded.spec.name, max_length)
        moments, tokens = run_dataset(net, sites, batches, batch_size, run_device, ACCUMULATE_DTYPES[accumulate_dtype], role, progress)
        covariances[role] = {key: finished(moment, len(examples), normalization, key) for key, moment in moments.items()}
        records.append(data.texts_record(loaded, examples, tokens, role, truncated))
    with staged_directory(Path(output_dir), "calibration") as staging:
        for role in CALIBRATION_ROLES:
            write_covariances(staging, role, covariances[role])
        manifest = new_manifest(
            "calibration",
            model={**source.describe(), "weight_files": models.weight_file_hashes(source.path),
                   "checkpoint_dtype": str(checkpoint_dtype).replace("torch.", ""),
                   "architecture": (net.config.architectures or [type(net).__name__])[0]},
            config={"targets": target_names, "sites": [site_record(s) for s in sites], "samples": samples,
                    "max_length": max_length, "batch_size": batch_size, "dtype": str(next(net.parameters()).dtype).replace("torch.", ""),
                    "device": str(run_device), "seed": seed, "normalization": normalization, "accumulate_dtype": accumulate_dtype},
            datasets=records,
            summary={"seconds": round(time.time() - started, 2), "tokens": sum(r["tokens"] for r in records)},
        )
        manifest = write_manifest(staging, manifest)
    report(Manifest.from_dict(manifest), Path(output_dir))
    return manifest


def check_options(samples: int, max_length: int, batch_size: int, normalization: str, accumulate_dtype: str) -> None:
    if samples <= 0 or max_length <= 0 or batch_size <= 0:
        raise UsageError("--samples, --max-length and --batch-size must be positive integers.")
    if normalization not in NORMALIZATIONS:
        raise UsageError(f"--normalize must be one of {', '.join(NORMALIZATIONS)}, not {normalization!r}.")
    if accumulate_dtype not in ACCUMULATE_DTYPES:
        raise UsageError(f"--accumulate-dtype must be float64 or float32, not {accumulate_dtype!r}.")


def check_weights_present(reader: CheckpointReader, targets: list[str]) -> None:
    missing = [name for name in targets if f"{name}.weight" not in reader]
    if missing:
        raise InputError(
            f"the checkpoint stores no tensor {missing[0]}.weight (module names differ from checkpoint keys); re-save the model with save_pretrained."
        )


def site_record(site: Site) -> dict:
    return {"key": site.key, "module": site.module, "side": site.side, "dim": site.dim, "serves": list(site.serves)}


def token_batches(examples: list[data.Example], tokenizer, max_length: int) -> tuple[list[list[int]], int]:
    """Token ids per example, longest first so that the peak memory shows in the first batch, and
    how many examples were cut at max_length."""
    encoded = [cut_ids(example.text, tokenizer, max_length, example.add_special_tokens) for example in examples]
    truncated = sum(cut for _, cut in encoded)
    encoded = [ids for ids, _ in encoded if ids]
    if not encoded:
        raise InputError("every sample tokenised to zero tokens; check the dataset's text fields.")
    return sorted(encoded, key=len, reverse=True), truncated


def padded(batch: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.bool)
    for row, ids in enumerate(batch):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        mask[row, : len(ids)] = True
    return input_ids.to(device), mask.to(device)


def run_dataset(net, sites, sequences, batch_size, device, accumulate, role, progress) -> tuple[dict, int]:
    """Forward every batch with the attention mask; hooks add real-token activations."""
    decoder = net.get_decoder() if hasattr(net, "get_decoder") else net
    pad_id = getattr(net.config, "pad_token_id", None) or 0
    tokens, started = 0, time.time()
    with Collector(net, sites, accumulate, device) as collector, torch.inference_mode(), ui.progress_bar(progress) as bar:
        task = bar.add_task(f"calibrate {role.short}", total=len(sequences), rate="")
        for start in range(0, len(sequences), batch_size):
            input_ids, mask = padded(sequences[start : start + batch_size], pad_id, device)
            collector.mask = mask
            decoder(input_ids=input_ids, attention_mask=mask.long(), use_cache=False)
            tokens += int(mask.sum())
            rate = f"{tokens / max(time.time() - started, 1e-9):,.0f} tok/s"
            bar.update(task, advance=input_ids.shape[0], rate=rate)
    return collector.moments, tokens


def finished(moment, samples: int, normalization: str, key: str) -> torch.Tensor:
    covariance = normalize(moment.total, moment.tokens, samples, normalization)
    if not bool(torch.isfinite(covariance).all()):
        raise NumericalError(f"the covariance at {key} holds NaN or Inf; run calibration with --dtype float32.")
    return covariance.cpu().contiguous()


def report(manifest: Manifest, output_dir: Path) -> None:
    config = manifest.config
    rows = [("output", str(output_dir)), ("model", manifest.model.id),
            ("targets", f"{len(config.targets)} layers, {len(config.sites)} covariance sites")]
    rows += [(f"data {d.role}", f"{d.name}: {d.samples} samples, {d.tokens:,} tokens") for d in manifest.datasets]
    rows.append(("time", f"{manifest.summary.seconds} s"))
    ui.show(ui.summary_table("sclora calibrate", rows))


