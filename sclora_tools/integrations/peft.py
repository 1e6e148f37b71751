"""SC-LoRA (or any `sclora init --method`) inside your own training loop, in the style of PEFT's
data-driven inits (`preprocess_corda`, `initialize_lora_eva_weights`):

    model = get_peft_model(base, LoraConfig(r=16, lora_alpha=16, target_modules=[...]))
    preprocess_sclora(model, "calib/", beta=0.9)            # or pos=loader_plus, neg=loader_minus
    model.save_pretrained("out/init")                       # the initial adapter, before training
    ...train with Trainer / TRL / your loop...
    model.save_pretrained("out/adapter", path_initial_model_for_weight_conversion="out/init")

Every targeted layer gets A_init, B_init and, IN PLACE, its base weight W_res = W0 - s B_init A_init
(exactly as `sclora init` computes them), so the model's outputs are unchanged at step 0. The
conversion at save time gives a rank-2r LoRA for the ORIGINAL base (PEFT's convention for PiSSA,
CorDA and OLoRA); `model.unload().save_pretrained(...)` keeps the residual base instead.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from torch import nn

from .. import models, ui
from ..calibration.serving import check_serves, sites_for_method
from ..collect import Collector, plan_sites
from ..core.covariance import normalize
from ..core.exact import SUPPORTED_DTYPES
from ..core.layer_init import InitSettings, SiteCovariances, initialize_layer
from ..core.methods import METHODS, SUBSPACE_METHODS
from ..errors import InputError, MismatchError, NumericalError, UsageError
from ..io.covariances import open_covariances
from ..io.manifest import Manifest, load_manifest, verify_files
from ..io.manifest_types import CALIBRATION_ROLES, Role, SiteRecord

PREFIX = "base_model.model."
PLAIN_INITS = (True, False, "gaussian")  # PEFT inits that leave the base weights untouched
MARKER = "sclora_initialized"


def preprocess_sclora(
    model,
    calibration: str | Path | None = None,
    *,
    pos: Iterable | None = None,
    neg: Iterable | None = None,
    method: str = "sclora",
    beta: float = 0.5,
    adapter_name: str = "default",
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Initialise every LoRA layer of `model` (from `get_peft_model`) with `method`, from a
    calibration directory or from + / - data loaders (batches with input_ids and attention_mask).

    Sets lora_A, lora_B and the base weight (W_res) in place; returns per-layer diagnostics and
    the share of Cov+ / Cov- energy inside span(B_init) over all layers."""
    layers = lora_layers(model, adapter_name)
    check_request(model, adapter_name, method, beta, calibration, pos, neg, layers)
    with covariance_source(model, layers, calibration, {Role.POS: pos, Role.NEG: neg}, method, progress) as source:
        results = {}
        with torch.no_grad():
            for index, (name, layer) in enumerate(layers.items()):
                results[name] = initialize_peft_layer(name, layer, adapter_name, source, method, beta, seed, index)
    return summary(results, method, beta)


def lora_layers(model, adapter_name: str) -> dict[str, nn.Module]:
    """{module name in the base model: LoRA layer} for every layer carrying `adapter_name`."""
    from peft import PeftModel
    from peft.tuners.lora.layer import LoraLayer

    if not isinstance(model, PeftModel):
        raise UsageError("preprocess_sclora needs the model returned by get_peft_model(base, LoraConfig(...)); wrap the base model first.")
    if adapter_name not in model.peft_config:
        raise UsageError(f"the model has no adapter {adapter_name!r}; pass adapter_name= one of {', '.join(model.peft_config)}.")
    layers = {name.removeprefix(PREFIX): module for name, module in model.named_modules()
              if isinstance(module, LoraLayer) and adapter_name in module.lora_A}
    unsupported = [name for name, layer in layers.items() if not isinstance(layer.get_base_layer(), nn.Linear)]
    if unsupported:
        raise UsageError(f"{unsupported[0]} is not a linear layer; sclora initialises LoRA on nn.Linear targets only, drop it from target_modules.")
    return layers


