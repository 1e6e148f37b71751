"""`sclora train`: train only the adapter of an init output on residual/ with the transformers
Trainer (AdamW, cosine schedule, warm-up 0.03, no weight decay: the paper's recipe).

Runs data-parallel under `torchrun --nproc_per_node N` or `accelerate launch` (the Trainer's
DDP): --batch-size is per process, so one optimiser step sees batch-size x grad-accum x N
sequences. Rank 0 checks the inputs, prepares the output and writes the adapter, the loss log
and the manifest; the other ranks write nothing of ours (the Trainer's checkpoints hold one RNG
state per rank, written by that rank, so that --resume continues each rank's stream exactly).
--resume continues only a run of the same settings and data, from its newest sealed checkpoint
(training/resume.py)."""

from __future__ import annotations

import functools
import math
import time
from pathlib import Path
from typing import NamedTuple

import torch

from .. import data, models, ui
from ..core.finite import all_finite
from ..errors import InputError, NumericalError, UsageError
from ..features import Collator, count_truncated, tokenize_for_loss, with_loss_tokens
from ..io.atomic import MANIFEST, remove_stale_staging, staged_output, write_json
from ..io.locks import holds_output_lock
from ..io.manifest import Manifest, load_manifest, new_manifest, parent_entry, verify_files, write_manifest
from ..io.manifest_settings import TrainSettings
from ..io.manifest_types import Role
from ..training import processes as run_processes
from ..training import resume as checkpoints
from ..training.progress import DriftTracker, progress_callback
from ..training.quiet import quiet_libraries

CHECKPOINTS = "checkpoints"
OWN_ENTRIES = {CHECKPOINTS, "adapter", "loss_log.json", MANIFEST, "eval.json"}


@holds_output_lock("output_dir")
def train(
    run_dir: str | Path,
    output_dir: str | Path,
    *,
    data_argument: str | None = None,
    samples: int | None = None,
    epochs: float = 1.0,
    max_steps: int | None = None,
    lr: float = 2e-5,
    batch_size: int = 8,
    grad_accum: int = 1,
    max_length: int = 512,
    seed: int = 0,
    freeze_a: bool = False,
    freeze_b: bool = False,
    gradient_checkpointing: bool = False,
    bf16: bool = False,
    resume: bool = False,
    save_steps: int = 200,
    progress: bool = True,
) -> dict | None:
    """Train the adapter of an `init` output; returns the written manifest (on rank 0; None on
    the other ranks of a distributed run, which write nothing of ours)."""
    started = time.time()
    run_dir, output_dir = Path(run_dir), Path(output_dir)
    with quiet_libraries():
        processes = run_processes.start()
        with processes.main_first():  # rank 0 refuses bad input alone (one message) and fills caches once
            init_manifest = load_manifest(run_dir, "init")
            if processes.is_main:
                verify_files(run_dir, init_manifest, only=("adapter/", "residual/"))
                check_options(init_manifest, epochs, max_steps, lr, batch_size, grad_accum, freeze_a, freeze_b)
                check_output(output_dir, resume)
            prepared = prepare_data(run_dir, data_argument or init_manifest.dataset(Role.POS).argument, samples, seed, max_length)
            settings = TrainSettings(data=prepared.argument, samples=len(prepared.features), epochs=epochs, max_steps=max_steps, lr=lr,
                                     batch_size=batch_size, grad_accum=grad_accum, max_length=max_length, seed=seed,
                                     freeze_a=freeze_a, freeze_b=freeze_b, gradient_checkpointing=gradient_checkpointing, bf16=bf16,
                                     world_size=processes.world_size)
            identity = checkpoints.run_identity(settings.to_dict(), prepared.record()["texts_sha256"], run_dir / MANIFEST)
            start = prepare_output(output_dir, resume, identity) if processes.is_main else checkpoints.sealed_start(output_dir / CHECKPOINTS, resume)
        model = trainable_model(run_dir, settings)
        tracker = DriftTracker(run_dir, init_manifest) if processes.is_main else None
        history, weights = run_trainer(model, prepared, output_dir, settings, start, save_steps, progress and processes.is_main,
                                       tracker, processes)
        manifest = None
        if processes.is_main:
            check_finite(weights, settings, history)
            manifest = write_outputs(model, weights, history, output_dir, init_manifest, run_dir, settings, prepared.record(), tracker,
                                     started)
        processes.wait()  # every rank returns once the artefact is complete
    if manifest is not None:
        report(Manifest.from_dict(manifest), output_dir)
    return manifest


class PreparedData(NamedTuple):
    """The training data as every rank tokenises it."""

    argument: str
    tokenizer: object
    loaded: data.LoadedDataset
    examples: list[data.Example]
    features: list[dict]

    def record(self) -> dict:
        tokens = sum(len(f["input_ids"]) for f in self.features)
        return data.texts_record(self.loaded, self.examples, tokens, Role.TRAIN, count_truncated(self.features))


