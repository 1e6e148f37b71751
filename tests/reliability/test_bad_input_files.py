"""The bad-input matrix, its rows about what the user hands in: data files, the model, init's
settings and damaged or NaN/Inf artefacts. One table, one test; the harness (what every row must
show) is tests/reliability/bad_input.py, the Hub, signal and disk rows are in
test_bad_input_environment.py. One row is not an error: samples longer than --max-length are cut
and counted.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from sclora_tools.errors import InputError, MismatchError, NumericalError, UsageError, VerificationError
from sclora_tools.io.manifest import load_manifest
from sclora_tools.io.manifest_types import Role
from tests.reliability import damage
from tests.reliability.bad_input import Call, Rows, check_row
from tests.tiny import write_jsonl

# ----------------------------------------------------------------------------- rows: data


def unknown_dataset(r: Rows) -> Call:
    return Call(r.calibrate(r.model, "no-such-dataset"), InputError.exit_code, ("no-such-dataset", "check the spelling"), r.out())


def empty_file(r: Rows) -> Call:
    return Call(r.calibrate(r.model, r.text_file("empty.jsonl", b"")), InputError.exit_code, ("empty.jsonl", "has no rows"), r.out())


def wrong_fields(r: Rows) -> Call:
    rows = write_jsonl(r.tmp / "odd.jsonl", [{"question": f"q{i}", "answer": "a"} for i in range(5)])
    return Call(r.calibrate(r.model, rows), InputError.exit_code, ("odd.jsonl", "prompt+response", "reshape the data"), r.out())


def not_utf8(r: Rows) -> Call:
    latin1 = r.text_file("latin1.jsonl", '{"text": "caf\u00e9 cr\u00e8me"}\n'.encode("latin-1"))
    return Call(r.calibrate(r.model, r.data["pos"], latin1), InputError.exit_code, ("latin1.jsonl", "not UTF-8", "re-save it as UTF-8"),
                r.out())


def rows_longer_than_max_length(r: Rows) -> Call:
    """Not an error: every + sample is cut to --max-length (24 tokens) and counted; no - sample is."""
    long = write_jsonl(r.tmp / "long.jsonl", [{"text": " ".join(["alice meets bob at the station"] * 20)} for _ in range(8)])
    short = write_jsonl(r.tmp / "short.jsonl", [{"text": "see you"} for _ in range(8)])

    def check(result) -> None:
        manifest = load_manifest(r.out(), "calibration")
        assert manifest.dataset(Role.POS).truncated == 8 and manifest.dataset(Role.NEG).truncated == 0
        assert manifest.dataset(Role.POS).tokens == 8 * 24
        assert "8 of 8 samples of long.jsonl are longer than --max-length 24" in " ".join(result.stderr.split())

    return Call(r.calibrate(r.model, long, short), 0, check=check)


# ----------------------------------------------------------------------------- rows: the model


def unknown_targets(r: Rows) -> Call:
    return Call(r.calibrate(r.model, None, None, "--targets", "qkv_proj"), UsageError.exit_code, ("--targets qkv_proj", "choose from"), r.out())


def truncated_weights(r: Rows) -> Call:
    model = damage.copy_model(r.model, r.tmp / "model")
    damage.truncate(model / "model.safetensors")
    return Call(r.calibrate(model), InputError.exit_code, ("model.safetensors", "truncated or damaged", "download or save"), r.out())


def bin_only_checkpoint(r: Rows) -> Call:
    model = damage.bin_only_model(r.model, r.tmp / "model")
    return Call(r.calibrate(model), InputError.exit_code, ("only pickle weights found", "never loads", "convert the model to safetensors"),
                r.out())


def needs_trust_remote_code(r: Rows) -> Call:
    model = damage.custom_code_model(r.model, r.tmp / "model", r.tmp / "code-ran")

    def check(result) -> None:
        assert not (r.tmp / "code-ran").exists()

    return Call(r.calibrate(model), InputError.exit_code, ("its own Python code", "--trust-remote-code"), r.out(), check=check)


def nan_in_weights(r: Rows) -> Call:
    model = damage.copy_model(r.model, r.tmp / "model")
    damage.poison_tensor(model / "model.safetensors", key="model.layers.0.mlp.up_proj.weight")
    return Call(r.calibrate(model), NumericalError.exit_code, ("model.layers.0.mlp.up_proj.weight", "NaN or Inf", "damaged"), r.out())



# ----------------------------------------------------------------------------- rows: init


def missing_targets(r: Rows) -> Call:
    calibration = r.copy(r.chain.calib, "calib")
    gone = "model.layers.7.self_attn.q_proj"

    def rename(manifest):
        first = manifest["config"]["sites"][0]
        manifest["config"]["targets"][manifest["config"]["targets"].index(first["serves"][0])] = gone
        first["serves"][0] = gone

    damage.edit_manifest(calibration, rename)
    return Call(r.init(calibration), MismatchError.exit_code, (gone, "re-run calibrate"), r.out())


def rank_too_large(r: Rows) -> Call:
    return Call(r.init(None, "--rank", "100"), UsageError.exit_code, ("--rank 100", "min(d_out, d_in)"), r.out())


def rank_not_positive(r: Rows) -> Call:
    return Call(r.init(None, "--rank", "0"), UsageError.exit_code, ("--rank", "positive integer"), r.out())


def beta_out_of_range(r: Rows) -> Call:
    return Call(r.init(None, "--beta", "1.5"), UsageError.exit_code, ("--beta", "[0, 1]"), r.out())


def calibration_of_another_model(r: Rows) -> Call:
    return Call(r.init(None, "--model", r.fixture("tiny_bf16")), MismatchError.exit_code, ("not the ones this calibration was made for",),
                r.out())


def calibration_of_another_revision(r: Rows) -> Call:
    """The model at the recorded place was updated after calibration (a new revision there)."""
    model = damage.copy_model(r.model, r.tmp / "model")
    damage.poison_tensor(model / "model.safetensors", 0.5, key="model.layers.1.self_attn.o_proj.weight")
    calibration = r.copy(r.chain.calib, "calib")
    damage.edit_manifest(calibration, lambda manifest: manifest["model"].update(path=str(model)))
    return Call(r.init(calibration), MismatchError.exit_code, ("not the ones this calibration was made for", "re-run calibrate"), r.out())


def inf_in_covariances(r: Rows) -> Call:
    calibration = r.copy(r.chain.calib, "calib")
    key = damage.poison_covariance(calibration, Role.POS, float("inf"))
    damage.rerecord_hash(calibration, "pos.safetensors")
    return Call(r.init(calibration), NumericalError.exit_code, (key, "NaN or Inf", "re-run calibrate"), r.out())


def foreign_output_folder(r: Rows) -> Call:
    mine = r.out()
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    return Call(r.init(), InputError.exit_code, ("not an sclora artefact", "choose an empty or new directory"), unchanged=mine)


# ----------------------------------------------------------------------------- rows: damaged files, train, merge


def damaged_file(artefact: str, relative: str, damage_with: Callable[[Path], object], stage: str):
    """A row: `stage` run on a private copy of the chain's `artefact` whose file `relative` was damaged."""

    def row(r: Rows) -> Call:
        copy = r.copy(getattr(r.chain, artefact), artefact)
        damage_with(copy / relative)
        return Call(getattr(r, stage)(copy), VerificationError.exit_code, (relative, "sha256", "re-create"), r.out())

    return row


