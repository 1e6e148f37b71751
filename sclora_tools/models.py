"""Model resolution (Hub id[@revision], local directory, embedded short name), loading, and the
discovery of target layers and of which targets share one input."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import aligned, embedded, ui
from .core.finite import all_finite
from .errors import InputError, NumericalError, UsageError
from .io import hash_cache
from .io.checkpoint import weight_files
from .io.hub import hub_endpoint, hub_offline

HUB_FILE_PATTERNS = ["*.safetensors", "*.safetensors.index.json", "*.json", "*.model", "*.txt", "*.jinja", "tokenizer*"]
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


@dataclass(frozen=True)
class ModelSource:
    """Where a model's files are and what they are: what the user asked for, the Hub id and
    resolved revision (None for a local directory), and the local directory to read."""

    spec: str
    repo_id: str | None
    revision: str | None
    path: Path

    def describe(self) -> dict:
        return {"spec": self.spec, "id": self.repo_id or str(self.path), "revision": self.revision, "path": str(self.path)}


def resolve_model(spec: str) -> ModelSource:
    """A local directory, an embedded short name, or a Hub id with an optional @revision."""
    local = Path(spec).expanduser()
    if local.is_dir():
        weight_files(local)
        return ModelSource(spec=spec, repo_id=None, revision=None, path=local.resolve())
    if embedded.is_embedded(spec) or aligned.is_aligned(spec):
        return materialized(spec)
    return download_model(spec)


def materialized(spec: str) -> ModelSource:
    """An embedded model, or the shipped aligned start made from one, built into the cache on first use."""
    aligned_start = aligned.is_aligned(spec)
    build = aligned.materialize if aligned_start else embedded.materialize
    try:
        path = build(spec, progress=lambda message: ui.console.print(message) if not ui.quiet() else None)
    except (FileNotFoundError, ValueError) as exc:
        raise InputError(str(exc)) from exc
    manifest = embedded.read_manifest(path)
    revision = manifest["adapter_sha256"] if aligned_start else manifest["gguf_sha256"]
    return ModelSource(spec=spec, repo_id=spec, revision=revision, path=path)


def download_model(spec: str) -> ModelSource:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    repo_id, _, revision = spec.partition("@")
    if repo_id.count("/") != 1 or repo_id.startswith(("/", ".")):
        raise InputError(f"model {spec!r} is neither a local directory nor a Hub id like ORG/NAME[@revision]; check the path.")
    offline = hub_offline()
    try:
        path = Path(snapshot_download(repo_id, revision=revision or None, allow_patterns=HUB_FILE_PATTERNS, local_files_only=offline,
                                      endpoint=hub_endpoint()))
    except (LocalEntryNotFoundError, RepositoryNotFoundError, HfHubHTTPError, OSError) as exc:
        offline = " (HF_HUB_OFFLINE is set and it is not in the local cache)" if offline else ""
        raise InputError(f"cannot fetch model {spec!r} from the Hub{offline}; pass a local model directory instead.") from exc
    weight_files(path)
    return ModelSource(spec=spec, repo_id=repo_id, revision=path.name, path=path)


def weight_file_hashes(path: Path) -> dict[str, str]:
    """sha256 of each weight file, remembered across stages for unchanged files (io.hash_cache)."""
    hashes = hash_cache.sha256_files(weight_files(path), hash_cache.cache_file())
    return {file.name: digest for file, digest in hashes.items()}


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N.") from None


def pick_dtype(name: str, checkpoint_dtype: torch.dtype) -> torch.dtype:
    if name == "auto":
        return checkpoint_dtype
    if name not in DTYPES:
        raise UsageError(f"unknown dtype {name!r}; use auto, float32, bfloat16 or float16.")
    return DTYPES[name]


def load_model(source: ModelSource, dtype: torch.dtype, device: torch.device, trust_remote_code: bool = False,
               device_map: str | None = None) -> nn.Module:
    """The model on `device`, or placed by accelerate when `device_map` is given (e.g. "auto")."""
    from transformers import AutoModelForCausalLM

    with remote_code_refused(source.path), quiet_loading():
        model = AutoModelForCausalLM.from_pretrained(
            source.path, dtype=dtype, use_safetensors=True, trust_remote_code=trust_remote_code, device_map=device_map
        )
    return (model if device_map else model.to(device)).eval()


def check_finite_weights(model: nn.Module) -> None:
    """NaN or Inf in a checkpoint would only show up later as a broken covariance: name the weight now."""
    for name, parameter in model.named_parameters():
        check_finite_weight(name, parameter)


def check_finite_weight(name: str, tensor: torch.Tensor) -> None:
    if tensor.is_floating_point() and not all_finite(tensor):
        raise NumericalError(f"the model's weight {name} holds NaN or Inf; the checkpoint is damaged: download or save it again.")


def load_tokenizer(path: Path, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    with remote_code_refused(path), quiet_loading():
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """No "Loading weights" bar, no advice and no deprecation notices (PEFT calls transformers'
    deprecated `is_gradient_checkpointing`) from the libraries while they load: our own output is
    the stage's progress and summary, and a load that fails becomes our one sentence."""
    from transformers.utils import logging as transformers_logging

    was_enabled, verbosity = transformers_logging.is_progress_bar_enabled(), transformers_logging.get_verbosity()
    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|peft)(\.|$)")
            yield
    finally:
        transformers_logging.set_verbosity(verbosity)
        if was_enabled:
            transformers_logging.enable_progress_bar()


