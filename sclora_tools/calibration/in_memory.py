"""The simple engine: the whole model in memory, every batch through the decoder with the
collector's hooks on every site, running sums checkpointed every N batches."""

from __future__ import annotations

import time

import torch
from torch import nn

from .. import ui
from ..collect import Collector, Site
from ..core.covariance import SecondMoment
from ..io.manifest_types import Role
from . import batches as batching
from .resume import Checkpointer


def collect_role(
    net: nn.Module,
    sites: list[Site],
    samples: list[batching.Sample],
    batch_size: int,
    accumulate: torch.dtype,
    role: Role,
    checkpointer: Checkpointer,
    progress: bool,
) -> dict[str, SecondMoment]:
    """Running sums of one dataset's real tokens at every site (resumed where a checkpoint says)."""
    decoder = net.get_decoder() if hasattr(net, "get_decoder") else net
    pad_id = getattr(net.config, "pad_token_id", None) or 0
    groups = batching.batched(samples, batch_size)
    device = next(net.parameters()).device
    collector = Collector(net, sites, accumulate, device)
    done = checkpointer.restore(role, collector.moments)
    with collector, torch.inference_mode(), ui.progress_bar(progress) as bar:
        task = bar.add_task(f"calibrate {role.short}", total=len(samples), completed=sum(len(g) for g in groups[:done]), rate="")
        tokens, started = 0, time.time()
        for index in range(done, len(groups)):
            input_ids, mask = batching.padded(groups[index], pad_id, device)
            collector.mask = mask
            decoder(input_ids=input_ids, attention_mask=mask.long(), use_cache=False)
            tokens += int(mask.sum())
            bar.update(task, advance=input_ids.shape[0], rate=ui.tokens_per_second(tokens, started))
            if checkpointer.due(index + 1):
                checkpointer.save(role, collector.moments, index + 1)
    if not checkpointer.complete(role):
        checkpointer.save(role, collector.moments, len(groups), complete=True)
    return collector.moments
