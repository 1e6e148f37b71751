"""The safety-aligned start shipped with the package: an embedded model with a small LoRA merged in.

SmolLM2-135M-Instruct as embedded refuses almost no harmful request, so there is nothing for SC-LoRA
to preserve. The package ships a safety-alignment LoRA for it (sclora_tools/adapters/, made by
scripts/make_aligned_adapter.py; its recipe and sha256 in recipe.json). `materialize` merges it into
the embedded model once and caches the result as an ordinary float32 checkpoint, keyed by the
adapter's hash, so `smollm2-135m-instruct-aligned` works as a model argument everywhere.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import NamedTuple

import torch

from . import embedded
from .io.atomic import staged_output
from .io.cache_root import default_cache_root
from .io.hashing import sha256_file
from .io.locks import output_lock
from .training.quiet import quiet_libraries

ADAPTERS_DIR = Path(__file__).resolve().parent / "adapters"
RECIPE_FILE = "recipe.json"


class AlignedModel(NamedTuple):
    base: str  # the embedded model the adapter was trained on
    adapter: str  # folder under sclora_tools/adapters/


ALIGNED_MODELS: dict[str, AlignedModel] = {
    "smollm2-135m-instruct-aligned": AlignedModel(base="smollm2-135m-instruct", adapter="smollm2-135m-instruct-safety"),
}


def is_aligned(name: str) -> bool:
    return name in ALIGNED_MODELS


def base_of(name: str) -> str | None:
    """The embedded model an aligned start was made from; None for any other model."""
    return ALIGNED_MODELS[name].base if is_aligned(name) else None


def adapter_dir(name: str) -> Path:
    return ADAPTERS_DIR / ALIGNED_MODELS[name].adapter


def read_recipe(adapter: Path) -> dict:
    return json.loads((adapter / RECIPE_FILE).read_text())


def checked_adapter_sha256(adapter: Path) -> str:
    """The adapter file's sha256, after checking it against the one its recipe records."""
    recipe = read_recipe(adapter)
    actual = sha256_file(adapter / recipe["adapter_file"])
    if actual != recipe["adapter_sha256"]:
        raise ValueError(f"{adapter / recipe['adapter_file']} does not match the sha256 in its {RECIPE_FILE}; reinstall sclora-tools.")
    return actual


def materialize(name: str, cache_dir: str | os.PathLike | None = None, progress: embedded.Progress | None = None) -> Path:
    """Directory holding the embedded base with the shipped adapter merged in (float32), built on first use."""
    report = progress or (lambda message: None)
    adapter = adapter_dir(name)
    adapter_sha256 = checked_adapter_sha256(adapter)
    base_dir = embedded.materialize(ALIGNED_MODELS[name].base, cache_dir, progress)
    expected = {"adapter_sha256": adapter_sha256, "base_gguf_sha256": embedded.read_manifest(base_dir)["gguf_sha256"]}
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_root()
    target = root / "models" / name / adapter_sha256[:16]
    if embedded.is_complete(target, expected):
        return target
    with output_lock(target, wait=embedded.WAIT_SECONDS, on_wait=lambda: report(f"Waiting for another process to materialise {name}")):
        if embedded.is_complete(target, expected):
            return target
        with staged_output(target, finished=lambda path: embedded.is_complete(path, expected)) as staging:
            report(f"Merging the shipped safety adapter into {ALIGNED_MODELS[name].base}")
            _write_merged(base_dir, adapter, staging)
            manifest = {"format": embedded.MANIFEST_FORMAT, "short_name": name, "base": ALIGNED_MODELS[name].base,
                        "adapter": adapter.name, **expected, "dtype": embedded.DTYPE, "safetensors": embedded.weight_records(staging)}
            (staging / embedded.MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    report(f"Materialised {name} at {target}")
    return target


def _write_merged(base_dir: Path, adapter: Path, out_dir: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with quiet_libraries():
        model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32, use_safetensors=True, trust_remote_code=False)
        merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
        merged.save_pretrained(out_dir)
        AutoTokenizer.from_pretrained(base_dir, trust_remote_code=False).save_pretrained(out_dir)
    for extra in ("generation_config.json", "chat_template.jinja"):
        if (base_dir / extra).is_file() and not (out_dir / extra).is_file():
            (out_dir / extra).write_bytes((base_dir / extra).read_bytes())
