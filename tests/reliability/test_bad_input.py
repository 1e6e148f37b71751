"""The bad-input matrix: one table, one test. Every row runs `sclora` on one kind of bad input and
asserts the exit code (the specific one: errors.py), one `error:` sentence on stderr that names the
problem and the fix, no traceback (and, with SCLORA_DEBUG=1, the ScloraError behind it), and no
artefact or staging folder at the output. One row is not an error: samples longer than --max-length
are cut and counted. Ctrl-C and SIGTERM are sent to a real process in the middle of its run.
"""

from __future__ import annotations

import errno
import io
import os
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from safetensors import SafetensorError

from sclora_tools.cli.app import app
from sclora_tools.errors import (
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    InputError,
    MismatchError,
    NumericalError,
    RemoteError,
    ScloraError,
    StorageError,
    UsageError,
    VerificationError,
)
from sclora_tools.io.manifest import load_manifest
from sclora_tools.io.manifest_types import Role
from tests.chain import fresh_copy, tree_digest
from tests.cli.commands import assert_clean_failure, leftovers
from tests.conftest import PUBLISHED
from tests.documents import failure_of
from tests.hubdouble.dataset_repos import serve_samsum
from tests.publishing import REPO
from tests.reliability import damage
from tests.reliability.processes import wait_until_started
from tests.tiny import write_jsonl


@dataclass
class Call:
    """What a row runs and what it expects."""

    argv: list
    code: int
    phrases: tuple[str, ...] = ()
    output: Path | None = None  # nothing may appear there
    env: dict = field(default_factory=dict)
    unchanged: Path | None = None  # an existing folder that must come out byte for byte the same
    send: int | None = None  # run as a real process and send this signal once it holds its output's lock
    check: Callable[[object], None] | None = None  # more assertions on a successful run


class Rows:
    """The fixtures a row builds its input from, made on first use."""

    def __init__(self, request, tmp_path: Path, monkeypatch) -> None:
        self.request, self.tmp, self.monkeypatch = request, tmp_path, monkeypatch

    def fixture(self, name: str):
        return self.request.getfixturevalue(name)

    @property
    def chain(self):
        return self.fixture("tiny_chain")(**PUBLISHED)

    @property
    def model(self) -> Path:
        return self.fixture("tiny_fp32")

    @property
    def data(self) -> dict[str, Path]:
        return self.fixture("data_files")

    def out(self, name: str = "out") -> Path:
        return self.tmp / name

    def copy(self, artefact: Path, name: str) -> Path:
        return fresh_copy(artefact, self.tmp, name)

    def calibrate(self, model: Path | str, pos: Path | str | None = None, neg: Path | str | None = None, *extra: str) -> list:
        return ["calibrate", model, "--pos", pos or self.data["pos"], "--neg", neg or self.data["neg"], "-o", self.out(),
                "--samples", "8", "--max-length", "24", "--batch-size", "8", *extra]

    def init(self, calibration: Path | None = None, *extra: str) -> list:
        return ["init", calibration or self.chain.calib, "-o", self.out(), "--beta", "0.9", "--rank", "4", *extra]

    def train(self, run: Path) -> list:
        return ["train", run, "-o", self.out(), "--data", self.data["pos"], "--samples", "4", "--max-steps", "1", "--max-length", "32"]

    def merge(self, run: Path) -> list:
        return ["merge", run, "-o", self.out()]

    def push(self) -> list:
        self.fixture("fake_hub")
        return ["push", self.fixture("merged_run"), "--repo-id", REPO]

    def text_file(self, name: str, content: bytes) -> Path:
        path = self.tmp / name
        path.write_bytes(content)
        return path


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


def offline_hub_model(r: Rows) -> Call:
    return Call(r.calibrate("fake-org/never-downloaded"), InputError.exit_code, ("fake-org/never-downloaded", "HF_HUB_OFFLINE",
                "local model directory"), r.out(), env={"HF_HUB_OFFLINE": "1"})


def offline_hub_dataset(r: Rows) -> Call:
    r.fixture("fake_hub")  # an empty Hub cache of its own
    return Call(r.calibrate(r.model, "samsum"), InputError.exit_code, ("samsum (knkarthick/samsum) is not in the local Hub cache",
                "HF_HUB_OFFLINE", "the bundled stand-in dialogsum"), r.out(), env={"HF_HUB_OFFLINE": "1"})