def nan_in_trained_adapter(r: Rows) -> Call:
    trained = r.copy(r.chain.trained, "trained")
    damage.poison_tensor(trained / "adapter" / "adapter_model.safetensors")
    damage.rerecord_hash(trained, "adapter/adapter_model.safetensors")
    return Call(r.merge(trained), NumericalError.exit_code, ("NaN or Inf", "training diverged", "lower --lr"), r.out())


CASES = {
    "unknown dataset": unknown_dataset,
    "empty file": empty_file,
    "wrong fields": wrong_fields,
    "non-UTF-8 data file": not_utf8,
    "rows longer than max length (cut and counted)": rows_longer_than_max_length,
    "unknown targets": unknown_targets,
    "missing targets": missing_targets,
    "truncated weights": truncated_weights,
    ".bin-only checkpoint": bin_only_checkpoint,
    "needs trust_remote_code": needs_trust_remote_code,
    "NaN in weights": nan_in_weights,
    "rank > min(d_out, d_in)": rank_too_large,
    "rank <= 0": rank_not_positive,
    "beta outside [0, 1]": beta_out_of_range,
    "calibration of another model": calibration_of_another_model,
    "calibration of another revision": calibration_of_another_revision,
    "truncated covariances": damaged_file("calib", "pos.safetensors", damage.truncate, "init"),
    "bit-flipped covariances": damaged_file("calib", "neg.safetensors", damage.flip_byte, "init"),
    "Inf in covariances": inf_in_covariances,
    "output folder exists and is not ours": foreign_output_folder,
    "bit-flipped weights (residual)": damaged_file("run", "residual/model.safetensors", damage.flip_byte, "train"),
    "bit-flipped adapter": damaged_file("run", "adapter/adapter_model.safetensors", damage.flip_byte, "train"),
    "truncated adapter": damaged_file("trained", "adapter/adapter_model.safetensors", damage.truncate, "merge"),
    "truncated corrections": damaged_file("run", "exact/corrections.safetensors", damage.truncate, "merge"),
    "bit-flipped corrections": damaged_file("run", "exact/corrections.safetensors", damage.flip_byte, "merge"),
    "NaN in a trained adapter": nan_in_trained_adapter,
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bad_input(case, request, runner, tmp_path, monkeypatch):
    check_row(CASES[case], request, runner, tmp_path, monkeypatch)
