"""PEFT LoRA adapters on disk: adapter_config.json + adapter_model.safetensors, PEFT's own format."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import metadata
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


def lora_config(rank: int, alpha: float, target_modules: list[str], base_model: str | None) -> dict:
    """The adapter_config.json that `LoraConfig(...).save_pretrained` writes for these settings,
    built without importing peft (importing it is seconds, a fifth of init on a small model).
    Keys left out take PEFT's defaults when it loads the file (tests/io/test_adapter.py)."""
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "revision": None,
        "inference_mode": False,
        "r": rank,
        "lora_alpha": alpha,
        "lora_dropout": 0.0,
        "target_modules": sorted(target_modules),
        "bias": "none",
        "fan_in_fan_out": False,
        "init_lora_weights": True,
        "use_rslora": False,
        "use_dora": False,
        "modules_to_save": None,
        "layers_to_transform": None,
        "layers_pattern": None,
        "rank_pattern": {},
        "alpha_pattern": {},
    }
    version = installed_peft_version()
    if version is not None:
        config["peft_version"] = version
    return config


def installed_peft_version() -> str | None:
    try:
        return metadata.version("peft")
    except metadata.PackageNotFoundError:
        return None


def write_adapter(
    out_dir: Path,
    pairs: dict[str, LoraPair],
    rank: int,
    alpha: float,
    base_model: str | None,
) -> None:
    """Write a standard PEFT LoRA adapter that `PeftModel.from_pretrained` loads."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = lora_config(rank, float(alpha), list(pairs), base_model)
    (out_dir / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
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