def hub_dataset_without_the_split(r: Rows) -> Call:
    serve_samsum(r.fixture("fake_hub"))
    return Call(r.calibrate(r.model, "samsum:dev"), InputError.exit_code, ("has no split 'dev'", "test, train, validation",
                "ORG/NAME:SPLIT"), r.out())


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


def full_disk(monkeypatch) -> None:
    """safetensors' writer as it fails on a full disk (measured on a 1 MB tmpfs): part of the file, then this error."""

    def save_file(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\x00" * 64)
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr("sclora_tools.io.checkpoint.save_file", save_file)
    monkeypatch.setattr("sclora_tools.io.streaming_writer.open", filling_open, raising=False)


class FullDiskFile(io.FileIO):
    """A file on a disk that fills up after its first 64 bytes, as write(2) reports it."""

    def write(self, data) -> int:
        if self.tell() >= 64:
            raise OSError(errno.ENOSPC, "No space left on device", self.name)
        return super().write(bytes(data)[:64])


def filling_open(path, mode="r", *args, **kwargs):
    return FullDiskFile(path, mode.replace("b", "")) if "w" in mode else open(path, mode, *args, **kwargs)


def disk_full_while_writing(r: Rows) -> Call:
    full_disk(r.monkeypatch)
    return Call(r.init(), StorageError.exit_code, ("disk is full", "free some space"), r.out())


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


# ----------------------------------------------------------------------------- rows: the Hub


def hub_unauthorized(r: Rows) -> Call:
    argv = r.push()
    return Call(argv, RemoteError.exit_code, ("HTTP 401", "set HF_TOKEN to a valid token", "nothing was published"),
                env={"HF_TOKEN": "hf_WrongTokenForTheDouble000000000000000"})


def hub_answer(status: int, pattern: str, phrases: tuple[str, ...], headers: dict | None = None):
    def row(r: Rows) -> Call:
        argv = r.push()
        r.fixture("fake_hub").inject(pattern, status, times=2, message=f"injected {status}", headers=headers)  # the run and its debug re-run
        return Call(argv, RemoteError.exit_code, (f"HTTP {status}", *phrases))

    return row


def hub_timeout(r: Rows) -> Call:
    argv = r.push()
    r.fixture("fake_hub").inject(r"^POST /api/repos/create", stall=3.0, times=2)
    return Call(argv, RemoteError.exit_code, ("did not answer within 1.0 s", "SCLORA_HUB_TIMEOUT", "nothing was published"),
                env={"SCLORA_HUB_TIMEOUT": "1"})


# ----------------------------------------------------------------------------- rows: signals


def signal_mid_run(number: int, code: int, word: str):
    def row(r: Rows) -> Call:
        argv = r.calibrate(r.model, None, None, "--max-length", "256", "--json")
        return Call(argv, code, (word, "nothing that looks complete was written"), r.out(), send=number)

    return row


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
    "offline with a Hub id": offline_hub_model,
    "offline with a Hub dataset not cached": offline_hub_dataset,
    "a Hub dataset without the split": hub_dataset_without_the_split,
    "rank > min(d_out, d_in)": rank_too_large,
    "rank <= 0": rank_not_positive,
    "beta outside [0, 1]": beta_out_of_range,
    "calibration of another model": calibration_of_another_model,
    "calibration of another revision": calibration_of_another_revision,
    "truncated covariances": damaged_file("calib", "pos.safetensors", damage.truncate, "init"),
    "bit-flipped covariances": damaged_file("calib", "neg.safetensors", damage.flip_byte, "init"),
    "Inf in covariances": inf_in_covariances,
    "output folder exists and is not ours": foreign_output_folder,
    "disk full while writing": disk_full_while_writing,
    "bit-flipped weights (residual)": damaged_file("run", "residual/model.safetensors", damage.flip_byte, "train"),
    "bit-flipped adapter": damaged_file("run", "adapter/adapter_model.safetensors", damage.flip_byte, "train"),
    "truncated adapter": damaged_file("trained", "adapter/adapter_model.safetensors", damage.truncate, "merge"),
    "truncated corrections": damaged_file("run", "exact/corrections.safetensors", damage.truncate, "merge"),
    "bit-flipped corrections": damaged_file("run", "exact/corrections.safetensors", damage.flip_byte, "merge"),
    "NaN in a trained adapter": nan_in_trained_adapter,
    "Hub 401": hub_unauthorized,
    "Hub 404": hub_answer(404, r"^GET /api/models/fake-org/tiny-sclora$", ("check --repo-id",)),
    "Hub 429": hub_answer(429, r"^POST /api/repos/create", ("rate", "wait a few minutes"), {"Retry-After": "60"}),
    "Hub 500": hub_answer(500, r"^POST /api/models/.*/commit/", ("the Hub failed", "nothing was published")),
    "Hub timeout": hub_timeout,
    "Ctrl-C (SIGINT)": signal_mid_run(signal.SIGINT, EXIT_INTERRUPTED, "interrupted"),
    "SIGTERM": signal_mid_run(signal.SIGTERM, EXIT_TERMINATED, "terminated (SIGTERM)"),
}


