"""Calibration of models larger than memory, one decoder block at a time (llm-compressor's
sequential onloading, AutoAWQ's layer loop).

The model is built without weights (meta device). The embeddings are loaded and every batch is
run up to the first block, recording each block's call (hidden states in, and the keyword
arguments the model passes it: attention mask, position embeddings, ...); the embeddings are
freed. Then per block: its weights are read from the safetensors shards, every batch of both
datasets runs through it with the collector's hooks, its sites are finished (summed over ranks,
normalised, written), the block is freed and its outputs are the next block's inputs.
Peak memory: one block, the batches' hidden states (spilled to disk beyond a budget), and one
block's accumulators.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .. import models, ui
from ..collect import Collector, Site
from ..core.covariance import SecondMoment
from ..errors import InputError
from ..io import memory
from ..io.manifest_types import Role
from . import batches as batching
from . import placement
from .distributed import Ranks
from .hidden_store import HiddenStore

HIDDEN_BUDGET_FRACTION = 0.25  # of the memory available when the capture starts


def skeleton(source: models.ModelSource, compute_dtype: torch.dtype, trust_remote_code: bool) -> nn.Module:
    """The model with every parameter on the meta device (no memory) and real buffers (rotary
    frequencies and the like are computed at construction, not stored in checkpoints)."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(source.path, trust_remote_code=trust_remote_code)
    with init_empty_weights(include_buffers=False):
        net = AutoModelForCausalLM.from_config(config, dtype=compute_dtype, trust_remote_code=trust_remote_code)
    return net.eval()


class _LastBlockReachedError(Exception):
    """Raised by the last block's recorder: nothing after the blocks is needed."""


@dataclass
class BlockCall:
    """How the model calls one block: positional arguments after the hidden states, and keywords."""

    args: tuple
    kwargs: dict


@dataclass
class CapturedBatch:
    role: Role
    mask: torch.Tensor
    calls: list[BlockCall]


