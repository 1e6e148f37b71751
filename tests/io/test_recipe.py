"""How to make a model again (sclora_tools/io/recipe.py): the commands a card shows rebuild the same
artefacts when run, and each setting a manifest records is spelled out as its command line option."""

from __future__ import annotations

import json
import shlex
from dataclasses import replace

import pytest

from sclora_tools.cli.app import app
from sclora_tools.io.manifest import Manifest
from sclora_tools.io.manifest_types import DatasetRecord, ModelRecord, Role
from sclora_tools.io.recipe import commands, data_argument, model_argument, targets_argument
from tests.chain import tree_digest
from tests.conftest import PUBLISHED


def stored(directory) -> Manifest:
    return Manifest.from_dict(json.loads((directory / "manifest.json").read_text()))


def test_the_commands_make_the_same_model_again(tiny_chain, runner, tmp_path, monkeypatch):
    original = tiny_chain(**PUBLISHED).merged
    lines = commands(stored(original))
    assert [shlex.split(line)[:2] for line in lines] == [["sclora", "calibrate"], ["sclora", "init"], ["sclora", "train"], ["sclora", "merge"]]
    monkeypatch.chdir(tmp_path)
    for line in lines:
        result = runner.invoke(app, shlex.split(line)[1:])
        assert result.exit_code == 0, (line, result.output)
    again, before = stored(tmp_path / "merged"), stored(original)
    assert again.raw["config"] == before.raw["config"]
    assert [(d.role, d.texts_sha256, d.samples) for d in again.datasets] == [(d.role, d.texts_sha256, d.samples) for d in before.datasets]
    assert tree_digest(tmp_path / "merged" / "merged") == tree_digest(original / "merged")  # the same weights, bit for bit
    assert tree_digest(tmp_path / "merged" / "lora") == tree_digest(original / "lora")


def test_an_eval_report_adds_its_command_with_the_sets_it_read(merged_run):
    report = {"sets": {"safety": {"name": "safety-heldout"}, "knowledge": {"name": "my.jsonl"}},
              "settings": {"samples_per_set": 5, "max_new_tokens": {"safety": 32, "knowledge": 32}, "batch_size": 2, "seed": 3}}
    line = commands(stored(merged_run), report)[-1]
    assert shlex.split(line) == ["sclora", "eval", "merged", "--safety", "safety-heldout", "--knowledge", "my.jsonl", "--benign", "none",
                                 "--utility", "none", "--samples", "5", "--max-new-tokens", "32", "--batch-size", "2", "--seed", "3"]
    defaults = {**report, "settings": {**report["settings"], "samples_per_set": None, "max_new_tokens": {"safety": 64, "knowledge": 24}}}
    assert "--samples" not in commands(stored(merged_run), defaults)[-1] and "--max-new-tokens" not in commands(stored(merged_run), defaults)[-1]


def test_training_options_follow_the_recorded_settings(merged_run):
    manifest = stored(merged_run)
    train = next(stage for stage in manifest.lineage() if stage.kind == "train")
    line = shlex.split(commands(manifest)[2])
    assert line[line.index("--lr") + 1] == "0.005" and line[line.index("--max-steps") + 1] == "2" and "--freeze-b" not in line
    frozen = replace(train.config, train=replace(train.config.train, freeze_b=True, world_size=2, bf16=True))
    raw = {**train.raw, "config": {**train.raw["config"], "train": frozen.train.to_dict()}}
    line = commands(Manifest.from_dict(raw))[-1]
    assert line.startswith("torchrun --nproc_per_node 2 $(command -v sclora) train run ") and " --freeze-b" in line and " --bf16" in line


def test_samples_is_given_only_when_a_subset_was_drawn(merged_run):
    manifest = stored(merged_run)
    train = next(stage for stage in manifest.lineage() if stage.kind == "train")
    line = shlex.split(commands(manifest)[2])
    assert line[line.index("--samples") + 1] == "8"  # 8 of the file's 60 rows
    every_row = [{**record, "samples": record["rows_available"]} if record["role"] == "train" else record for record in train.raw["datasets"]]
    assert "--samples" not in commands(Manifest.from_dict({**train.raw, "datasets": every_row}))[-1]  # all rows: as without --samples


@pytest.mark.parametrize("record,argument", [
    (DatasetRecord(role=Role.POS, name="samsum", kind="hub", source="knkarthick/samsum", split="train"), "samsum"),  # registry name
    (DatasetRecord(role=Role.POS, name="org/d@v1:test", kind="hub", source="org/d", split="test", revision="v1"), "org/d@v1:test"),
    (DatasetRecord(role=Role.POS, name="org/d", kind="hub", source="org/d", split="train", revision="abc123"), "org/d@abc123"),
    (DatasetRecord(role=Role.POS, name="org/d:test", kind="hub", source="org/d", split="test", commit="f00d"), "org/d@f00d:test"),
    (DatasetRecord(role=Role.POS, name="org/d@main", kind="hub", source="org/d", split="train", revision="main", commit="f00d"), "org/d@f00d"),
    (DatasetRecord(role=Role.NEG, name="safety", kind="bundled", source="safety_train.jsonl"), "safety"),
    (DatasetRecord(role=Role.NEG, name="n.csv", kind="file", source="/home/u/n.csv"), "/home/u/n.csv"),
])
def test_dataset_arguments(record, argument):
    assert data_argument(record) == argument


def test_a_hub_model_is_pinned_to_the_revision_that_was_read():
    assert model_argument(ModelRecord(spec="org/m", id="org/m", revision="c0ffee", path="/cache/x")) == "org/m@c0ffee"
    assert model_argument(ModelRecord(spec="smollm2-135m-instruct", id="smollm2-135m-instruct", revision="b1")) == "smollm2-135m-instruct"
    assert model_argument(ModelRecord(spec="/models/base", id="/models/base", path="/models/base")) == "/models/base"


def test_targets_are_kinds_when_they_cover_every_layer_of_those_kinds(merged_run):
    manifest = stored(merged_run)
    every = list(manifest.config.targets)
    assert targets_argument(every, manifest) == "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
    first_block = [name for name in every if ".layers.0." in name]
    assert targets_argument(first_block, manifest) == ",".join(first_block)  # a subset stays as full names
    only_q = [name for name in every if name.endswith("q_proj")]
    assert targets_argument(only_q, manifest) == "q_proj"
