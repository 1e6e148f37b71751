"""What a training run reports while it trains: a rich progress bar with loss and tokens/s, the
loss log (every logged step), and for subspace methods how much of the update has left
S = span(B_init). Only rank 0 of a distributed run shows or records anything: the Trainer hands
every rank the same loss (averaged over the ranks) and, under DDP, the same parameters."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.distributed as dist

from .. import ui
from ..core.drift import drift_summary, layer_drift, update_norm
from ..core.methods import SUBSPACE_METHODS
from ..io.adapter import read_adapter
from ..io.manifest import Manifest
from . import resume as checkpoints

DRIFT_EVERY = 10  # steps between measurements of the update outside the subspace
DRIFT_KEY = "update_outside_fraction"


class DriftTracker:
    """Measures how much of the adapter's update has left S = span(B_init) (subspace methods)."""

    def __init__(self, run_dir: Path, init_manifest: Manifest) -> None:
        self.active = init_manifest.config.method in SUBSPACE_METHODS
        config, self.initial = read_adapter(run_dir / "adapter")
        self.scale = config.scale

    def measure(self, weights: Mapping[str, torch.Tensor]) -> dict:
        """The drift summary of the factors in `weights` (a PeftModel's state dict)."""
        if not self.active:
            return {}
        current = current_factors(weights)
        layers = [layer_drift(start.b, start.a, *current[name], self.scale) for name, start in self.initial.items()]
        return drift_summary(layers)

    def update_norm(self, weights: Mapping[str, torch.Tensor]) -> float:
        current = current_factors(weights)
        return update_norm([(start.b, start.a, *current[name]) for name, start in self.initial.items()], self.scale)


def current_factors(weights: Mapping[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{module: (B, A)} of the default adapter in a PeftModel's state dict, detached."""
    factors: dict[str, dict] = {}
    for name, tensor in weights.items():
        for which in ("lora_A", "lora_B"):
            marker = f".{which}.default.weight"
            if name.endswith(marker):
                module = name[: -len(marker)].removeprefix("base_model.model.")
                factors.setdefault(module, {})[which] = tensor.detach()
    return {module: (pair["lora_B"], pair["lora_A"]) for module, pair in factors.items()}


def history_entry(logged: Mapping, step: int, tokens: int) -> dict:
    entry = {"step": step, "loss": logged["loss"], "lr": logged.get("learning_rate"), "tokens": tokens}
    if DRIFT_KEY in logged:
        entry[DRIFT_KEY] = logged[DRIFT_KEY]
    return entry


def earlier_history(log_history: list[dict]) -> list[dict]:
    """The loss log of the steps a resumed run already took (kept in the checkpoint's trainer state)."""
    return [history_entry(logged, logged["step"], logged.get("num_input_tokens_seen", 0)) for logged in log_history if "loss" in logged]


def progress_callback(history: list[dict], enabled: bool, tracker: DriftTracker | None, live_drift: bool = True):
    """A TrainerCallback that fills `history` (on rank 0) and shows progress; `live_drift` is off when
    the parameters are sharded (FSDP) and so cannot be measured on one rank."""
    from transformers import TrainerCallback

    class ProgressCallback(TrainerCallback):
        def __init__(self) -> None:
            self.bar_context = self.bar = self.task = None
            self.started, self.tokens_at_start = time.time(), 0

        def on_train_begin(self, args, state, control, **kwargs):
            if not state.is_world_process_zero:
                return
            history[:] = earlier_history(state.log_history)
            self.bar_context = ui.progress_bar(enabled)
            self.bar = self.bar_context.__enter__()
            self.task = self.bar.add_task("train", total=state.max_steps, completed=state.global_step, rate="")
            self.started, self.tokens_at_start = time.time(), state.num_input_tokens_seen

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs or "loss" not in logs:
                return
            if self.measures_drift(state):
                fraction = tracker.measure(kwargs["model"].state_dict())[DRIFT_KEY]
                state.log_history[-1][DRIFT_KEY] = fraction  # kept in checkpoints, so a resumed log is whole
            history.append(history_entry(state.log_history[-1], state.global_step, state.num_input_tokens_seen))
            self.show(state, logs["loss"])

        def measures_drift(self, state) -> bool:
            due = state.global_step % DRIFT_EVERY == 0 or state.global_step == state.max_steps
            return tracker is not None and tracker.active and live_drift and due

        def show(self, state, loss: float) -> None:
            rate = ui.tokens_per_second(state.num_input_tokens_seen - self.tokens_at_start, self.started)
            measured = [h[DRIFT_KEY] for h in history if DRIFT_KEY in h]
            drift = f"  outside S {measured[-1]:.1%}" if measured else ""
            self.bar.update(self.task, completed=state.global_step, rate=f"loss {loss:.4f}  {rate}{drift}")

        def on_save(self, args, state, control, **kwargs):
            """Seal the checkpoint the Trainer has just written whole (every rank's files first)."""
            if dist.is_available() and dist.is_initialized():
                dist.barrier()
            if state.is_world_process_zero:
                checkpoints.seal(Path(args.output_dir) / f"{checkpoints.PREFIX}{state.global_step}", list(history))

        def on_train_end(self, args, state, control, **kwargs):
            if self.bar_context is not None:
                self.bar.update(self.task, completed=state.global_step)
                self.bar_context.__exit__(None, None, None)

    return ProgressCallback()