class BlockRunner:
    """Runs a weightless model (`skeleton`) block by block, reading each block from `reader`."""

    def __init__(self, net: nn.Module, reader, device: torch.device, spill_parent: Path, progress: bool) -> None:
        memory.return_large_blocks_to_the_os()  # a freed block goes back to the OS, not to the heap
        self.net, self.reader, self.device, self.progress = net, reader, device, progress
        self.decoder = net.get_decoder() if hasattr(net, "get_decoder") else net
        self.blocks = models.decoder_blocks(net)
        names = {id(module): name for name, module in net.named_modules()}
        self.block_names = [names[id(block)] for block in self.blocks]
        self.dtype = next(net.parameters()).dtype
        self.pad_id = getattr(net.config, "pad_token_id", None) or 0
        self.captured: list[CapturedBatch] = []
        self.roles: list[Role] = []
        self.store = HiddenStore(0, spill_parent, device)

    def check_sites(self, sites: list[Site]) -> None:
        for site in sites:
            self.block_of(site)

    def block_of(self, site: Site) -> int:
        for index, name in enumerate(self.block_names):
            if site.module.startswith(name + "."):
                return index
        raise InputError(f"{site.module} is not inside a decoder block, which sequential calibration needs; run with --sequential off.")

    def capture(self, shards: dict[Role, list[batching.Sample]], batch_size: int) -> None:
        """Run every batch up to the first block; remember its hidden states and every block's call."""
        self.store.budget = int(HIDDEN_BUDGET_FRACTION * placement.available_memory(self.device))
        self.roles = list(shards)  # every rank finishes every dataset, even one with no samples here
        outside = self.parameters_outside_blocks()
        with torch.inference_mode():
            self.load(self.net, outside)
            for role, samples in shards.items():
                for batch in batching.batched(samples, batch_size):
                    input_ids, mask = batching.padded(batch, self.pad_id, self.device)
                    hidden, calls = self.record_calls(input_ids, mask)
                    self.store.put(len(self.captured), hidden)
                    self.captured.append(CapturedBatch(role, mask, calls))
            self.release(self.net, outside)

    def record_calls(self, input_ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, list[BlockCall]]:
        calls: list[BlockCall | None] = [None] * len(self.blocks)
        first_hidden: list[torch.Tensor] = []
        with recording(self.blocks, calls, first_hidden), contextlib.suppress(_LastBlockReachedError):
            self.decoder(input_ids=input_ids, attention_mask=mask.long(), use_cache=False)
        if not first_hidden or any(call is None for call in calls):
            raise InputError("the model does not call its decoder blocks in order, which sequential calibration needs; run with --sequential off.")
        return first_hidden[0], calls

    def collect(self, sites: list[Site], accumulate: torch.dtype, sink, ranks: Ranks) -> None:
        """Per block: load, run every batch through it with hooks, finish its sites, free it."""
        by_block: dict[int, list[Site]] = {}
        for site in sites:
            by_block.setdefault(self.block_of(site), []).append(site)
        with ui.progress_bar(self.progress) as bar:
            task = bar.add_task("calibrate (sequential)", total=len(self.blocks), rate="")
            started, tokens = time.time(), 0
            for index, block in enumerate(self.blocks):
                self.run_block(index, block, by_block.get(index, []), accumulate, sink, ranks)
                tokens += sum(int(batch.mask.sum()) for batch in self.captured)
                bar.update(task, advance=1, rate=ui.tokens_per_second(tokens, started))
        self.store.close()

    def run_block(self, index: int, block: nn.Module, sites: list[Site], accumulate, sink, ranks: Ranks) -> None:
        """One dataset after the other, so only one dataset's accumulators exist at a time."""
        names = [name for name, _ in block.named_parameters()]
        with ranks.phase():
            self.load(block, names, self.block_names[index])
        for role in self.roles:
            with ranks.phase():
                moments = self.run_batches(index, block, sites, role, accumulate)
            sink.finish(role, moments)
            del moments
        self.release(block, names)

    def run_batches(self, index: int, block: nn.Module, sites: list[Site], role: Role, accumulate) -> dict[str, SecondMoment]:
        with Collector(self.net, sites, accumulate, self.device) as collector, torch.inference_mode():
            for batch_index, batch in enumerate(self.captured):
                if batch.role == role:
                    collector.mask = batch.mask
                    output = block(self.store.get(batch_index), *batch.calls[index].args, **batch.calls[index].kwargs)
                    self.store.put(batch_index, output[0] if isinstance(output, tuple) else output)
        return collector.moments

    def shared_input_groups(self, targets: list[str]) -> list[list[str]]:
        """models.shared_input_groups without the weights: the same short dummy pass, block by
        block with uninitialised weights (only which tensor reaches which layer matters)."""
        outside = self.parameters_outside_blocks()
        seen: dict[str, torch.Tensor] = {}
        modules = dict(self.net.named_modules())
        with torch.inference_mode():
            self.load(self.net, outside, uninitialised=True)
            vocab = getattr(self.net.config, "vocab_size", 16)
            ids = torch.arange(1, 5, device=self.device).remainder(vocab).unsqueeze(0)
            hidden, calls = self.record_calls(ids, torch.ones_like(ids, dtype=torch.bool))
            self.release(self.net, outside)
            for index, block in enumerate(self.blocks):
                names = [name for name, _ in block.named_parameters()]
                self.load(block, names, self.block_names[index], uninitialised=True)
                inside = [name for name in targets if name.startswith(self.block_names[index] + ".")]
                handles = [modules[name].register_forward_pre_hook(models.remember_input(name, seen)) for name in inside]
                output = block(hidden, *calls[index].args, **calls[index].kwargs)
                hidden = output[0] if isinstance(output, tuple) else output
                for handle in handles:
                    handle.remove()
                self.release(block, names)
        return models.group_by_input(targets, seen)

    def parameters_outside_blocks(self) -> list[str]:
        inside = {id(parameter) for block in self.blocks for parameter in block.parameters()}
        return [name for name, parameter in self.net.named_parameters() if id(parameter) not in inside and name.startswith(self.decoder_prefix())]

    def decoder_prefix(self) -> str:
        return next(name for name, module in self.net.named_modules() if module is self.decoder)

    def load(self, module: nn.Module, names: list[str], prefix: str = "", uninitialised: bool = False) -> None:
        """Read `names` (parameters of `module`) from the checkpoint onto the device, or only
        allocate them (`uninitialised`)."""
        from accelerate.utils import set_module_tensor_to_device

        for name in names:
            key = f"{prefix}.{name}" if prefix else name
            if key not in self.reader:
                raise InputError(f"the checkpoint stores no tensor {key}, which sequential calibration reads by module name; "
                                 "run with --sequential off.")
            if uninitialised:
                tensor = torch.empty(self.reader.shape_of(key), dtype=self.dtype)
            else:
                tensor = self.reader.read(key)
                models.check_finite_weight(key, tensor)
            set_module_tensor_to_device(module, name, self.device, value=tensor.to(self.dtype) if tensor.is_floating_point() else tensor)

    def release(self, module: nn.Module, names: list[str]) -> None:
        from accelerate.utils import set_module_tensor_to_device

        for name in names:
            set_module_tensor_to_device(module, name, "meta")
        memory.trim()


@contextlib.contextmanager
def recording(blocks: nn.ModuleList, calls: list, first_hidden: list):
    """Replace every block's forward by a recorder that passes the hidden states through."""
    last = len(blocks) - 1

    def recorder(index: int):
        def forward(*args, **kwargs):
            hidden = args[0] if args else kwargs.pop("hidden_states")
            if index == 0:
                first_hidden.append(hidden)
            calls[index] = BlockCall(tuple(args[1:]), dict(kwargs))
            if index == last:
                raise _LastBlockReachedError
            return hidden

        return forward

    for index, block in enumerate(blocks):
        block.forward = recorder(index)
    try:
        yield
    finally:
        for block in blocks:
            del block.forward