def check_request(model, adapter_name, method, beta, calibration, pos, neg, layers) -> None:
    config = model.peft_config[adapter_name]
    if getattr(config, "peft_type", None) is None or str(config.peft_type.value) != "LORA":
        raise UsageError("preprocess_sclora initialises LoRA adapters; build the model with a LoraConfig.")
    if config.use_dora or config.lora_bias:
        raise UsageError("DoRA and lora_bias change what B A means; build the LoraConfig without use_dora and lora_bias.")
    if config.init_lora_weights not in PLAIN_INITS:
        raise UsageError(f"init_lora_weights={config.init_lora_weights!r} already changed the base weights; "
                         "build the model with the default init_lora_weights=True.")
    if method not in METHODS:
        raise UsageError(f"method {method!r} is unknown; choose one of {', '.join(METHODS)}.")
    if not 0.0 <= beta <= 1.0:
        raise UsageError(f"beta must lie in [0, 1], got {beta}; 0 favours the new task, 1 favours preservation.")
    done = [name for name, layer in layers.items() if adapter_name in getattr(layer, MARKER, ())]
    if done:
        raise UsageError(f"{done[0]} was already initialised by preprocess_sclora; build a fresh model with get_peft_model.")
    if calibration is not None and (pos is not None or neg is not None):
        raise UsageError("pass either a calibration directory or pos= / neg= data loaders, not both.")
    given = {Role.POS: pos, Role.NEG: neg}
    missing = [Role.parse(role) for role in METHODS[method].roles if calibration is None and given[Role.parse(role)] is None]
    if missing:
        flags = " and ".join(f"{role.short}=" for role in missing)
        raise UsageError(f"method {method} needs {flags} data loaders (or a calibration directory); pass them.")


class Covariances:
    """Where the covariances are (a calibration's typed manifest, or one made up for the sites the
    data loaders were collected at) and a reader `read(role, key)`."""

    def __init__(self, calibration: Manifest, read) -> None:
        self.calibration = calibration
        self.read = read

    def site_covariances(self, site: SiteRecord | None, roles: tuple[Role, ...]) -> SiteCovariances:
        if site is None:
            return SiteCovariances(None, None, "input")
        return SiteCovariances(*(self.read(role, site.key) if role in roles else None for role in CALIBRATION_ROLES), site.side)


def sites_manifest(sites: list[dict]) -> Manifest:
    return Manifest.from_dict({"kind": "calibration", "config": {"sites": sites}})


@contextlib.contextmanager
def covariance_source(model, layers, calibration, loaders: dict, method: str, progress: bool) -> Iterator[Covariances]:
    if calibration is not None:
        with calibration_source(Path(calibration), model, layers, method) as source:
            yield source
    elif method == "lora" or all(loader is None for loader in loaders.values()):
        yield Covariances(sites_manifest([]), lambda role, key: None)  # nothing to read (PiSSA, MiLoRA, OLoRA, LoRA)
    else:
        yield loader_source(model, layers, loaders, method, progress)


@contextlib.contextmanager
def calibration_source(directory: Path, model, layers: dict, method: str) -> Iterator[Covariances]:
    calibration = load_manifest(directory, "calibration")
    verify_files(directory, calibration)
    check_serves(calibration, method)
    check_same_model(calibration, model, layers)
    with open_covariances(directory, Role.POS) as pos, open_covariances(directory, Role.NEG) as neg:
        files = {Role.POS: pos, Role.NEG: neg}
        yield Covariances(calibration, lambda role, key: files[role].get(key))


def check_same_model(calibration: Manifest, model, layers: dict) -> None:
    """Every targeted layer was calibrated, and the model is the calibrated one (by name, or by
    the sha256 of its weight files when it was loaded from another local directory)."""
    calibrated = calibration.config.site_of_target()
    missing = [name for name in layers if name not in calibrated]
    if missing:
        raise MismatchError(f"{missing[0]} was not calibrated in this calibration; calibrate with --targets covering every LoRA target.")
    source = str(getattr(model.get_base_model(), "name_or_path", "") or "")
    recorded = calibration.model
    if source in {recorded.id, recorded.spec, recorded.path}:
        return
    if source and Path(source).is_dir() and models.weight_file_hashes(Path(source)) == recorded.weight_files:
        return
    raise MismatchError(f"the model ({source or 'unnamed'}) is not the one this calibration was made for ({recorded.id}); "
                        "calibrate this model or load the calibrated one.")


def loader_source(model, layers: dict, loaders: dict, method: str, progress: bool) -> Covariances:
    """Collect the covariances in memory with one pass per data loader, adapters disabled."""
    inner = model.get_base_model()
    device = next(inner.parameters()).device
    was_training = inner.training
    inner.eval()
    try:
        with model.disable_adapter():
            groups = models.shared_input_groups(inner, list(layers), device)
            sites = plan_sites(inner, groups, every_input=METHODS[method].site == "input")
            covariances = {role: collect(inner, sites, loader, device, role, progress) for role, loader in loaders.items() if loader is not None}
    finally:
        inner.train(was_training)
    records = [{"key": s.key, "module": s.module, "side": s.side, "dim": s.dim, "serves": list(s.serves)} for s in sites]
    return Covariances(sites_manifest(records), lambda role, key: covariances[role][key] if role in covariances else None)


