"""The testbeds' grids enumerate every row the tables promise, with its method, train-time flags
and rate rule (examples/testbed_common/grid.py, safety_testbed/run.py, knowledge_testbed/run.py)."""

from __future__ import annotations

from argparse import Namespace
from pathlib import Path

import pytest
from testbed_common.cli import rate_rule
from testbed_common.grid import MATCHED, Config, RateRule, Store, Training, arms, matched_rate, needs_probe, plan, probe_points, run_grid

from tests.examples.testbeds import load_script

safety = load_script("safety_testbed/run.py", "safety_testbed_run")
knowledge = load_script("knowledge_testbed/run.py", "knowledge_testbed_run")

# name -> (method, beta, freeze_a, freeze_b, rates): what issue 15 asks the safety table to hold
SAFETY_ROWS = {
    "LoRA": ("lora", 0.0, False, False, (2e-3,)),
    "SC-LoRA b=0.5": ("sclora", 0.5, False, False, (MATCHED,)),
    "SC-LoRA b=0.9": ("sclora", 0.9, False, False, (2.2e-4, 2e-3)),
    "SC-LoRA b=0.99": ("sclora", 0.99, False, False, (5.5e-4,)),
    "SC-LoRA b=0.9 locked": ("sclora", 0.9, False, True, (1.3e-3, 2e-3)),
    "SC-LoRA b=0.99 locked": ("sclora", 0.99, False, True, (MATCHED,)),
    "PiSSA": ("pissa", 0.0, False, False, (MATCHED,)),
    "CorDA IPA": ("corda-ipa", 0.0, False, False, (MATCHED,)),
    "CorDA KPA": ("corda-kpa", 0.0, False, False, (MATCHED,)),
    "LoRA-Null": ("lora-null", 0.0, False, False, (MATCHED,)),
    "LoRA-Null frozen A": ("lora-null", 0.0, True, False, (MATCHED,)),
}
KNOWLEDGE_ROWS = {
    "LoRA": ("lora", 0.0, False, False, (2e-3,)),
    "PiSSA": ("pissa", 0.0, False, False, (MATCHED,)),
    "CorDA KPA": ("corda-kpa", 0.0, False, False, (MATCHED,)),
    "LoRA-Null": ("lora-null", 0.0, False, False, (MATCHED,)),
    "SC-LoRA b=0.5": ("sclora", 0.5, False, False, (MATCHED,)),
    "SC-LoRA b=0.8": ("sclora", 0.8, False, False, (MATCHED,)),
}
TRAINING = Training(steps=30, rank=32, batch_size=4, max_length=320)


def flags(config: Config) -> tuple:
    return (config.method, config.beta, config.freeze_a, config.freeze_b, config.rates)


@pytest.mark.parametrize("module,expected", [(safety, SAFETY_ROWS), (knowledge, KNOWLEDGE_ROWS)], ids=["safety", "knowledge"])
def test_every_row_has_its_method_flags_and_rates(module, expected):
    assert {c.name: flags(c) for c in module.CONFIGS} == expected
    assert module.RULE == RateRule(reference="LoRA", lr=2e-3, probe_lr=2e-3)


@pytest.mark.parametrize("module", [safety, knowledge], ids=["safety", "knowledge"])
def test_plan_has_every_row_at_every_seed_once_the_rates_are_measured(module, tmp_path):
    measured = {c.name: 1e-4 * (i + 1) for i, c in enumerate(module.CONFIGS) if MATCHED in c.rates}
    jobs = plan(module.CONFIGS, measured, [0, 1, 2], None, tmp_path, TRAINING, 1, module.evaluate_run, {})
    expected = {(c.name, measured[c.name] if r == MATCHED else r, seed) for c in module.CONFIGS for r in c.rates for seed in (0, 1, 2)}
    assert {(j["config"]["name"], j["lr"], j["seed"]) for j in jobs} == expected
    assert len(jobs) == len(expected)
    assert [j["seed"] for j in jobs] == sorted(j["seed"] for j in jobs), "seed by seed"
    for job in jobs:
        assert flags(Config(**job["config"]))[:4] == expected_flags(module, job["config"]["name"])
        assert job["training"] == {"steps": 30, "rank": 32, "batch_size": 4, "max_length": 320, "data": None}
        assert job["evaluator"] is module.evaluate_run


def expected_flags(module, name: str) -> tuple:
    rows = SAFETY_ROWS if module is safety else KNOWLEDGE_ROWS
    return rows[name][:4]


