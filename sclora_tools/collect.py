"""Forward hooks that feed layer inputs/outputs of real (non-padding) tokens into SecondMoments."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .core.covariance import SecondMoment


@dataclass(frozen=True)
class Site:
    """Where one covariance is collected: the input or the output of `module`.

    An input site serves every target listed in `serves` (targets that share that input)."""

    module: str
    side: str
    dim: int
    serves: tuple[str, ...]

    @property
    def key(self) -> str:
        return f"{self.module}:{self.side}"


def plan_sites(model: nn.Module, groups: list[list[str]], every_input: bool = False) -> list[Site]:
    """Per shared-input group: collect the input once, unless every member has d_out < d_in and
    their outputs together take less memory than the input's (then collect each output).
    `every_input` also collects the input of such groups (input-side methods: CorDA, LoRA-Null)."""
    modules = dict(model.named_modules())
    sites = []
    for group in groups:
        shapes = {name: modules[name].weight.shape for name in group}
        d_in = shapes[group[0]][1]
        output_cost = sum(shape[0] ** 2 for shape in shapes.values())
        if all(shape[0] < d_in for shape in shapes.values()) and output_cost < d_in**2:
            sites.extend(Site(name, "output", shapes[name][0], (name,)) for name in group)
            if not every_input:
                continue
        sites.append(Site(group[0], "input", d_in, tuple(group)))
    return sites


class Collector:
    """Registers hooks for `sites`; `mask` (batch x seq, bool) selects the real tokens."""

    def __init__(self, model: nn.Module, sites: list[Site], accumulate_dtype: torch.dtype, device: torch.device):
        self.model = model
        self.sites = sites
        self.moments = {site.key: SecondMoment(site.dim, accumulate_dtype, device) for site in sites}
        self._mask: torch.Tensor | None = None
        self._all_real = False
        self._real_rows: torch.Tensor | None = None
        self.handles: list = []

    @property
    def mask(self) -> torch.Tensor | None:
        return self._mask

    @mask.setter
    def mask(self, mask: torch.Tensor) -> None:
        self._mask = mask
        self._all_real = bool(mask.all())  # no padding in this batch: use the activations without a gathered copy
        # One nonzero per batch: a boolean index would redo it at every site (120 on SmolLM2), 3x the gather's cost.
        self._real_rows = None if self._all_real else mask.reshape(-1).nonzero().squeeze(1)

    def real_tokens(self, activations: torch.Tensor) -> torch.Tensor:
        if activations.shape[:-1] != self._mask.shape:
            raise ValueError(f"activations of shape {tuple(activations.shape)} do not match the batch mask {tuple(self._mask.shape)}")
        rows = activations.reshape(-1, activations.shape[-1])
        return rows if self._all_real else rows.index_select(0, self._real_rows.to(rows.device))

    def __enter__(self) -> Collector:
        modules = dict(self.model.named_modules())
        for site in self.sites:
            module = modules[site.module]
            if site.side == "input":
                self.handles.append(module.register_forward_pre_hook(self._input_hook(site.key)))
            else:
                self.handles.append(module.register_forward_hook(self._output_hook(site.key, module)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def _input_hook(self, key: str):
        def hook(module, args):
            self.moments[key].add(self.real_tokens(args[0]))

        return hook

    def _output_hook(self, key: str, module: nn.Module):
        bias = getattr(module, "bias", None)

        def hook(module, args, output):
            selected = self.real_tokens(output)
            self.moments[key].add(selected - bias if bias is not None else selected)

        return hook
