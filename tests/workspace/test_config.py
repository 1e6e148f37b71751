"""sclora.toml: the template `sclora new` writes, finding the file from a subfolder, dotted overrides,
flags over the file, errors that name the key, the CLI defaults against the schema, and the gates."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import tomllib
import typer

from sclora_tools.cli import app as cli_app
from sclora_tools.cli.app import app
from sclora_tools.errors import UsageError
from sclora_tools.workflows.workspace_stages import require
from sclora_tools.workspace.gates import evaluate_gates
from sclora_tools.workspace.loading import load_workspace, split_arguments
from sclora_tools.workspace.schema import TABLES, PipelineConfig
from sclora_tools.workspace.template import render_template, write_template
from tests.cli.commands import squeeze
from tests.documents import failure_of, result_of


def write(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sclora.toml").write_text(text, encoding="utf-8")
    return folder


def test_the_template_documents_every_key_and_reads_back_as_the_defaults(tmp_path):
    text = render_template("org/base")
    config = PipelineConfig.model_validate(tomllib.loads(text))
    assert config.model == "org/base" and (config.pos, config.neg) == ("dialogsum", "safety")
    assert config.init == TABLES["init"]() and config.train == TABLES["train"]() and config.eval.gates == {}
    for name, table in TABLES.items():
        assert f"[{name}]" in text
        for key, field in table.model_fields.items():
            assert field.description, f"{name}.{key} has no description"
            assert f"# {field.description}" in text or key == "gates"
            assert f"{field.alias or key} =" in text or key == "gates"
    assert "[eval.gates]" in text
    written = write_template(tmp_path / "ws")
    assert written.read_text(encoding="utf-8") == render_template()
    with pytest.raises(Exception, match="already exists"):
        write_template(tmp_path / "ws")


def test_a_command_in_a_subfolder_finds_the_file_and_paths_in_it_are_beside_it(tmp_path):
    root = write(tmp_path / "ws", 'model = "base"\npos = "data/pos.jsonl"\nneg = "safety"\n[init]\nbeta = 0.9\n[push]\nto = "out"\n')
    (root / "base").mkdir()
    (root / "data").mkdir()
    (root / "data" / "pos.jsonl").write_text("{}\n")
    (root / "sub" / "deeper").mkdir(parents=True)
    workspace = load_workspace(start=root / "sub" / "deeper")
    assert workspace.root == root.resolve() and workspace.config.init.beta == 0.9
    assert workspace.config.model == str(root.resolve() / "base") and workspace.config.pos == str(root.resolve() / "data/pos.jsonl")
    assert workspace.config.neg == "safety"  # a registry name, not a path here
    assert workspace.push_to == root.resolve() / "out"
    assert workspace.folder("merge") == root.resolve() / "sclora" / "merge"


def test_outside_a_workspace_the_folder_uses_the_built_in_defaults(tmp_path):
    workspace = load_workspace(start=tmp_path)
    assert workspace.file is None and workspace.root == tmp_path.resolve()
    assert workspace.config.model == "smollm2-135m-instruct" and workspace.outputs == tmp_path.resolve() / "sclora"


def test_overrides_and_flags_win_over_the_file_with_their_types(tmp_path):
    root = write(tmp_path, '[init]\nbeta = 0.5\nrank = 8\n[train]\nlr = 1e-3\n')
    workspace = load_workspace(overrides=["init.beta=0.95", "train.data=samsum", "eval.gates.rougeL=>= 0.3"], start=root,
                               given={"init": {"rank": 16}})
    assert workspace.config.init.beta == 0.95 and workspace.config.init.rank == 16 and workspace.config.train.lr == 1e-3
    assert workspace.config.train.data == "samsum" and workspace.config.eval.gates == {"rougeL": ">= 0.3"}
    assert split_arguments(["p.toml", "init.beta=1", "train.lr=2e-4"]) == ("p.toml", ["init.beta=1", "train.lr=2e-4"])


@pytest.mark.parametrize(("text", "overrides", "phrases"), [
    ("[init]\nbetaa = 0.9\n", [], ["unknown key init.betaa", "beta"]),
    ("", ["init.betaa=0.9"], ["unknown key init.betaa"]),
    ("", ["trian.lr=1"], ["'trian' is not a table"]),
    ("[init]\nbeta = \"high\"\n", [], ["init.beta", "'high'"]),
    ("", ["init.beta=1.5"], ["init.beta", "less than or equal to 1"]),
    ("", ["train.freeze_a=yes"], ["train.freeze_a", "'yes'"]),
    ("[init\n", [], ["not valid TOML"]),
    ("", ["init.beta"], ["not KEY=VALUE"]),
])
def test_bad_keys_types_and_values_are_errors_that_name_the_key(tmp_path, text, overrides, phrases):
    write(tmp_path, text)
    with pytest.raises(UsageError) as caught:
        load_workspace(overrides=overrides, start=tmp_path)
    assert all(phrase in squeeze(str(caught.value)) for phrase in map(squeeze, phrases)), str(caught.value)


def test_flags_reach_the_stage_as_typed_so_its_message_names_the_option(tmp_path):
    write(tmp_path, '[eval]\nsamples = 4\n[calibrate]\nfor = "all"\n')
    workspace = load_workspace(start=tmp_path, given={"eval": {"samples": 0}, "calibrate": {"for": "corda-ipa"}, "": {"pos": "x"}})
    assert workspace.config.eval.samples == 0 and workspace.config.calibrate.for_methods == "corda-ipa" and workspace.config.pos == "x"


def test_missing_required_values_name_the_key_that_sets_them(tmp_path):
    workspace = load_workspace(start=tmp_path)
    with pytest.raises(UsageError, match=r"set pos in sclora.toml or pass --pos"):
        require(workspace, ["calibrate"])
    with pytest.raises(UsageError, match=r"set repo_id in sclora.toml, pass --repo-id ORG/NAME"):
        require(workspace, ["push"])
    require(load_workspace(start=tmp_path, overrides=["push.to=out"]), ["push"])


CLI_COMMANDS = {"calibrate": cli_app.calibrate, "init": cli_app.init, "train": cli_app.train, "merge": cli_app.merge,
                "eval": cli_app.eval_command, "push": cli_app.push}


@pytest.mark.parametrize("stage", sorted(CLI_COMMANDS))
def test_every_table_key_is_an_option_of_its_command_with_the_same_default(stage):
    parameters = inspect.signature(CLI_COMMANDS[stage]).parameters
    for key, field in TABLES[stage].model_fields.items():
        if key == "gates":
            continue
        assert key in parameters, f"{stage}.{key} is not an option of `sclora {stage}`"
        default = parameters[key].default
        default = default.default if isinstance(default, typer.models.OptionInfo) else default
        schema_default = field.get_default(call_default_factory=True)
        assert default == schema_default, (stage, key, default, schema_default)


def test_gates_pass_fail_and_name_unknown_metrics():
    results = evaluate_gates({"refusal_rate": ">= 0.9", "rougeL": "> 0.3", "summary_nll": "<= 2"},
                             {"refusal_rate": 0.95, "rougeL": 0.3, "summary_nll": 1.5})
    assert [r.passed for r in results] == [True, False, True]
    assert results[1].describe() == "rougeL > 0.3: 0.3 (FAILED)"
    with pytest.raises(UsageError, match="eval.gates.rouge_l names a metric this eval did not produce; use one of refusal_rate"):
        evaluate_gates({"rouge_l": ">= 0.3"}, {"refusal_rate": 1.0})
    with pytest.raises(UsageError, match="eval.gates.rougeL = 'at least 0.3' is not a condition"):
        evaluate_gates({"rougeL": "at least 0.3"}, {"rougeL": 1.0})
    assert not evaluate_gates({"rougeL": ">= 0"}, {"rougeL": float("nan")})[0].passed


def test_new_writes_the_file_once_and_run_reports_a_bad_key_as_one_json_document(runner, tmp_path, monkeypatch):
    result = runner.invoke(app, ["new", str(tmp_path / "ws"), "--model", "org/base", "--json"])
    assert result.exit_code == 0 and result_of(result.stdout, "new")["path"] == str((tmp_path / "ws" / "sclora.toml").resolve())
    assert load_workspace(start=tmp_path / "ws").config.model == "org/base"
    again = runner.invoke(app, ["new", str(tmp_path / "ws")])
    assert again.exit_code == 3 and "already exists" in again.stderr
    monkeypatch.chdir(tmp_path / "ws")
    bad = runner.invoke(app, ["run", "--json", "init.bta=0.9"])
    error = failure_of(bad.stdout, "run", 2, "usage")
    assert bad.exit_code == 2
    assert "unknown key init.bta" in error["message"] and "unknown key init.bta" in " ".join(bad.stderr.split())
    assert not (tmp_path / "ws" / "sclora").exists()
