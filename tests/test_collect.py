"""The collector's hooks: only real tokens reach the running sums, whatever the padding."""

from __future__ import annotations

import pytest
import torch

from sclora_tools import models
from sclora_tools.collect import Collector, plan_sites
from tests.tiny import build_model


def padded_batch(vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    ids = torch.randint(3, vocab_size, (3, 9), generator=generator)
    mask = torch.ones(3, 9, dtype=torch.bool)
    mask[1, 6:] = False
    mask[2, 2:] = False
    return ids, mask


def captured_inputs(net, module_name: str, ids, mask) -> torch.Tensor:
    seen = []
    handle = dict(net.named_modules())[module_name].register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    with torch.inference_mode():
        net.get_decoder()(input_ids=ids, attention_mask=mask.long(), use_cache=False)
    handle.remove()
    return seen[0]


def test_real_tokens_is_the_boolean_selection_of_the_unpadded_rows():
    collector = Collector(torch.nn.Linear(2, 2), [], torch.float64, torch.device("cpu"))
    activations = torch.randn(3, 9, 5)
    for mask in (padded_batch(50)[1], torch.ones(3, 9, dtype=torch.bool)):
        collector.mask = mask
        assert torch.equal(collector.real_tokens(activations), activations[mask])


def test_running_sums_hold_exactly_the_real_tokens_products():
    net = build_model(torch.float32, vocab_size=64)
    targets = models.discover_targets(net)
    sites = plan_sites(net, models.shared_input_groups(net, targets, torch.device("cpu")))
    site = next(s for s in sites if s.side == "input")
    ids, mask = padded_batch(64)
    collector = Collector(net, [site], torch.float64, torch.device("cpu"))
    with collector, torch.inference_mode():
        collector.mask = mask
        net.get_decoder()(input_ids=ids, attention_mask=mask.long(), use_cache=False)
    rows = captured_inputs(net, site.module, ids, mask)[mask].double()
    total = collector.moments[site.key].total
    assert collector.moments[site.key].tokens == int(mask.sum())
    torch.testing.assert_close(total, rows.T @ rows, rtol=1e-5, atol=1e-5)


def test_activations_that_do_not_match_the_batch_are_refused():
    collector = Collector(torch.nn.Linear(2, 2), [], torch.float64, torch.device("cpu"))
    collector.mask = padded_batch(50)[1]
    with pytest.raises(ValueError, match="do not match the batch mask"):
        collector.real_tokens(torch.randn(9, 3, 5))
