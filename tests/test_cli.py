"""The `sclora` command line through typer's CliRunner: help, an end-to-end calibrate + init,
clean one-sentence errors with the right exit codes and nothing half-written left behind."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import sclora_tools
import sclora_tools.cli
from sclora_tools.cli.app import app
from sclora_tools.errors import InputError, MismatchError, UsageError, VerificationError

REPO = Path(__file__).resolve().parents[1]
INIT_ARTEFACTS = (
    "residual/config.json",
    "residual/model.safetensors",
    "adapter/adapter_config.json",
    "adapter/adapter_model.safetensors",
    "exact/corrections.safetensors",
    "manifest.json",
)


# ----------------------------------------------------------------------------- helpers


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def squeeze(text: str) -> str:
    """The text with all whitespace removed: rich wraps long lines (even inside paths)."""
    return "".join(text.split())


def leftovers(path: Path) -> list[str]:
    """Temporary siblings a staged write could leave behind."""
    return sorted(p.name for p in path.parent.glob(f".{path.name}.*"))


def tree_digest(directory: Path) -> dict[str, str]:
    return {p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def assert_clean_failure(result, output: Path | None, *phrases: str, code: int | None = None) -> str:
    """Exit != 0 (or `code`), one `error:` line on stderr, no traceback, every phrase in the
    message, and no output directory or temporary sibling left behind. Returns the message."""
    assert result.exit_code != 0, result.output
    if code is not None:
        assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # handled, not a crash
    assert "Traceback" not in result.output
    assert "internal error" not in result.output, result.output
    error_lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, result.output
    assert "error:" in result.stderr and "error:" not in result.stdout
    message = result.stderr[result.stderr.index("error:"):]
    for phrase in phrases:
        assert squeeze(phrase) in squeeze(message), (phrase, message)
    if output is not None:
        assert not output.exists(), f"{output} was left behind"
        assert leftovers(output) == []
    return message


@pytest.fixture(scope="module")
def calibration(tiny_fp32, data_files, tmp_path_factory) -> Path:
    """One small calibration of tiny_fp32 shared by the init tests (few - tokens on purpose)."""
    out = tmp_path_factory.mktemp("cli-calib") / "calib"
    sclora_tools.calibrate(str(tiny_fp32), str(data_files["pos"]), str(data_files["neg"]), out,
                           samples=8, max_length=16, batch_size=4, progress=False)
    return out


@pytest.fixture(scope="module")
def init_run(calibration, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli-init") / "run"
    sclora_tools.init(calibration, out, beta=0.5, rank=4, progress=False)
    return out


def init_args(calibration: Path, output: Path, *extra: str) -> list[str]:
    return ["init", str(calibration), "-o", str(output), *extra]


def calibrate_args(model: Path, pos: Path, neg: Path, output: Path, *extra: str) -> list[str]:
    return ["calibrate", str(model), "--pos", str(pos), "--neg", str(neg), "-o", str(output),
            "--samples", "8", "--max-length", "16", "--batch-size", "4", *extra]


# ----------------------------------------------------------------------------- packaging and help


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


# ----------------------------------------------------------------------------- end to end


def test_calibrate_then_init_end_to_end(runner, tiny_fp32, data_files, tmp_path):
    calib, run = tmp_path / "calib", tmp_path / "run"
    result = runner.invoke(app, ["calibrate", str(tiny_fp32), "--pos", str(data_files["pos"]), "--neg", str(data_files["neg"]),
                                 "-o", str(calib), "--samples", "16", "--max-length", "32", "--batch-size", "4", "--json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)  # stdout holds only the JSON
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
    printed = json.loads(result.stdout)
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


# ----------------------------------------------------------------------------- calibrate: bad input


def test_calibrate_missing_model_dir(runner, data_files, tmp_path):
    out = tmp_path / "calib"
    result = runner.invoke(app, calibrate_args(tmp_path / "no-such-model", data_files["pos"], data_files["neg"], out))
    assert_clean_failure(result, out, "no-such-model", code=InputError.exit_code)


def test_calibrate_dataset_file_does_not_exist(runner, tiny_fp32, data_files, tmp_path):
    out = tmp_path / "calib"
    result = runner.invoke(app, calibrate_args(tiny_fp32, tmp_path / "missing.jsonl", data_files["neg"], out))
    assert_clean_failure(result, out, "missing.jsonl", "does not exist", code=InputError.exit_code)


def test_calibrate_dataset_with_unsupported_extension(runner, tiny_fp32, data_files, tmp_path):
    rows = tmp_path / "rows.txt"
    rows.write_text("alice meets bob\n")
    out = tmp_path / "calib"
    result = runner.invoke(app, calibrate_args(tiny_fp32, data_files["pos"], rows, out))
    assert_clean_failure(result, out, "rows.txt", ".jsonl", code=InputError.exit_code)


def test_calibrate_rows_without_known_fields(runner, tiny_fp32, data_files, tmp_path):
    rows = tmp_path / "odd.jsonl"
    rows.write_text("".join(json.dumps({"question": f"q{i}", "answer": "a"}) + "\n" for i in range(5)))
    out = tmp_path / "calib"
    result = runner.invoke(app, calibrate_args(tiny_fp32, rows, data_files["neg"], out))
    assert_clean_failure(result, out, "odd.jsonl", "text", "prompt+response", "messages", code=InputError.exit_code)


@pytest.mark.parametrize(
    "extra,phrase",
    [
        (["--normalize", "bogus"], "--normalize"),
        (["--accumulate-dtype", "float16"], "--accumulate-dtype"),
        (["--samples", "0"], "--samples"),
        (["--batch-size", "-1"], "--batch-size"),
    ],
)
def test_calibrate_bad_options(runner, tiny_fp32, data_files, tmp_path, extra, phrase):
    out = tmp_path / "calib"
    result = runner.invoke(app, [*calibrate_args(tiny_fp32, data_files["pos"], data_files["neg"], out), *extra])
    assert_clean_failure(result, out, phrase, code=UsageError.exit_code)


# ----------------------------------------------------------------------------- init: bad input


@pytest.mark.parametrize(
    "extra,phrases",
    [
        (["--beta", "1.5"], ["--beta", "1.5", "[0, 1]"]),
        (["--beta=-0.1"], ["--beta", "-0.1"]),
        (["--beta", "-0.1"], ["--beta", "-0.1"]),
        (["--rank", "100"], ["--rank 100", "choose a rank"]),
        (["--rank", "40"], ["--rank 40", "k_proj", "32"]),  # k_proj is 64 -> 2 kv heads x 16 = 32
        (["--rank", "0"], ["--rank"]),
        (["--alpha", "0"], ["--alpha"]),
        (["--method", "bogus"], ["--method", "bogus"]),
    ],
)
def test_init_bad_options(runner, calibration, tmp_path, extra, phrases):
    out = tmp_path / "run"
    result = runner.invoke(app, init_args(calibration, out, *extra))
    assert_clean_failure(result, out, *phrases, code=UsageError.exit_code)


def test_init_on_a_directory_that_is_not_a_calibration(runner, tiny_fp32, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, init_args(tiny_fp32, out, "--rank", "4"))
    assert_clean_failure(result, out, "manifest.json", code=InputError.exit_code)
    missing = tmp_path / "nothing-here"
    result = runner.invoke(app, init_args(missing, out, "--rank", "4"))
    assert_clean_failure(result, out, "nothing-here", code=InputError.exit_code)


def test_init_on_an_init_artefact_is_a_kind_mismatch(runner, init_run, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, init_args(init_run, out, "--rank", "4"))
    assert_clean_failure(result, out, "'init'", "calibration", code=MismatchError.exit_code)


def test_not_a_calibration_message_names_the_real_command(runner, tiny_fp32, tmp_path):
    result = runner.invoke(app, init_args(tiny_fp32, tmp_path / "run", "--rank", "4"))
    message = assert_clean_failure(result, tmp_path / "run")
    assert "sclora calibrate`" in " ".join(message.split())


def test_init_with_a_different_model_is_a_mismatch(runner, calibration, tiny_bf16, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, init_args(calibration, out, "--rank", "4", "--model", str(tiny_bf16)))
    assert_clean_failure(result, out, str(tiny_bf16), "--model", code=MismatchError.exit_code)


def test_init_with_a_model_that_is_not_a_directory(runner, calibration, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, init_args(calibration, out, "--rank", "4", "--model", str(tmp_path / "gone")))
    assert_clean_failure(result, out, "--model", "gone", code=InputError.exit_code)


def test_init_on_a_tampered_calibration(runner, calibration, tmp_path):
    copy = tmp_path / "calib"
    shutil.copytree(calibration, copy)
    with open(copy / "pos.safetensors", "ab") as handle:
        handle.write(b"\0")
    out = tmp_path / "run"
    result = runner.invoke(app, init_args(copy, out, "--rank", "4"))
    assert_clean_failure(result, out, "pos.safetensors", "sha256", code=VerificationError.exit_code)


def test_init_on_a_calibration_with_a_missing_file(runner, calibration, tmp_path):
    copy = tmp_path / "calib"
    shutil.copytree(calibration, copy)
    (copy / "neg.safetensors").unlink()
    out = tmp_path / "run"
    result = runner.invoke(app, init_args(copy, out, "--rank", "4"))
    assert_clean_failure(result, out, "neg.safetensors", "missing", code=VerificationError.exit_code)


def test_init_on_a_calibration_with_a_broken_manifest(runner, calibration, tmp_path):
    copy = tmp_path / "calib"
    shutil.copytree(calibration, copy)
    (copy / "manifest.json").write_text("{not json")
    out = tmp_path / "run"
    result = runner.invoke(app, init_args(copy, out, "--rank", "4"))
    assert_clean_failure(result, out, "manifest.json", code=InputError.exit_code)


# ----------------------------------------------------------------------------- other stages


def test_push_help_lists_its_options(runner):
    result = runner.invoke(app, ["push", "--help"])
    assert result.exit_code == 0, result.output
    for option in ("merge_dir", "--repo-id", "--private", "--revision", "--commit-message", "--what", "--dry-run", "--to", "--json"):
        assert option in result.output, option
    assert "--token" not in result.output  # the token never comes from argv


@pytest.mark.parametrize("command", ["train", "merge"])
def test_train_and_merge_refuse_a_calibration_cleanly(runner, calibration, tmp_path, command):
    out = tmp_path / "out"
    result = runner.invoke(app, [command, str(calibration), "-o", str(out)])
    assert_clean_failure(result, out, "calibration")


@pytest.mark.parametrize("command", ["train", "merge"])
def test_train_and_merge_refuse_a_missing_directory_cleanly(runner, tmp_path, command):
    out = tmp_path / "out"
    result = runner.invoke(app, [command, str(tmp_path / "absent"), "-o", str(out)])
    assert_clean_failure(result, out, "absent", code=InputError.exit_code)


# ----------------------------------------------------------------------------- debug and crashes


def test_debug_variable_shows_the_exception(runner, calibration, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, init_args(calibration, out, "--beta", "1.5"), env={"SCLORA_DEBUG": "1"})
    assert result.exit_code != 0
    assert isinstance(result.exception, UsageError)
    assert result.exc_info is not None and result.exc_info[2] is not None  # a traceback is available
    assert not out.exists() and leftovers(out) == []
    with pytest.raises(UsageError, match="--beta"):
        runner.invoke(app, init_args(calibration, out, "--beta", "1.5"), env={"SCLORA_DEBUG": "1"}, catch_exceptions=False)
    # any other value keeps the one-line message
    result = runner.invoke(app, init_args(calibration, out, "--beta", "1.5"), env={"SCLORA_DEBUG": "0"})
    assert_clean_failure(result, out, "--beta", code=UsageError.exit_code)


def test_unexpected_exception_is_an_internal_error_without_traceback(runner, calibration, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(sclora_tools, "init", broken)
    out = tmp_path / "run"
    result = runner.invoke(app, init_args(calibration, out, "--rank", "4"))
    assert result.exit_code == 70
    assert "Traceback" not in result.output
    assert "internal error" in result.stderr and "boom" in result.stderr and "SCLORA_DEBUG=1" in squeeze(result.stderr)
    result = runner.invoke(app, init_args(calibration, out, "--rank", "4"), env={"SCLORA_DEBUG": "1"})
    assert isinstance(result.exception, RuntimeError)


def half_written(exception: BaseException):
    """A stand-in for init's write_residual that writes part of the residual, then fails."""

    def write_residual(reader, calibration_dir, sites, settings, out_dir, shard_bytes, progress):
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "model-00001-of-00002.safetensors").write_bytes(b"partial")
        raise exception

    return write_residual


