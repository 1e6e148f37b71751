"""The bad-input matrix, its rows about the world around a run: the Hub (401, 404, 429, 500, a
stall; offline with a Hub id), Ctrl-C and SIGTERM sent to a real process mid-run, and a disk that
fills up while writing (simulated, and a real small tmpfs where mounting is allowed). The harness is
tests/reliability/bad_input.py. A failed push must leave the Hub double without a new commit or
file, and say that nothing was published.
"""

from __future__ import annotations

import errno
import io
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from safetensors import SafetensorError

from sclora_tools.cli.app import app
from sclora_tools.errors import EXIT_INTERRUPTED, EXIT_TERMINATED, InputError, RemoteError, StorageError
from tests.cli.commands import assert_clean_failure
from tests.conftest import PUBLISHED
from tests.hubdouble.dataset_repos import serve_samsum
from tests.reliability.bad_input import Call, Rows, check_row

# ----------------------------------------------------------------------------- rows: offline, Hub datasets


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


# ----------------------------------------------------------------------------- rows: a full disk


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


# ----------------------------------------------------------------------------- rows: the Hub

NOTHING_PUBLISHED = "nothing was published"


def published_commits(hub) -> set[tuple[str, str]]:
    """(repository, commit) for every commit the Hub double holds."""
    return {(key, oid) for key in list(hub.repos) for oid in hub.repo(key).order}


def publishes_nothing(hub) -> Callable[[object], None]:
    """A row's check: after the push and its debug re-run, the double holds no commit it did not hold
    before, except the empty first commit (.gitattributes only) of a repository the push created."""
    before = published_commits(hub)

    def check(result) -> None:
        for key, oid in published_commits(hub) - before:
            commit = hub.repo(key).commits[oid]
            assert not commit.parents and set(commit.files) == {".gitattributes"}, f"{key} got commit {oid[:12]}: {sorted(commit.files)}"

    return check


def hub_row(r: Rows, phrases: tuple[str, ...], env: dict | None = None) -> Call:
    return Call(r.push(), RemoteError.exit_code, (*phrases, NOTHING_PUBLISHED), env=env or {}, check=publishes_nothing(r.fixture("fake_hub")))


def hub_unauthorized(r: Rows) -> Call:
    return hub_row(r, ("HTTP 401", "set HF_TOKEN to a valid token"), env={"HF_TOKEN": "hf_WrongTokenForTheDouble000000000000000"})


def hub_answer(status: int, pattern: str, phrases: tuple[str, ...], headers: dict | None = None):
    def row(r: Rows) -> Call:
        call = hub_row(r, (f"HTTP {status}", *phrases))
        r.fixture("fake_hub").inject(pattern, status, times=2, message=f"injected {status}", headers=headers)  # the run and its debug re-run
        return call

    return row


def hub_timeout(r: Rows) -> Call:
    call = hub_row(r, ("did not answer within 1.0 s", "SCLORA_HUB_TIMEOUT"), env={"SCLORA_HUB_TIMEOUT": "1"})
    r.fixture("fake_hub").inject(r"^POST /api/repos/create", stall=3.0, times=2)
    return call


# ----------------------------------------------------------------------------- rows: signals


def signal_mid_run(number: int, code: int, word: str):
    def row(r: Rows) -> Call:
        argv = r.calibrate(r.model, None, None, "--max-length", "256", "--json")
        return Call(argv, code, (word, "nothing that looks complete was written"), r.out(), send=number)

    return row


CASES = {
    "offline with a Hub id": offline_hub_model,
    "offline with a Hub dataset not cached": offline_hub_dataset,
    "a Hub dataset without the split": hub_dataset_without_the_split,
    "disk full while writing": disk_full_while_writing,
    "Hub 401": hub_unauthorized,
    "Hub 404": hub_answer(404, r"^GET /api/models/fake-org/tiny-sclora$", ("check --repo-id",)),
    "Hub 429": hub_answer(429, r"^POST /api/repos/create", ("rate", "wait a few minutes"), {"Retry-After": "60"}),
    "Hub 500": hub_answer(500, r"^POST /api/models/.*/commit/", ("the Hub failed",)),
    "Hub timeout": hub_timeout,
    "Ctrl-C (SIGINT)": signal_mid_run(signal.SIGINT, EXIT_INTERRUPTED, "interrupted"),
    "SIGTERM": signal_mid_run(signal.SIGTERM, EXIT_TERMINATED, "terminated (SIGTERM)"),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bad_input(case, request, runner, tmp_path, monkeypatch):
    check_row(CASES[case], request, runner, tmp_path, monkeypatch)


def test_a_real_full_disk(chain_for_disk, runner, tmp_path):
    """The same as the 'disk full' row on a real 256 KB filesystem (root only; skipped where mounting is not allowed)."""
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