def as_args(argv: list) -> list[str]:
    return [str(part) for part in argv]


def run_with_a_signal(forkserver, call: Call) -> None:
    child = forkserver.start(as_args(call.argv), env=call.env)
    assert wait_until_started(child, call.output), f"the run ended before the signal: {child.stderr}"
    child.signal(call.send)
    assert child.wait() == call.code, child.stderr
    lines = [line for line in child.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and all(" ".join(p.split()) in lines[0] for p in call.phrases), child.stderr
    assert "Traceback" not in child.stderr
    failure_of(child.stdout, call.argv[0], call.code, "interrupted" if call.send == signal.SIGINT else "terminated")  # --json
    assert not call.output.exists() and leftovers(call.output) == []  # the staging was removed on the way out


def assert_debug_shows_the_error(runner, call: Call) -> None:
    """With SCLORA_DEBUG=1 the same run raises the ScloraError itself (a traceback for the bug report)."""
    result = runner.invoke(app, as_args(call.argv), env={**call.env, "SCLORA_DEBUG": "1"})
    assert isinstance(result.exception, ScloraError) and result.exception.exit_code == call.code, repr(result.exception)
    assert result.exc_info is not None and result.exc_info[2] is not None
    if call.output is not None:
        assert not call.output.exists() and leftovers(call.output) == []


def test_the_matrix_has_every_required_row():
    assert len(CASES) >= 25


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bad_input(case, request, runner, tmp_path, monkeypatch):
    call = CASES[case](Rows(request, tmp_path, monkeypatch))
    before = tree_digest(call.unchanged) if call.unchanged is not None else None
    if call.send is not None:
        run_with_a_signal(request.getfixturevalue("forkserver"), call)
        return
    result = runner.invoke(app, as_args(call.argv), env=call.env)
    if call.code == 0:
        assert result.exit_code == 0, result.output
        call.check(result)
        return
    message = assert_clean_failure(result, call.output, *call.phrases, code=call.code)
    if "--json" in call.argv:
        assert " ".join(failure_of(result.stdout, call.argv[0], call.code)["message"].split()) in " ".join(message.split())
    if call.check is not None:
        call.check(result)
    if call.unchanged is not None:
        assert tree_digest(call.unchanged) == before and leftovers(call.unchanged) == []
    assert_debug_shows_the_error(runner, call)


def test_a_real_full_disk(chain_for_disk, runner, tmp_path):
    """The same as the 'disk full' row on a real 1 MB filesystem (root only; skipped where mounting is not allowed)."""
    disk = tmp_path / "small-disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.decode().strip()})")
    try:
        result = runner.invoke(app, ["init", str(chain_for_disk.calib), "-o", str(disk / "run"), "--beta", "0.9", "--rank", "4"])
        assert_clean_failure(result, disk / "run", "disk is full", code=StorageError.exit_code)
        assert os.listdir(disk) == []
    finally:
        subprocess.run(["umount", str(disk)], check=False)


@pytest.fixture
def chain_for_disk(tiny_chain):
    return tiny_chain(**PUBLISHED)

