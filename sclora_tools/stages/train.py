"""`sclora train`: train only the adapter of an init output on residual/ with the transformers
Trainer (AdamW, cosine schedule, warm-up 0.03, no weight decay: the paper's recipe)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from .. import data, models, train_resume, ui
from ..core.drift import drift_summary, layer_drift, update_norm
from ..core.methods import SUBSPACE_METHODS
from ..errors import InputError, NumericalError, UsageError
from ..features import Collator, count_truncated, tokenize_for_loss, with_loss_tokens
from ..io.adapter import read_adapter
from ..io.atomic import MANIFEST, remove_stale_staging, staged_output, write_json
from ..io.locks import holds_output_lock
from ..io.manifest import Manifest, load_manifest, new_manifest, parent_entry, verify_files, write_manifest
from ..io.manifest_settings import TrainSettings
from ..io.manifest_types import Role

CHECKPOINTS = "checkpoints"
DRIFT_EVERY = 10  # steps between measurements of the update outside the subspace
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
) -> dict:
    """Train the adapter of an `init` output; returns the written manifest."""
    started = time.time()
    run_dir, output_dir = Path(run_dir), Path(output_dir)
    init_manifest = load_manifest(run_dir, "init")
    verify_files(run_dir, init_manifest, only=("adapter/", "residual/"))
    check_options(init_manifest, epochs, max_steps, lr, batch_size, grad_accum, freeze_a, freeze_b)
    check_output(output_dir, resume)
    tokenizer = models.load_tokenizer(run_dir / "residual")
    argument = data_argument or init_manifest.dataset(Role.POS).name
    loaded = data.load_dataset_rows(argument, samples, seed)
    examples = data.render_all(loaded, tokenizer)
    features = with_loss_tokens([tokenize_for_loss(e, tokenizer, max_length) for e in examples], max_length)
    data.warn_truncated(count_truncated(features), len(features), argument, max_length)
    settings = TrainSettings(data=argument, samples=len(features), epochs=epochs, max_steps=max_steps, lr=lr,
                             batch_size=batch_size, grad_accum=grad_accum, max_length=max_length, seed=seed,
                             freeze_a=freeze_a, freeze_b=freeze_b, gradient_checkpointing=gradient_checkpointing, bf16=bf16)
    record = data.texts_record(loaded, examples, sum(len(f["input_ids"]) for f in features), Role.TRAIN, count_truncated(features))
    identity = train_resume.run_identity(settings.to_dict(), record["texts_sha256"], run_dir / MANIFEST)
    start = prepare_output(output_dir, resume, identity)
    model = trainable_model(run_dir, settings)
    tracker = DriftTracker(run_dir, init_manifest)
    history = run_trainer(model, tokenizer, features, output_dir, settings, start, save_steps, progress, tracker)
    check_finite(model, settings, history)
    save_adapter(model, output_dir / "adapter")
    write_json(output_dir / "loss_log.json", history)
    manifest = new_manifest(
        "train",
        model=init_manifest.raw["model"],
        config={**init_manifest.raw["config"], "train": settings.to_dict()},
        datasets=[*init_manifest.raw["datasets"], record],
        parents=[parent_entry(run_dir, init_manifest)],
        summary={**training_summary(history, time.time() - started), "subspace": tracker.measure(model),
                 "update_norm": tracker.update_norm(model)},
    )
    manifest = write_manifest(output_dir, manifest, exclude=(f"{CHECKPOINTS}/",))
    report(Manifest.from_dict(manifest), output_dir)
    return manifest


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


def prepare_output(output_dir: Path, resume: bool, identity: dict) -> train_resume.Checkpoint | None:
    """Where training starts (train_resume.py: a refused --resume changes nothing); then a
    re-run never leaves the previous manifest beside a half-replaced adapter, nor a killed run's staging."""
    start = train_resume.starting_point(output_dir / CHECKPOINTS, identity, resume)
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
    for name, parameter in model.named_parameters():
        if (settings.freeze_a and "lora_A" in name) or (settings.freeze_b and "lora_B" in name):
            parameter.requires_grad_(False)
    return model


def run_trainer(model, tokenizer, features, output_dir, settings: TrainSettings, start: train_resume.Checkpoint | None, save_steps,
                progress, tracker) -> list[dict]:
    """Train from scratch, or from the sealed checkpoint `start` with the loss history up to it."""
    from transformers import PrinterCallback, Trainer, TrainingArguments

    arguments = TrainingArguments(
        output_dir=str(output_dir / CHECKPOINTS),
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps or -1,
        learning_rate=settings.lr,
        per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.grad_accum,
        lr_scheduler_type=settings.lr_scheduler,
        warmup_steps=warmup_steps(len(features), settings),
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
        include_num_input_tokens_seen="non_padding",
        remove_unused_columns=False,
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
    )
    history: list[dict] = list(start.history) if start is not None else []
    trainer = Trainer(model=model, args=arguments, train_dataset=features, data_collator=Collator(tokenizer.pad_token_id),
                      callbacks=[ProgressCallback(history, progress, tracker)])
    trainer.remove_callback(PrinterCallback)  # it prints raw log dicts on stdout, which --json keeps for one document
    trainer.train(resume_from_checkpoint=str(start.path) if start is not None else None)
    return history


def warmup_steps(examples: int, settings: TrainSettings) -> int:
    """warmup_ratio (3%) of the optimiser steps (transformers 5 takes warm-up in steps only)."""
    per_epoch = math.ceil(math.ceil(examples / settings.batch_size) / settings.grad_accum)
    total = settings.max_steps or math.ceil(per_epoch * settings.epochs)
    return math.ceil(settings.warmup_ratio * total)