def batch_tensors(batch, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, boolean mask of real tokens) from a dict batch or a plain tensor of ids."""
    ids = batch["input_ids"] if isinstance(batch, dict) or hasattr(batch, "keys") else batch
    if not isinstance(ids, torch.Tensor):
        raise InputError("each data loader batch must hold an input_ids tensor (a dict with input_ids and attention_mask).")
    mask = batch.get("attention_mask") if hasattr(batch, "get") else None
    mask = torch.ones_like(ids, dtype=torch.bool) if mask is None else mask.bool()
    return ids.to(device), mask.to(device)


def collect(inner, sites, loader, device, role: str, progress: bool) -> dict[str, torch.Tensor]:
    decoder = inner.get_decoder() if hasattr(inner, "get_decoder") else inner
    samples = 0
    with Collector(inner, sites, torch.float64, device) as collector, torch.inference_mode(), ui.progress_bar(progress) as bar:
        task = bar.add_task(f"covariances {role}", total=None, rate="")
        for batch in loader:
            input_ids, mask = batch_tensors(batch, device)
            collector.mask = mask
            decoder(input_ids=input_ids, attention_mask=mask.long(), use_cache=False)
            samples += input_ids.shape[0]
            bar.update(task, advance=input_ids.shape[0])
    if samples == 0 or any(moment.tokens == 0 for moment in collector.moments.values()):
        raise InputError(f"the {role.short} data loader gave no tokens; pass a loader with at least one non-empty batch.")
    return {key: normalize(moment.total, moment.tokens, samples, "token").cpu() for key, moment in collector.moments.items()}


def initialize_peft_layer(name, layer, adapter_name, source: Covariances, method, beta, seed, index) -> dict:
    """One layer: the same computation as `sclora init`, written into the PEFT layer in place."""
    base = layer.get_base_layer()
    settings = layer_settings(name, layer, adapter_name, method, beta, seed)
    covariances, energy = layer_covariances(name, source, method)
    try:
        result = initialize_layer(base.weight.detach().cpu(), covariances.pos, covariances.neg, covariances.side, settings, index, energy)
    except ValueError as exc:
        raise NumericalError(f"{method} failed on {name} ({exc}); check the covariances it was given.") from exc
    layer.lora_A[adapter_name].weight.copy_(result.a)
    layer.lora_B[adapter_name].weight.copy_(result.b)
    base.weight.copy_(result.w_res)
    setattr(layer, MARKER, {*getattr(layer, MARKER, ()), adapter_name})
    return result.diagnostics


def layer_settings(name, layer, adapter_name, method, beta, seed) -> InitSettings:
    """r, alpha and rslora of this layer (rank_pattern / alpha_pattern included), checked."""
    weight = layer.get_base_layer().weight
    if weight.dtype not in SUPPORTED_DTYPES:
        raise UsageError(f"{name} holds {weight.dtype} weights; sclora initialises float32, bfloat16 or float16 base weights (not quantised ones).")
    settings = InitSettings(method=method, beta=beta, rank=layer.r[adapter_name], alpha=float(layer.lora_alpha[adapter_name]),
                            seed=seed, rslora=bool(layer.use_rslora[adapter_name]))
    if not math.isclose(settings.scale, layer.scaling[adapter_name], rel_tol=1e-12):
        raise UsageError(f"{name} scales its adapter by {layer.scaling[adapter_name]}, not alpha / r; reset the adapter scale before initialising.")
    if settings.rank > min(weight.shape):
        raise UsageError(f"r = {settings.rank} exceeds min(d_out, d_in) = {min(weight.shape)} of {name}; choose a smaller r.")
    return settings


def layer_covariances(name: str, source: Covariances, method: str) -> tuple[SiteCovariances, SiteCovariances | None]:
    """(what the method reads, the SC-LoRA site for the energy diagnostics) of one layer."""
    spec = METHODS[method]
    energy = source.site_covariances(source.calibration.config.site_of_target().get(name), CALIBRATION_ROLES) \
        if method in SUBSPACE_METHODS else None
    read = sites_for_method(source.calibration, method).get(name) if spec.site else None
    if spec.site == "input" and read is None:
        raise InputError(f"{name} has no input-side covariance, which {method} needs; calibrate with --for {method}.")
    return source.site_covariances(read, tuple(Role.parse(role) for role in spec.roles)), energy


def summary(results: dict[str, dict], method: str, beta: float) -> dict:
    out = {"method": method, "beta": beta if METHODS[method].uses_beta else None, "layers": results}
    for label in (role.short for role in CALIBRATION_ROLES):
        if results and all(f"captured_{label}" in d for d in results.values()):
            trace = sum(d[f"trace_{label}"] for d in results.values())
            out[f"energy_{label}"] = sum(d[f"captured_{label}"] for d in results.values()) / trace if trace > 0 else 0.0
    return out