def prepare_data(run_dir: Path, argument: str, samples: int | None, seed: int, max_length: int) -> PreparedData:
    tokenizer = models.load_tokenizer(run_dir / "residual")
    loaded = data.load_dataset_rows(argument, samples, seed)
    examples = data.render_all(loaded, tokenizer)
    features = with_loss_tokens([tokenize_for_loss(e, tokenizer, max_length) for e in examples], max_length)
    data.warn_truncated(count_truncated(features), len(features), argument, max_length)
    return PreparedData(argument, tokenizer, loaded, examples, features)


def write_outputs(model, weights, history, output_dir, init_manifest, run_dir, settings, record, tracker, started) -> dict:
    """The adapter, the loss log and, last, the manifest that makes the output complete (rank 0)."""
    save_adapter(model, weights, output_dir / "adapter")
    write_json(output_dir / "loss_log.json", history)
    manifest = new_manifest(
        "train",
        model=init_manifest.raw["model"],
        config={**init_manifest.raw["config"], "train": settings.to_dict()},
        datasets=[*init_manifest.raw["datasets"], record],
        parents=[parent_entry(run_dir, init_manifest)],
        summary={**training_summary(history, time.time() - started), "subspace": tracker.measure(weights),
                 "update_norm": tracker.update_norm(weights)},
    )
    return write_manifest(output_dir, manifest, exclude=(f"{CHECKPOINTS}/",))


def check_options(init_manifest: Manifest, epochs, max_steps, lr, batch_size, grad_accum, freeze_a, freeze_b) -> None:
    if lr <= 0 or batch_size <= 0 or grad_accum <= 0 or epochs <= 0 or (max_steps is not None and max_steps <= 0):
        raise UsageError("--lr, --batch-size, --grad-accum, --epochs and --max-steps must be positive.")
    if freeze_a and freeze_b:
        raise UsageError("--freeze-a and --freeze-b together leave nothing to train; choose one.")
    if freeze_b and init_manifest.config.method == "lora":
        raise UsageError("--freeze-b needs a method whose B starts non-zero (sclora); with lora B = 0 would stay 0.")


def check_output(output_dir: Path, resume: bool) -> None:
    """The output holds only our entries (and, for --resume, exists)."""
    if output_dir.exists():
        foreign = [p.name for p in output_dir.iterdir() if p.name not in OWN_ENTRIES and not p.name.startswith(".")]
        if foreign:
            raise InputError(f"output directory {output_dir} holds other files ({foreign[0]}); choose an empty or new directory.")
    elif resume:
        raise InputError(f"--resume needs an earlier run in {output_dir}, which does not exist; drop --resume.")


def prepare_output(output_dir: Path, resume: bool, identity: dict) -> checkpoints.Checkpoint | None:
    """Where training starts (training/resume.py: a refused --resume changes nothing); then a
    re-run never leaves the previous manifest beside a half-replaced adapter, nor a killed run's staging."""
    start = checkpoints.starting_point(output_dir / CHECKPOINTS, identity, resume)
    (output_dir / MANIFEST).unlink(missing_ok=True)
    for entry in OWN_ENTRIES:  # this process holds the output's lock: nobody else is writing these
        remove_stale_staging(output_dir / entry)
    return start


def trainable_model(run_dir: Path, settings: TrainSettings):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if settings.bf16 else "auto"
    with models.quiet_loading():
        base = AutoModelForCausalLM.from_pretrained(run_dir / "residual", use_safetensors=True, dtype=dtype, trust_remote_code=False)
    if settings.gradient_checkpointing:
        base.gradient_checkpointing_enable()
        base.enable_input_require_grads()
    model = PeftModel.from_pretrained(base, run_dir / "adapter", is_trainable=True)
    # The embeddings are never trained. PEFT's default ("auto") looks the base model's name up,
    # on the Hub when it is not a local directory, and warns when it cannot, at every checkpoint
    # the Trainer saves.
    model.save_pretrained = functools.partial(model.save_pretrained, save_embedding_layers=False)
    for name, parameter in model.named_parameters():
        if (settings.freeze_a and "lora_A" in name) or (settings.freeze_b and "lora_B" in name):
            parameter.requires_grad_(False)
    return model


