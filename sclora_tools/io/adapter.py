"""PEFT LoRA adapters on disk: adapter_config.json + adapter_model.safetensors, PEFT's own format."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file, save_file

from ..errors import InputError

if TYPE_CHECKING:
    from peft import LoraConfig

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"
PREFIX = "base_model.model."


@dataclass(frozen=True)
class LoraPair:
    """One module's adapter: A (r x d_in) and B (d_out x r), as PEFT stores them."""

    a: torch.Tensor
    b: torch.Tensor


def key_for(module: str, which: str) -> str:
    return f"{PREFIX}{module}.lora_{which}.weight"


def write_adapter(
    out_dir: Path,
    pairs: dict[str, LoraPair],
    rank: int,
    alpha: float,
    base_model: str | None,
) -> None:
    """Write a standard PEFT LoRA adapter that `PeftModel.from_pretrained` loads."""
    from peft import LoraConfig

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        target_modules=sorted(pairs),
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
        base_model_name_or_path=base_model,
    )
    config.save_pretrained(str(out_dir))
    tensors = {}
    for module, pair in pairs.items():
        tensors[key_for(module, "A")] = pair.a.contiguous()
        tensors[key_for(module, "B")] = pair.b.contiguous()
    save_file(tensors, str(out_dir / WEIGHTS), metadata={"format": "pt"})


def read_adapter(adapter_dir: Path) -> tuple[LoraConfig, dict[str, LoraPair]]:
    """Read a PEFT LoRA adapter back into (config, {module: LoraPair})."""
    from peft import LoraConfig

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / WEIGHTS).is_file() or not (adapter_dir / CONFIG).is_file():
        raise InputError(f"{adapter_dir} is not a PEFT adapter (needs {CONFIG} and {WEIGHTS}).")
    config = LoraConfig.from_pretrained(str(adapter_dir))
    tensors = load_file(str(adapter_dir / WEIGHTS))
    pairs = {}
    for key in tensors:
        if key.endswith(".lora_A.weight"):
            module = key[len(PREFIX) : -len(".lora_A.weight")]
            pairs[module] = LoraPair(a=tensors[key], b=tensors[key_for(module, "B")])
    return config, pairs