def test_interrupt_while_writing_leaves_no_artefact(runner, calibration, tmp_path, monkeypatch):
    import sclora_tools.stages.init as init_stage

    monkeypatch.setattr(init_stage, "write_residual", half_written(KeyboardInterrupt()))
    out = tmp_path / "run"
    result = runner.invoke(app, init_args(calibration, out, "--rank", "4"))
    assert result.exit_code == 130
    assert "interrupted" in result.stderr and "Traceback" not in result.output
    assert not out.exists() and leftovers(out) == []


def test_failure_while_rewriting_keeps_the_previous_artefact(runner, calibration, init_run, tmp_path, monkeypatch):
    import sclora_tools.stages.init as init_stage

    out = tmp_path / "run"
    shutil.copytree(init_run, out)
    before = tree_digest(out)
    monkeypatch.setattr(init_stage, "write_residual", half_written(OSError("disk full")))
    result = runner.invoke(app, init_args(calibration, out, "--rank", "2"))
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "disk full" in result.stderr
    assert tree_digest(out) == before
    assert leftovers(out) == []


# ----------------------------------------------------------------------------- output directories


def test_rerunning_init_into_the_same_directory_replaces_it(runner, calibration, init_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(init_run, out)  # an earlier `sclora init` output (rank 4, sclora)
    (out / "stale.txt").write_text("from an earlier run")
    again = runner.invoke(app, init_args(calibration, out, "--rank", "2", "--method", "lora", "--json"))
    assert again.exit_code == 0, again.output
    assert not (out / "stale.txt").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["rank"] == 2 and manifest["config"]["method"] == "lora"
    assert json.loads(again.stdout) == manifest
    for relative in INIT_ARTEFACTS:
        assert (out / relative).is_file()
    assert leftovers(out) == []


def test_init_refuses_a_foreign_non_empty_directory(runner, calibration, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    (out / "sub").mkdir()
    (out / "sub" / "data.bin").write_bytes(b"\x00\x01")
    before = tree_digest(out)
    result = runner.invoke(app, init_args(calibration, out, "--rank", "4"))
    assert result.exit_code == InputError.exit_code, result.output
    assert "Traceback" not in result.output
    assert "not an sclora artefact" in " ".join(result.stderr.split())
    assert tree_digest(out) == before
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "sub"]
    assert leftovers(out) == []


def test_init_refuses_an_output_path_that_is_a_file(runner, calibration, tmp_path):
    out = tmp_path / "file"
    out.write_text("keep")
    result = runner.invoke(app, init_args(calibration, out, "--rank", "4"))
    assert result.exit_code == InputError.exit_code, result.output
    assert out.read_text() == "keep" and leftovers(out) == []


def test_init_into_an_existing_empty_directory_at_the_rank_limit(runner, calibration, tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    result = runner.invoke(app, init_args(calibration, out, "--rank", "32", "--method", "lora"))  # min(d_out, d_in) of k_proj
    assert result.exit_code == 0, result.output
    assert (out / "manifest.json").is_file() and leftovers(out) == []


# ----------------------------------------------------------------------------- beta = 1 warning


def test_beta_one_with_few_negative_tokens_warns(runner, calibration, tmp_path):
    manifest = json.loads((calibration / "manifest.json").read_text())
    neg_tokens = next(d["tokens"] for d in manifest["datasets"] if d["role"] == "-")
    assert neg_tokens < 160, "test setup: fewer - tokens than the widest d_out (gate/up: 160)"
    result = runner.invoke(app, init_args(calibration, tmp_path / "run", "--rank", "4", "--beta", "1", "--json"))
    assert result.exit_code == 0, result.output
    warning = " ".join(result.stderr.split())
    assert "warning:" in warning and "appendix B" in warning and "beta < 1" in warning
    assert json.loads(result.stdout)["config"]["beta"] == 1.0  # the warning stays off stdout


def test_beta_below_one_does_not_warn_and_stdout_stays_empty_without_json(runner, calibration, tmp_path):
    result = runner.invoke(app, init_args(calibration, tmp_path / "run", "--rank", "4", "--beta", "0.99", "--method", "lora"))
    assert result.exit_code == 0, result.output
    assert "appendix B" not in " ".join(result.output.split())
    assert "warning" not in result.output
    assert result.stdout == ""


# ----------------------------------------------------------------------------- message layout


def test_error_message_is_a_single_line_when_stderr_is_not_a_terminal(runner, calibration, tmp_path):
    out = tmp_path / "a-rather-long-output-directory-name" / "run"
    result = runner.invoke(app, init_args(calibration, out, "--beta", "1.5"))
    assert result.exit_code == UsageError.exit_code
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
