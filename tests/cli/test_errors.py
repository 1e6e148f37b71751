"""Bad input through the `sclora` command line: one clear `error:` sentence on stderr with the right exit
code, no traceback unless SCLORA_DEBUG=1, and nothing half-written left behind (interrupts and
failures while rewriting included)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import sclora_tools
import sclora_tools.stages.init as init_stage
from sclora_tools.cli.app import app
from sclora_tools.errors import InputError, MismatchError, UsageError, VerificationError
from tests.chain import fresh_copy, tree_digest
from tests.cli.commands import assert_clean_failure, calibrate_args, init_args, leftovers, squeeze


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
    copy = fresh_copy(calibration, tmp_path)
    with open(copy / "pos.safetensors", "ab") as handle:
        handle.write(b"\0")
    out = tmp_path / "run"
    result = runner.invoke(app, init_args(copy, out, "--rank", "4"))
    assert_clean_failure(result, out, "pos.safetensors", "sha256", code=VerificationError.exit_code)


def test_init_on_a_calibration_with_a_missing_file(runner, calibration, tmp_path):
    copy = fresh_copy(calibration, tmp_path)
    (copy / "neg.safetensors").unlink()
    out = tmp_path / "run"
    result = runner.invoke(app, init_args(copy, out, "--rank", "4"))
    assert_clean_failure(result, out, "neg.safetensors", "missing", code=VerificationError.exit_code)


def test_init_on_a_calibration_with_a_broken_manifest(runner, calibration, tmp_path):
    copy = fresh_copy(calibration, tmp_path)
    (copy / "manifest.json").write_text("{not json")
    out = tmp_path / "run"
    result = runner.invoke(app, init_args(copy, out, "--rank", "4"))
    assert_clean_failure(result, out, "manifest.json", code=InputError.exit_code)


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
        raise RuntimeError("boom [/gloo/pair.cc:553] closed by peer [127.0.0.1]:1")  # brackets are not rich markup

    monkeypatch.setattr(sclora_tools.stages.init, "init", broken)
    out = tmp_path / "run"
    result = runner.invoke(app, init_args(calibration, out, "--rank", "4"))
    assert result.exit_code == 70
    assert "Traceback" not in result.output
    assert "internal error" in result.stderr and "SCLORA_DEBUG=1" in squeeze(result.stderr)
    assert squeeze("boom [/gloo/pair.cc:553] closed by peer [127.0.0.1]:1") in squeeze(result.stderr)
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
    monkeypatch.setattr(init_stage, "write_residual", half_written(KeyboardInterrupt()))
    out = tmp_path / "run"
    result = runner.invoke(app, init_args(calibration, out, "--rank", "4"))
    assert result.exit_code == 130
    assert "interrupted" in result.stderr and "Traceback" not in result.output
    assert not out.exists() and leftovers(out) == []


def test_failure_while_rewriting_keeps_the_previous_artefact(runner, calibration, init_run, tmp_path, monkeypatch):
    out = fresh_copy(init_run, tmp_path, "run")
    before = tree_digest(out)
    monkeypatch.setattr(init_stage, "write_residual", half_written(OSError("disk full")))
    result = runner.invoke(app, init_args(calibration, out, "--rank", "2"))
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "disk full" in result.stderr
    assert tree_digest(out) == before
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


def test_error_message_is_a_single_line_when_stderr_is_not_a_terminal(runner, calibration, tmp_path):
    out = tmp_path / "a-rather-long-output-directory-name" / "run"
    result = runner.invoke(app, init_args(calibration, out, "--beta", "1.5"))
    assert result.exit_code == UsageError.exit_code
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