@contextlib.contextmanager
def remote_code_refused(path: Path) -> Iterator[None]:
    """transformers' refusal to run a model's own code (auto_map) without trust_remote_code, as one sentence."""
    try:
        yield
    except ValueError as exc:
        if "trust_remote_code" not in str(exc):
            raise
        raise InputError(f"the model in {path} runs its own Python code when it is loaded, which sclora does only when asked: "
                         "pass --trust-remote-code to calibrate if you trust its source.") from exc


def decoder_blocks(model: nn.Module) -> nn.ModuleList:
    """The repeated transformer blocks: the largest ModuleList whose children share one class."""
    best = None
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            if len({type(child) for child in module}) == 1 and (best is None or len(module) > len(best)):
                best = module
    if best is None:
        raise InputError("cannot find the decoder blocks of this model; pass --targets with explicit module names.")
    return best


def discover_targets(model: nn.Module, requested: list[str] | None = None) -> list[str]:
    """Names of the linear layers inside the decoder blocks, optionally filtered by `requested`
    (short names like q_proj, or full module names)."""
    blocks = {id(block) for block in decoder_blocks(model)}
    inside = set()
    for name, module in model.named_modules():
        if id(module) in blocks:
            inside.update(f"{name}.{sub}" for sub, child in module.named_modules() if isinstance(child, nn.Linear))
    names = [name for name, _ in model.named_modules() if name in inside]
    if not requested:
        return names
    chosen = [name for name in names if name in requested or name.rsplit(".", 1)[-1] in requested]
    matched = {part for part in requested if any(n == part or n.rsplit(".", 1)[-1] == part for n in chosen)}
    missing = [part for part in requested if part not in matched]
    if missing:
        short = sorted({n.rsplit(".", 1)[-1] for n in names})
        raise UsageError(f"--targets {','.join(missing)} match no linear layer in the decoder blocks; choose from {','.join(short)}.")
    return chosen


def shared_input_groups(model: nn.Module, targets: list[str], device: torch.device) -> list[list[str]]:
    """Group targets that receive the very same input tensor in one forward pass (e.g. q/k/v).

    Found by running a short dummy sequence with hooks that keep every input alive (so no
    tensor id is reused within the pass); never from a list of known names.
    """
    modules = dict(model.named_modules())
    seen: dict[str, torch.Tensor] = {}
    handles = [modules[name].register_forward_pre_hook(remember_input(name, seen)) for name in targets]
    try:
        with torch.inference_mode():
            vocab = getattr(model.config, "vocab_size", 16)
            ids = torch.arange(1, 5, device=device).remainder(vocab).unsqueeze(0)
            model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return group_by_input(targets, seen)


def group_by_input(targets: list[str], seen: dict[str, torch.Tensor]) -> list[list[str]]:
    """Targets grouped by the identity of the input tensor each received (`seen`)."""
    groups: dict[int, list[str]] = {}
    for name in targets:
        if name not in seen:
            raise InputError(f"layer {name} is never called in a forward pass; remove it from --targets.")
        groups.setdefault(id(seen[name]), []).append(name)
    return list(groups.values())


def remember_input(name: str, seen: dict[str, torch.Tensor]):
    def hook(module, args):
        seen.setdefault(name, args[0])

    return hook
