"""PEFT LoRA adapters on disk: adapter_config.json + adapter_model.safetensors, PEFT's own format."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..core.merge import lora_scale
from ..errors import InputError

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


@dataclass(frozen=True)
class AdapterConfig:
    """What the stages read from a PEFT LoRA adapter_config.json, read without importing peft
    (seconds and ~170 MB of a merge). Settings that change what B A means and that the stages
    do not apply (DoRA, lora_bias, fan_in_fan_out, per-module ranks or alphas) are refused when
    read."""

    rank: int
    alpha: float
    target_modules: tuple[str, ...]
    base_model: str | None = None
    rslora: bool = False

    @property
    def scale(self) -> float:
        return lora_scale(self.alpha, self.rank, self.rslora)

    @classmethod
    def read(cls, adapter_dir: Path) -> AdapterConfig:
        path = Path(adapter_dir) / CONFIG
        try:
            raw = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"{path} cannot be read as JSON ({exc}); restore the adapter or re-run the stage that wrote it.") from exc
        if not isinstance(raw, dict):
            raise InputError(f"{path} is not a JSON object; restore the adapter or re-run the stage that wrote it.")
        return cls.from_dict(raw, path)

    @classmethod
    def from_dict(cls, raw: dict, path: Path) -> AdapterConfig:
        refuse_unsupported(raw, path)
        rank, alpha = raw.get("r"), raw.get("lora_alpha")
        if isinstance(rank, bool) or not isinstance(rank, int) or rank <= 0:
            raise InputError(f"{path} has r = {rank!r}, not a positive integer rank; restore the adapter or re-run the stage that wrote it.")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
            raise InputError(f"{path} has lora_alpha = {alpha!r}, not a positive number; restore the adapter or re-run the stage "
                             "that wrote it.")
        return cls(rank=rank, alpha=float(alpha), target_modules=target_modules(raw.get("target_modules"), path),
                   base_model=raw.get("base_model_name_or_path"), rslora=bool(raw.get("use_rslora", False)))


def target_modules(value, path: Path) -> tuple[str, ...]:
    """PEFT writes a list of names, or one string (a regex) for its own patterns."""
    if isinstance(value, str):
        return (value,)
    if value is None or (isinstance(value, list) and all(isinstance(name, str) for name in value)):
        return tuple(value or ())
    raise InputError(f"{path} has target_modules = {value!r}, not a list of module names; restore the adapter or re-run the "
                     "stage that wrote it.")


def refuse_unsupported(raw: dict, path: Path) -> None:
    """Settings that change what B A means, which the stages do not apply."""
    peft_type = raw.get("peft_type", "LORA")
    if peft_type != "LORA":
        raise InputError(f"{path} has peft_type {peft_type!r}; sclora reads LoRA adapters only (peft_type LORA).")
    for key, what in (("use_dora", "DoRA"), ("lora_bias", "a bias on lora_B"), ("fan_in_fan_out", "transposed (Conv1D) weights")):
        if raw.get(key):
            raise InputError(f"{path} sets {key} ({what}), which sclora does not apply; train without {key}.")
    for key in ("rank_pattern", "alpha_pattern"):
        if raw.get(key):
            raise InputError(f"{path} sets {key} (per-module ranks or alphas), which sclora does not apply; "
                             "train with one rank and alpha for every module.")


def read_adapter(adapter_dir: Path) -> tuple[AdapterConfig, dict[str, LoraPair]]:
    """Read a PEFT LoRA adapter back into (config, {module: LoraPair})."""
    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / WEIGHTS).is_file() or not (adapter_dir / CONFIG).is_file():
        raise InputError(f"{adapter_dir} is not a PEFT adapter (needs {CONFIG} and {WEIGHTS}).")
    config = AdapterConfig.read(adapter_dir)
    tensors = load_file(str(adapter_dir / WEIGHTS))
    pairs = {}
    for key in tensors:
        if key.endswith(".lora_A.weight"):
            module = key[len(PREFIX) : -len(".lora_A.weight")]
            pairs[module] = paired(tensors, module, config.rank, adapter_dir)
    return config, pairs


def paired(tensors: dict[str, torch.Tensor], module: str, rank: int, adapter_dir: Path) -> LoraPair:
    a, b = tensors[key_for(module, "A")], tensors.get(key_for(module, "B"))
    if b is None or a.ndim != 2 or b.ndim != 2 or a.shape[0] != rank or b.shape[1] != rank:
        raise InputError(f"{adapter_dir / WEIGHTS} holds no rank-{rank} A and B pair for {module} (as {CONFIG} says); "
                         "restore the adapter or re-run the stage that wrote it.")
    return LoraPair(a=a, b=b)
