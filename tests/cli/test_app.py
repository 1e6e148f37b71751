"""The `sclora` command line through typer's CliRunner: the package layout, help, an end-to-end calibrate
+ init with --json, output directories, the appendix-B warning on stderr, and `sclora eval`'s options."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import sclora_tools.cli
from sclora_tools.cli.app import app
from tests.chain import fresh_copy
from tests.cli.commands import INIT_ARTEFACTS, init_args, leftovers
from tests.documents import result_of

REPO = Path(__file__).resolve().parents[2]


def test_cli_package_is_the_repo_cli_directory():
    assert Path(sclora_tools.cli.__file__).resolve() == REPO / "cli" / "__init__.py"
    assert Path(__import__("sclora_tools.cli.app", fromlist=["app"]).__file__).resolve() == REPO / "cli" / "app.py"


@pytest.mark.parametrize(
    "command,options",
    [
        ("calibrate", ["--pos", "--neg", "--output", "--samples", "--max-length", "--batch-size", "--targets",
                       "--normalize", "--seed", "--json"]),
        ("init", ["--output", "--beta", "--rank", "--alpha", "--method", "--model", "--json"]),
        ("train", ["--output"]),
        ("merge", ["--output"]),
        ("push", ["--repo-id"]),
    ],
)
def test_help_of_every_command(runner, command, options):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert f"sclora {command}" in result.output
    for option in options:
        assert option in result.output, option


def test_top_level_help_lists_every_stage(runner):
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("calibrate", "init", "train", "merge", "push"):
        assert command in result.output


def test_push_help_lists_its_options(runner):
    result = runner.invoke(app, ["push", "--help"])
    assert result.exit_code == 0, result.output
    for option in ("merge_dir", "--repo-id", "--private", "--revision", "--commit-message", "--what", "--dry-run", "--to", "--json"):
        assert option in result.output, option
    assert "--token" not in result.output  # the token never comes from argv


def test_calibrate_then_init_end_to_end(runner, tiny_fp32, data_files, tmp_path):
    calib, run = tmp_path / "calib", tmp_path / "run"
    result = runner.invoke(app, ["calibrate", str(tiny_fp32), "--pos", str(data_files["pos"]), "--neg", str(data_files["neg"]),
                                 "-o", str(calib), "--samples", "16", "--max-length", "32", "--batch-size", "4", "--json"])
    assert result.exit_code == 0, result.output
    printed = result_of(result.stdout, "calibrate")  # stdout holds only the JSON document
    assert printed["kind"] == "calibration"
    assert printed == json.loads((calib / "manifest.json").read_text())
    assert {"pos.safetensors", "neg.safetensors"} <= set(printed["files"])
    assert (calib / "pos.safetensors").is_file() and (calib / "neg.safetensors").is_file()
    assert printed["config"]["samples"] == 16 and printed["config"]["max_length"] == 32
    assert printed["config"]["normalization"] == "token"
    assert [d["role"] for d in printed["datasets"]] == ["+", "-"]
    assert all(d["samples"] == 16 and d["tokens"] > 0 for d in printed["datasets"])

    result = runner.invoke(app, ["init", str(calib), "-o", str(run), "--rank", "4", "--beta", "0.5", "--json"])
    assert result.exit_code == 0, result.output
    printed = result_of(result.stdout, "init")
    assert printed["kind"] == "init"
    assert printed == json.loads((run / "manifest.json").read_text())
    for relative in INIT_ARTEFACTS:
        assert (run / relative).is_file(), relative
        if relative != "manifest.json":
            assert relative in printed["files"], relative
    config = printed["config"]
    assert (config["method"], config["beta"], config["rank"], config["alpha"], config["scale"]) == ("sclora", 0.5, 4, 4.0, 1.0)
    assert config["targets"] and printed["parents"][0]["kind"] == "calibration"
    adapter = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and adapter["lora_alpha"] == 4
    assert leftovers(calib) == [] and leftovers(run) == []


def test_rerunning_init_into_the_same_directory_replaces_it(runner, calibration, init_run, tmp_path):
    out = fresh_copy(init_run, tmp_path, "run")  # an earlier `sclora init` output (rank 4, sclora)
    (out / "stale.txt").write_text("from an earlier run")
    again = runner.invoke(app, init_args(calibration, out, "--rank", "2", "--method", "lora", "--json"))
    assert again.exit_code == 0, again.output
    assert not (out / "stale.txt").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["rank"] == 2 and manifest["config"]["method"] == "lora"
    assert result_of(again.stdout, "init") == manifest
    for relative in INIT_ARTEFACTS:
        assert (out / relative).is_file()
    assert leftovers(out) == []


def test_init_into_an_existing_empty_directory_at_the_rank_limit(runner, calibration, tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    result = runner.invoke(app, init_args(calibration, out, "--rank", "32", "--method", "lora"))  # min(d_out, d_in) of k_proj
    assert result.exit_code == 0, result.output
    assert (out / "manifest.json").is_file() and leftovers(out) == []


def test_beta_one_with_few_negative_tokens_warns(runner, calibration, tmp_path):
    manifest = json.loads((calibration / "manifest.json").read_text())
    neg_tokens = next(d["tokens"] for d in manifest["datasets"] if d["role"] == "-")
    assert neg_tokens < 160, "test setup: fewer - tokens than the widest d_out (gate/up: 160)"
    result = runner.invoke(app, init_args(calibration, tmp_path / "run", "--rank", "4", "--beta", "1", "--json"))
    assert result.exit_code == 0, result.output
    warning = " ".join(result.stderr.split())
    assert "warning:" in warning and "appendix B" in warning and "beta < 1" in warning
    assert result_of(result.stdout, "init")["config"]["beta"] == 1.0  # the warning stays off stdout


def test_beta_below_one_does_not_warn_and_stdout_stays_empty_without_json(runner, calibration, tmp_path):
    result = runner.invoke(app, init_args(calibration, tmp_path / "run", "--rank", "4", "--beta", "0.99", "--method", "lora"))
    assert result.exit_code == 0, result.output
    assert "appendix B" not in " ".join(result.output.split())
    assert "warning" not in result.output
    assert result.stdout == ""


def test_cli_eval_json(runner, tiny_fp32, tmp_path):
    output = tmp_path / "out" / "eval.json"
    result = runner.invoke(app, ["eval", str(tiny_fp32), "--samples", "2", "--max-new-tokens", "2", "--utility", "none",
                                      "--benign", "none", "-o", str(output), "--json"])
    assert result.exit_code == 0, result.output
    printed = result_of(result.stdout, "eval")
    assert printed == json.loads(output.read_text())
    assert set(printed["metrics"]) == {"refusal_rate", "refusal_nll", "knowledge_em"}


def test_cli_eval_bad_option_exits_2(runner, tiny_fp32):
    result = runner.invoke(app, ["eval", str(tiny_fp32), "--samples", "0"])
    assert result.exit_code == 2 and "--samples" in result.stderr and "Traceback" not in result.output


def test_cli_eval_help_lists_options(runner):
    result = runner.invoke(app, ["eval", "--help"])
    assert result.exit_code == 0
    for option in ("--safety", "--benign", "--utility", "--knowledge", "--samples", "--max-new-tokens", "--batch-size",
                   "--output", "--judge", "--device", "--json"):
        assert option in result.output, option
