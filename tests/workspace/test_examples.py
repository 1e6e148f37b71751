"""The example pipelines and the CI workflow: each starts with the command that runs it, each
sclora.toml is a valid workspace (unknown keys would be errors), and the workflow runs `sclora run`
with the Hub token from the repository's secrets."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sclora_tools.workflows.pipeline import run_pipeline
from sclora_tools.workspace.loading import load_workspace

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PIPELINES = sorted((EXAMPLES / "pipelines").glob("*/sclora.toml"))


def test_there_is_an_embedded_and_a_paper_pipeline():
    assert {path.parent.name for path in PIPELINES} >= {"embedded", "paper"}


@pytest.mark.parametrize("path", PIPELINES, ids=lambda path: path.parent.name)
def test_each_pipeline_starts_with_its_command_and_validates(path):
    assert path.read_text(encoding="utf-8").startswith("# Run it")
    workspace = load_workspace(path)
    assert workspace.root == path.parent and workspace.config.eval.gates


def test_the_paper_pipeline_has_the_papers_settings():
    config = load_workspace(EXAMPLES / "pipelines" / "paper" / "sclora.toml").config
    assert config.model == "meta-llama/Llama-2-7b-chat-hf" and (config.pos, config.neg) == ("samsum", "safety")
    assert (config.init.rank, config.train.lr, config.train.epochs) == (128, 2e-5, 1.0)
    assert config.train.batch_size * config.train.grad_accum == 128 and config.calibrate.samples == 256
    text = (EXAMPLES / "pipelines" / "paper" / "sclora.toml").read_text(encoding="utf-8")
    assert "init.beta=0.5" in text and "init.beta=0.9" in text


def test_the_embedded_pipeline_runs_offline():
    config = load_workspace(EXAMPLES / "pipelines" / "embedded" / "sclora.toml").config
    assert config.model == "smollm2-135m-instruct" and config.push.to and config.repo_id is None


def test_the_workflow_runs_the_pipeline_with_the_token_from_the_secrets():
    text = (EXAMPLES / "github-actions" / "sclora.yml").read_text(encoding="utf-8")
    assert text.startswith("# Run it")
    assert "run: sclora run" in text and "HF_TOKEN: ${{ secrets.HF_TOKEN }}" in text
    assert "--token" not in text  # a token never goes on a command line


@pytest.mark.slow
def test_the_embedded_pipeline_runs_offline_end_to_end_at_a_small_size(tmp_path):
    """The example file itself, copied to an empty folder and run with smaller sizes: every stage runs,
    and a second run skips them all."""
    shutil.copy(EXAMPLES / "pipelines" / "embedded" / "sclora.toml", tmp_path / "sclora.toml")
    smaller = ["calibrate.samples=16", "calibrate.max_length=64", "init.rank=8", "train.max_steps=2", "train.samples=8",
               "train.max_length=128", "eval.samples=4", "eval.max_new_tokens=8", "eval.gates={}"]
    first = run_pipeline(load_workspace(tmp_path / "sclora.toml", smaller), progress=False)
    assert first.error is None and [o.action for o in first.stages] == ["ran"] * 6, first.to_dict()
    assert (tmp_path / "published" / "README.md").is_file()
    second = run_pipeline(load_workspace(tmp_path / "sclora.toml", smaller), progress=False)
    assert [o.action for o in second.stages] == ["skipped"] * 6