def run_trainer(model, prepared: PreparedData, output_dir, settings: TrainSettings, start: checkpoints.Checkpoint | None, save_steps,
                progress, tracker, processes) -> tuple[list[dict], dict[str, torch.Tensor]]:
    """Train from scratch, or from the sealed checkpoint `start`; returns the loss log (filled on
    rank 0) and the adapter's final weights, gathered the way Trainer.save_model gathers them
    (every rank takes part; under DDP they are already whole)."""
    from transformers import PrinterCallback, Trainer

    history: list[dict] = []
    arguments = training_arguments(output_dir, settings, len(prepared.features), save_steps, processes)
    trainer = Trainer(model=model, args=arguments, train_dataset=prepared.features, data_collator=Collator(prepared.tokenizer.pad_token_id))
    trainer.remove_callback(PrinterCallback)  # it prints the Trainer's raw log dicts on stdout
    trainer.add_callback(progress_callback(history, progress, tracker, live_drift=not trainer.is_fsdp_enabled))
    trainer.train(resume_from_checkpoint=str(start.path) if start is not None else None)
    weights = trainer.accelerator.get_state_dict(trainer.model)
    return history, {name: tensor for name, tensor in weights.items() if ".lora_" in name}


def training_arguments(output_dir: Path, settings: TrainSettings, examples: int, save_steps: int, processes):
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(output_dir / CHECKPOINTS),
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps or -1,
        learning_rate=settings.lr,
        per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.grad_accum,
        lr_scheduler_type=settings.lr_scheduler,
        warmup_steps=warmup_steps(examples, settings),
        weight_decay=settings.weight_decay,
        optim=settings.optimizer,
        logging_steps=1,
        save_steps=save_steps,
        save_total_limit=2,
        seed=settings.seed,
        data_seed=settings.seed,
        bf16=settings.bf16,
        report_to=[],
        disable_tqdm=True,
        log_level="error",
        log_level_replica="error",
        include_num_input_tokens_seen="non_padding",
        remove_unused_columns=False,
        use_cpu=processes.on_cpu,
        ddp_backend=processes.ddp_backend,
        ddp_find_unused_parameters=False,  # every LoRA factor that trains is used in every forward pass
        dataloader_num_workers=0,
    )


def warmup_steps(examples: int, settings: TrainSettings) -> int:
    """warmup_ratio (3%) of the optimiser steps (transformers 5 takes warm-up in steps only); each
    of the world_size processes takes its own batch per step."""
    per_epoch = math.ceil(math.ceil(examples / (settings.batch_size * settings.world_size)) / settings.grad_accum)
    total = settings.max_steps or math.ceil(per_epoch * settings.epochs)
    return math.ceil(settings.warmup_ratio * total)


def check_finite(weights: dict[str, torch.Tensor], settings: TrainSettings, history: list[dict]) -> None:
    """A diverged run (NaN or Inf in the adapter) writes no adapter and no manifest."""
    for name, tensor in weights.items():
        if not all_finite(tensor):
            steps = history[-1]["step"] if history else 0
            raise NumericalError(f"training diverged: {name.removeprefix('base_model.model.')} holds NaN or Inf after {steps} steps; "
                                 f"lower --lr (now {settings.lr:g}) and train again.")


def save_adapter(model, weights: dict[str, torch.Tensor], final: Path) -> None:
    """Save the trained adapter (`weights`: its tensors) under a temporary name, then swap it in."""
    with staged_output(final) as staging:
        model.save_pretrained(str(staging), state_dict=weights)


def training_summary(history: list[dict], seconds: float) -> dict:
    losses = [h["loss"] for h in history if h.get("loss") is not None and math.isfinite(h["loss"])]
    return {"seconds": round(seconds, 2), "steps": history[-1]["step"] if history else 0,
            "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
            "tokens": history[-1]["tokens"] if history else 0}


def report(manifest: Manifest, output_dir: Path) -> None:
    summary, settings = manifest.summary, manifest.config.train
    loss = f"{summary.first_loss:.4f} -> {summary.last_loss:.4f}" if summary.first_loss is not None else "n/a"
    rows = [("output", str(output_dir)), ("data", f"{settings.data} ({settings.samples} samples)"),
            ("steps", str(summary.steps)), ("batch", batch_description(settings)), ("loss", loss),
            ("adapter", settings.adapter_training())]
    if summary.subspace is not None:
        rows.append(("update outside S", f"{summary.subspace.update_outside_fraction:.2%} of the weight update"))
        rows.append(("B change outside S", f"{summary.subspace.b_change_outside_fraction:.2%}"))
    if summary.update_norm is not None:
        rows.append(("weight update", f"|dW|_F = {summary.update_norm:.4g} over all adapted layers"))
    rows.append(("time", f"{summary.seconds} s"))
    ui.show(ui.summary_table("sclora train", rows))


def batch_description(settings: TrainSettings) -> str:
    """"32 sequences per step (8 per process x 2 accumulation x 2 processes)", or "8 per step"."""
    parts = [f"{settings.batch_size} per process"]
    if settings.grad_accum > 1:
        parts.append(f"{settings.grad_accum} accumulation")
    if settings.world_size > 1:
        parts.append(f"{settings.world_size} processes")
    detail = f" ({' x '.join(parts)})" if len(parts) > 1 else ""
    return f"{settings.global_batch_size} sequences per step{detail}"
