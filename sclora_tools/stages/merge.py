"""`sclora merge`: rebuild W0 bit-exactly from W_res + the initial adapter + corrections, verify
every tensor's sha256, and write merged = W0 + s (B A - B_init A_init) plus a rank-2r LoRA for
the original base. Streams tensor by tensor; writes nothing unless every check passes."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from safetensors import safe_open

from .. import ui
from ..core import exact
from ..core.finite import all_finite
from ..core.merge import adapter_delta, lora_against_base, merged_weight
from ..errors import MismatchError, NumericalError, UsageError, VerificationError
from ..io import memory
from ..io.adapter import AdapterConfig, LoraPair, read_adapter, write_adapter
from ..io.atomic import staged_directory
from ..io.checkpoint import DEFAULT_SHARD_BYTES, CheckpointReader, copy_model_files, module_of, tensor_bytes
from ..io.corrections import FILE as CORRECTIONS
from ..io.corrections import read_correction
from ..io.hashing import sha256_tensor
from ..io.locks import holds_output_lock
from ..io.manifest import Manifest, init_run_dir, load_manifest, new_manifest, parent_entry, verify_files, write_manifest
from ..io.manifest_types import VerificationRecord
from ..io.streaming_writer import StreamingWriter, specs_of


@holds_output_lock("rebuild_base", "output_dir")
def merge(
    run_dir: str | Path,
    output_dir: str | Path | None = None,
    *,
    rebuild_base: str | Path | None = None,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    progress: bool = True,
) -> dict:
    """Merge an init or train output; with `rebuild_base`, write only the rebuilt W0 model there."""
    if output_dir is None and rebuild_base is None:
        raise UsageError("give -o DIR for the merged model, or --rebuild-base DIR for the original weights.")
    started = time.time()
    run_dir = Path(run_dir)
    manifest = load_manifest(run_dir, ("init", "train"))
    init_dir = init_run_dir(run_dir, manifest)
    init_manifest = manifest if manifest.kind == "init" else load_manifest(init_dir, "init")
    verify_files(init_dir, init_manifest)
    if manifest.kind == "train":
        verify_files(run_dir, manifest)
    trained_dir = run_dir / "adapter"
    config, init_pairs = read_adapter(init_dir / "adapter")
    trained_config, trained_pairs = read_adapter(trained_dir)
    refuse_other_settings(trained_config, config, trained_pairs, init_pairs, trained_dir)
    refuse_non_finite(trained_pairs, trained_dir)
    scale = config.scale
    target = Path(rebuild_base) if rebuild_base is not None else Path(output_dir)
    model_subdir = "base" if rebuild_base is not None else "merged"
    with staged_directory(target, "merge") as staging:
        records, written = stream_models(init_dir, init_manifest, init_pairs, trained_pairs, scale,
                                staging / model_subdir, rebuild_base is not None, shard_bytes, progress)
        copy_model_files(init_dir / "residual", staging / model_subdir)
        if rebuild_base is None:
            write_lora_export(staging / "lora", init_pairs, trained_pairs, config, init_manifest)
        result = new_manifest(
            "merge",
            model=init_manifest.raw["model"],
            config={**manifest.raw["config"], "output": model_subdir},
            datasets=manifest.raw["datasets"],
            parents=[parent_entry(run_dir, manifest)],
            verification=verification_record(records, init_manifest).to_dict(),
            summary={"seconds": round(time.time() - started, 2), "tensors": len(records)},
        )
        result = write_manifest(staging, result, known=written)
    report(Manifest.from_dict(result), target)
    return result


def refuse_other_settings(trained: AdapterConfig, initial: AdapterConfig, trained_pairs: dict, init_pairs: dict, adapter_dir: Path) -> None:
    """The exact rebuild and the merge both use init's scale and modules: an adapter trained with
    another rank or scale, or over other modules, would merge as something it is not."""
    if (trained.rank, trained.scale) != (initial.rank, initial.scale):
        raise MismatchError(f"the adapter in {adapter_dir} has r {trained.rank}, lora_alpha {trained.alpha!r}, use_rslora "
                            f"{trained.rslora}, but init wrote r {initial.rank}, lora_alpha {initial.alpha!r}, use_rslora {initial.rslora}; "
                            "train from this init's adapter (sclora train) without changing r, lora_alpha or use_rslora.")
    for module, start in init_pairs.items():
        pair = trained_pairs.get(module)
        if pair is None or pair.a.shape != start.a.shape or pair.b.shape != start.b.shape:
            raise MismatchError(f"the adapter in {adapter_dir} has no factors of init's shapes for {module}; train from this "
                                "init's adapter (sclora train) without changing its target modules.")
    extra = sorted(set(trained_pairs) - set(init_pairs))
    if extra:
        raise MismatchError(f"the adapter in {adapter_dir} adapts {len(extra)} modules init did not (e.g. {extra[0]}); train from "
                            "this init's adapter (sclora train) without changing its target modules.")


def refuse_non_finite(pairs: dict[str, LoraPair], adapter_dir: Path) -> None:
    for module, pair in pairs.items():
        if not (all_finite(pair.a) and all_finite(pair.b)):
            raise NumericalError(f"the adapter in {adapter_dir} holds NaN or Inf in {module} (training diverged); "
                                 "train again with a lower --lr, nothing was merged.")


def stream_models(init_dir, init_manifest, init_pairs, trained_pairs, scale, out_dir, base_only, shard_bytes, progress) -> tuple[dict, dict]:
    """Rebuild, verify and write every tensor in checkpoint order; raise on the first mismatch.
    Returns the tensors' records and the written shards' sha256."""
    memory.return_large_blocks_to_the_os()
    trimmer = memory.StreamTrimmer()
    reader = CheckpointReader(init_dir / "residual")
    expected = init_manifest.source_tensors
    records = {}
    with safe_open(init_dir / CORRECTIONS, "pt") as corrections, StreamingWriter(out_dir, specs_of(reader), shard_bytes) as writer, \
            ui.progress_bar(progress) as bar:
        task = bar.add_task("merge", total=len(reader.names), rate="")
        for name in reader.names:
            module = module_of(name)
            stored = reader.read(name)
            w0 = rebuild_target(stored, init_pairs[module], corrections, module, scale) if module in init_pairs else stored
            records[name] = check_tensor(name, w0, expected)
            if module in init_pairs and not base_only:
                pair, start = trained_pairs[module], init_pairs[module]
                w0 = merged_weight(w0, adapter_delta(pair.b, pair.a, start.b, start.a, scale))
            writer.add(name, w0)
            trimmer.after(tensor_bytes(w0))
            bar.update(task, advance=1, rate=module or "")
        missing = sorted(set(expected) - set(records))
        if missing:
            raise VerificationError(f"the residual model lacks {len(missing)} tensors of the source (e.g. {missing[0]}); re-run init.")
        writer.close()
    return records, writer.file_hashes


def rebuild_target(w_res: torch.Tensor, pair: LoraPair, corrections, module: str, scale: float) -> torch.Tensor:
    correction = read_correction(corrections, module)
    try:
        return exact.rebuild(w_res, exact.init_product(pair.b, pair.a, scale), correction)
    except ValueError as exc:
        raise VerificationError(f"the exact-rebuild data of {module} is damaged ({exc}); re-run init.") from exc


def check_tensor(name: str, w0: torch.Tensor, expected: dict[str, str]) -> dict:
    digest = sha256_tensor(w0)
    if name not in expected:
        raise VerificationError(f"tensor {name} is not in the source model recorded at init; the residual model was altered.")
    if digest != expected[name]:
        raise VerificationError(
            f"rebuilt {name} does not match the source checkpoint (sha256 {digest[:12]} != {expected[name][:12]}); "
            "the residual, adapter or corrections were modified: re-run init. Nothing was written."
        )
    return {"sha256": digest, "ok": True}


def verification_record(records: dict, init_manifest: Manifest) -> VerificationRecord:
    summary = init_manifest.summary
    return VerificationRecord(
        passed=all(r["ok"] for r in records.values()),
        checked=len(records),
        scheme="fixed-point init factors (exact float64 product) + per-entry W_res choice + compressed step corrections",
        correction_bytes=summary.correction_bytes,
        correction_fraction_of_target_weights=summary.correction_fraction,
        tensors=records,
    )


def write_lora_export(out_dir: Path, init_pairs, trained_pairs, config: AdapterConfig, init_manifest: Manifest) -> None:
    pairs = {}
    for module, start in init_pairs.items():
        trained = trained_pairs[module]
        b, a = lora_against_base(trained.b.float(), trained.a.float(), start.b.float(), start.a.float())
        pairs[module] = LoraPair(a=a.contiguous(), b=b.contiguous())
    # 2 alpha / 2 r: the same scale (init never writes use_rslora; an edited config fails the W0 check)
    write_adapter(out_dir, pairs, 2 * config.rank, 2 * config.alpha, init_manifest.model.id)


def report(manifest: Manifest, target: Path) -> None:
    verification, output = manifest.verification, manifest.config.output
    fraction = verification.correction_fraction_of_target_weights or 0.0
    rows = [("output", str(target)), ("wrote", output + ("" if output == "base" else " + lora")),
            ("W0 check", f"{'PASSED' if verification.passed else 'FAILED'}: {verification.checked} tensors bit-identical to the source"),
            ("exact-rebuild extra bytes", f"{verification.correction_bytes or 0:,} ({fraction:.2%} of target weights)"),
            ("time", f"{manifest.summary.seconds} s")]
    ui.show(ui.summary_table("sclora merge", rows))