def check_finite(model, settings: TrainSettings, history: list[dict]) -> None:
    """A diverged run (NaN or Inf in the adapter) writes no adapter and no manifest."""
    for name, parameter in model.named_parameters():
        if "lora_" in name and not bool(torch.isfinite(parameter).all()):
            steps = history[-1]["step"] if history else 0
            raise NumericalError(f"training diverged: {name.removeprefix('base_model.model.')} holds NaN or Inf after {steps} steps; "
                                 f"lower --lr (now {settings.lr:g}) and train again.")


def make_progress_callback():
    from transformers import TrainerCallback

    class _ProgressCallback(TrainerCallback):
        """A rich progress bar with loss and tokens/s; every logged step goes into `history`."""

        def __init__(self, history: list[dict], enabled: bool, tracker: DriftTracker) -> None:
            self.history, self.enabled, self.tracker = history, enabled, tracker
            self.bar_context = self.bar = self.task = None
            self.started = time.time()
            self.tokens_at_start = 0

        def on_train_begin(self, args, state, control, **kwargs):
            self.bar_context = ui.progress_bar(self.enabled)
            self.bar = self.bar_context.__enter__()
            self.task = self.bar.add_task("train", total=state.max_steps, completed=state.global_step, rate="")
            self.started, self.tokens_at_start = time.time(), state.num_input_tokens_seen

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                entry = {"step": state.global_step, "loss": logs["loss"], "lr": logs.get("learning_rate"),
                         "tokens": state.num_input_tokens_seen}
                if self.tracker.active and (state.global_step % DRIFT_EVERY == 0 or state.global_step == state.max_steps):
                    entry["update_outside_fraction"] = self.tracker.measure(kwargs["model"])["update_outside_fraction"]
                self.history.append(entry)
                rate = ui.tokens_per_second(state.num_input_tokens_seen - self.tokens_at_start, self.started)
                measured = [h["update_outside_fraction"] for h in self.history if "update_outside_fraction" in h]
                drift = f"  outside S {measured[-1]:.1%}" if measured else ""
                self.bar.update(self.task, completed=state.global_step, rate=f"loss {logs['loss']:.4f}  {rate}{drift}")

        def on_save(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                train_resume.seal(Path(args.output_dir) / f"{train_resume.PREFIX}{state.global_step}", list(self.history))

        def on_train_end(self, args, state, control, **kwargs):
            self.bar.update(self.task, completed=state.global_step)
            self.bar_context.__exit__(None, None, None)

    return _ProgressCallback


def ProgressCallback(history: list[dict], enabled: bool, tracker: DriftTracker):  # noqa: N802 - reads like the class it builds
    return make_progress_callback()(history, enabled, tracker)


class DriftTracker:
    """Measures how much of the adapter's update has left S = span(B_init) (subspace methods)."""

    def __init__(self, run_dir: Path, init_manifest: Manifest) -> None:
        self.active = init_manifest.config.method in SUBSPACE_METHODS
        config, self.initial = read_adapter(run_dir / "adapter")
        self.scale = config.lora_alpha / config.r

    def measure(self, model) -> dict:
        if not self.active:
            return {}
        current = current_factors(model)
        layers = [layer_drift(start.b, start.a, *current[name], self.scale) for name, start in self.initial.items()]
        return drift_summary(layers)

    def update_norm(self, model) -> float:
        current = current_factors(model)
        return update_norm([(start.b, start.a, *current[name]) for name, start in self.initial.items()], self.scale)


def current_factors(model) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{module: (B, A)} of a PeftModel's default adapter, detached."""
    factors: dict[str, dict] = {}
    for name, parameter in model.named_parameters():
        for which in ("lora_A", "lora_B"):
            marker = f".{which}.default.weight"
            if name.endswith(marker):
                module = name[: -len(marker)].removeprefix("base_model.model.")
                factors.setdefault(module, {})[which] = parameter.detach()
    return {module: (pair["lora_B"], pair["lora_A"]) for module, pair in factors.items()}


def save_adapter(model, final: Path) -> None:
    """Save the trained adapter under a temporary name, then swap it in."""
    with staged_output(final) as staging:
        model.save_pretrained(str(staging))


def training_summary(history: list[dict], seconds: float) -> dict:
    losses = [h["loss"] for h in history if h.get("loss") is not None and math.isfinite(h["loss"])]
    return {"seconds": round(seconds, 2), "steps": history[-1]["step"] if history else 0,
            "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
            "tokens": history[-1]["tokens"] if history else 0}


def report(manifest: Manifest, output_dir: Path) -> None:
    summary, settings = manifest.summary, manifest.config.train
    loss = f"{summary.first_loss:.4f} -> {summary.last_loss:.4f}" if summary.first_loss is not None else "n/a"
    rows = [("output", str(output_dir)), ("data", f"{settings.data} ({settings.samples} samples)"),
            ("steps", str(summary.steps)), ("loss", loss), ("adapter", settings.adapter_training())]
    if summary.subspace is not None:
        rows.append(("update outside S", f"{summary.subspace.update_outside_fraction:.2%} of the weight update"))
        rows.append(("B change outside S", f"{summary.subspace.b_change_outside_fraction:.2%}"))
    if summary.update_norm is not None:
        rows.append(("weight update", f"|dW|_F = {summary.update_norm:.4g} over all adapted layers"))
    rows.append(("time", f"{summary.seconds} s"))
    ui.show(ui.summary_table("sclora train", rows))