def test_inits_are_shared_where_the_init_does_not_depend_on_the_seed_or_the_lock(tmp_path):
    jobs = plan(safety.CONFIGS, {c.name: 1e-4 for c in safety.CONFIGS}, [0, 1], None, tmp_path, TRAINING, 1, None, {})
    inits = {(j["config"]["name"], j["seed"]): Path(j["init"]).name for j in jobs}
    assert inits[("LoRA", 0)] == "lora-s0" and inits[("LoRA", 1)] == "lora-s1"
    assert inits[("SC-LoRA b=0.9", 1)] == inits[("SC-LoRA b=0.9 locked", 0)] == "sclora-b0.9"
    assert inits[("LoRA-Null", 0)] == inits[("LoRA-Null frozen A", 1)] == "lora-null"
    assert inits[("PiSSA", 0)] == inits[("PiSSA", 1)] == "pissa"
    assert all(Path(j["dir"]).parent.name == "probes" for j in jobs), "evaluator None marks a probe"


def test_matched_rows_wait_for_their_probe_and_lrs_skips_them():
    assert {c.name for c, _ in arms(safety.CONFIGS, {}, None)} == {"LoRA", "SC-LoRA b=0.9", "SC-LoRA b=0.99", "SC-LoRA b=0.9 locked"}
    assert needs_probe(safety.CONFIGS, None) and not needs_probe(safety.CONFIGS, [2e-3])
    assert not needs_probe([c for c in safety.CONFIGS if MATCHED not in c.rates], None)
    assert [(c.name, lr) for c, lr in arms(safety.CONFIGS, {"PiSSA": 3e-4}, [2e-3, 3e-4])] == [
        ("LoRA", 2e-3), ("SC-LoRA b=0.9", 2e-3), ("SC-LoRA b=0.9 locked", 2e-3), ("PiSSA", 3e-4)]


def test_probes_are_the_reference_at_its_rate_and_each_matched_row_at_the_probe_rate():
    points = probe_points(safety.CONFIGS, safety.CONFIGS, safety.RULE)
    assert points[0][0].name == "LoRA" and points[0][1] == 2e-3
    assert {c.name for c, _ in points[1:]} == {n for n, row in SAFETY_ROWS.items() if MATCHED in row[4]}
    assert {lr for _, lr in points[1:]} == {2e-3}


def test_matched_rate_reproduces_the_rates_of_the_first_safety_pass():
    """2026-11-23, seed 0: LoRA |dW|_F 13.9 at 2e-3, SC-LoRA b=0.9 126 at 2e-3 -> 2.2e-4."""
    assert matched_rate(2e-3, 126.38, 13.915) == 2.2e-4
    assert matched_rate(2e-3, 13.915, 13.915) == 2e-3
    with pytest.raises(ValueError):
        matched_rate(2e-3, float("nan"), 13.9)
    with pytest.raises(ValueError):
        matched_rate(2e-3, 0.0, 13.9)


def test_rate_rule_names_each_rate():
    rule, by_name = safety.RULE, {c.name: c for c in safety.CONFIGS}
    assert rule.describe(by_name["LoRA"], 2e-3) == "reference"
    assert rule.describe(by_name["SC-LoRA b=0.9"], 2e-3) == "equal lr"
    assert rule.describe(by_name["SC-LoRA b=0.9"], 2.2e-4).startswith("matched update norm")
    assert rule.describe(by_name["PiSSA"], MATCHED).startswith("matched update norm")


def test_the_safety_grid_is_chosen_by_name():
    args = Namespace(configs=["PiSSA", "LoRA"])
    assert [c.name for c in safety.chosen(safety.CONFIGS, args)] == ["LoRA", "PiSSA"]


def test_a_diverged_probe_stops_the_grid_with_a_sentence(tmp_path):
    configs = [Config("LoRA", "lora", rates=(2e-3,)), Config("PiSSA", "pissa")]
    rule = RateRule(reference="LoRA", lr=2e-3, probe_lr=2e-3)
    store = Store(tmp_path, {"s": 1})
    store.add_row({"config": "LoRA", "lr": 2e-3, "seed": 0, "update_norm": 13.9})
    store.add_probe({"config": "PiSSA", "lr": 2e-3, "seed": 0, "update_norm": float("nan"), "train_seconds": 1.0})
    args = Namespace(lrs=None, seeds=[0], out=tmp_path, jobs=1)
    with pytest.raises(SystemExit, match="PiSSA: .*lower --probe-lr"):
        run_grid(Store(tmp_path, {"s": 1}), configs, configs, rule, args, tmp_path / "calib", TRAINING, None, {})


def test_probe_lr_option_replaces_the_scripts_probe_rate():
    assert rate_rule(safety.RULE, Namespace(probe_lr=None)) == safety.RULE
    assert rate_rule(safety.RULE, Namespace(probe_lr=5e-4)) == RateRule(reference="LoRA", lr=2e-3, probe_lr=5e-4)
