"""The model card of a published run (sclora_tools/io/card.py): the metadata a Hub reader sees, the
relation and library that follow what is published, no invented fields, and strings that cannot
break the front matter or the body."""

from __future__ import annotations

import json
import re
import shlex

import pytest
from huggingface_hub import ModelCard, hf_hub_download

from sclora_tools import push
from sclora_tools.io.card import render_card
from sclora_tools.io.local_paths import hide_in
from tests.chain import fresh_copy
from tests.publishing import REPO, edit_manifest, hub_style

NASTY = "evil\n---\nlicense: mit\nbase_model: attacker/model\n{{ config }} {% raw %} \"q\" 'a' | `x` ```\n- [a](javascript:b) <b>"


def test_card_downloaded_from_the_hub_has_the_metadata(merged_run, fake_hub, tmp_path):
    run = hub_style(fresh_copy(merged_run, tmp_path, "merge-copy"), tmp_path)
    manifest = hide_in(json.loads((run / "manifest.json").read_text()))  # as published: no local paths
    push(run, REPO, progress=False)
    card = ModelCard.load(hf_hub_download(REPO, "README.md", cache_dir=tmp_path / "cache"))
    data = card.data.to_dict()
    assert data["base_model"] == "fake-org/tiny-base" and data["base_model_relation"] == "finetune"
    assert data["library_name"] == "transformers" and data["pipeline_tag"] == "text-generation"
    assert data["license"] == "mit"
    assert {"sclora", "sc-lora", "lora", "safety"} <= set(data["tags"])
    assert data["datasets"] == ["fake-org/dialogs"]  # local + files are described in the body, not here
    results = {m["type"]: m["value"] for m in data["model-index"][0]["results"][0]["metrics"]}
    assert results == {"refusal_rate": 0.875, "over_refusal_rate": 0.05, "rouge1": 0.41, "refusal_nll": 1.25}

    block, config = data["sclora"], manifest["config"]
    assert (block["beta"], block["rank"], block["alpha"], block["method"]) == (0.9, 4, 4.0, "sclora")
    assert block["target_layers"] == len(config["targets"]) == 14 and block["normalization"] == "token"
    assert block["target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]  # not 14 paths
    assert block["base"]["revision"] == manifest["model"]["revision"]
    assert [c["role"] for c in block["calibration"]] == ["+", "-"]
    for entry, recorded in zip(block["calibration"], manifest["datasets"], strict=False):  # datasets also lists "train"
        for key in ("role", "name", "source", "revision", "split", "samples", "tokens", "texts_sha256"):
            assert entry[key] == recorded[key], key
    assert block["training"]["max_steps"] == 2 and block["training"]["lr"] == 5e-3
    assert block["training"]["datasets"][0]["role"] == "train"
    verification = manifest["verification"]
    assert block["w0_check"]["passed"] is True and block["w0_check"]["checked"] == verification["checked"]
    assert block["w0_check"]["correction_bytes"] == verification["correction_bytes"]
    assert block["lora_export"] == {"path": "lora", "rank": 8, "alpha": 8.0, "against": "original base model"}

    text = card.text
    assert manifest["model"]["revision"] in text
    made = re.search(r"(?s)## How it was made.*?```bash\n(.*?)\n```", text).group(1).splitlines()
    assert [line.split()[1] for line in made] == ["calibrate", "init", "train", "merge", "eval"]  # every stage, in order
    assert "```bash" in text and "--enable-lora" in text and "--max-lora-rank 8" in text
    assert "subfolder=\"lora\"" in text and "revision='c0ffee" in text
    assert "dCov = (1 - beta) Cov+ - beta Cov-" in text and "beta = 0.9" in text
    assert "| refusal\\_rate | 0.875 |" in text
    published_eval = json.loads(fake_hub.files(REPO)["sclora_eval.json"])
    assert published_eval["metrics"]["refusal_rate"] == 0.875 and "examples" not in published_eval


@pytest.mark.parametrize("what,relation,library", [("all", "finetune", "transformers"), ("merged", "finetune", "transformers"),
                                                   ("lora", "adapter", "peft")])
def test_card_relation_and_library_follow_what_is_published(merged_run, tmp_path, what, relation, library):
    run = hub_style(fresh_copy(merged_run, tmp_path, "merge-copy"), tmp_path)
    manifest = json.loads((run / "manifest.json").read_text())
    data = ModelCard(render_card(manifest, repo_id="org/name", what=what)).data.to_dict()
    assert (data["base_model"], data["base_model_relation"], data["library_name"]) == ("fake-org/tiny-base", relation, library)
    assert "license" not in data  # none given, none invented
    assert ("lora_export" in data["sclora"]) == (what != "merged")


def test_local_base_has_no_base_model_field(merged_run):
    manifest = json.loads((merged_run / "manifest.json").read_text())
    data = ModelCard(render_card(manifest, repo_id="org/name")).data.to_dict()
    assert "base_model" not in data and "base_model_relation" not in data and "datasets" not in data
    assert data["sclora"]["base"]["id"] == manifest["model"]["id"]


def test_nasty_strings_cannot_break_the_front_matter_or_the_body(merged_run, fake_hub, tmp_path):
    run = fresh_copy(merged_run, tmp_path, "merge-copy")

    def change(manifest):
        for record in manifest["datasets"]:
            record.update(name=NASTY, source=NASTY, split=NASTY)
        manifest["parents"][0]["manifest"]["parents"][0]["manifest"]["command"] = "sclora init ```\n---\nlicense: mit\n```"
        stage = manifest
        while stage is not None:  # every stage's record, so that the nasty strings reach "How it was made" too
            stage["model"]["spec"] = NASTY
            for record in stage.get("datasets", []):
                record.update(name=NASTY, source=NASTY, split=NASTY)
            stage = stage["parents"][0]["manifest"] if stage.get("parents") else None

    manifest = edit_manifest(run, change)
    text = render_card(manifest, repo_id="org/name")
    card = ModelCard(text)
    data = card.data.to_dict()
    assert set(data) == {"library_name", "pipeline_tag", "tags", "sclora"}  # nothing injected
    assert all(entry["name"] == NASTY and entry["source"] == NASTY for entry in data["sclora"]["calibration"])
    assert "{{ config }}" in data["sclora"]["calibration"][0]["name"]  # no template ran over it
    commands = re.search(r"(?s)\n````bash\n(.*?)\n````\n", card.text)  # ``` inside needs a longer fence
    assert commands and shlex.quote(NASTY) in commands.group(1)  # shell-quoted, verbatim, inert
    assert "license: mit\n```" not in card.text  # the recorded argv is not on the card (it stays in the manifest)
    outside = card.text.replace(commands.group(0), "\n")
    assert not any(line.strip() == "---" for line in outside.splitlines())  # no rule, no second front matter
    assert NASTY.splitlines()[0] in outside and "<b>" not in outside and "\\<b\\>" in outside
    # and the same card through the Hub
    push(run, "fake-org/nasty", progress=False)
    remote = ModelCard(fake_hub.files("fake-org/nasty")["README.md"].decode())
    assert remote.data.to_dict() == ModelCard(render_card(hide_in(manifest), repo_id="org/name")).data.to_dict()
    assert remote.data.to_dict()["sclora"]["calibration"] == data["sclora"]["calibration"]
