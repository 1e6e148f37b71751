"""Concurrency: two processes that write the same output. A stage's output is locked for the whole
stage (`.NAME.lock` beside it, flock): a second writer, of the same stage or another, is refused at
once with one sentence naming the holder (exit 75, try again later) and the first one's artefact
comes out whole. Two processes materialising the embedded model into the cache: one builds, the
other waits and then uses that build. A lock left by a SIGKILLed process never blocks anybody.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sclora_tools import embedded
from sclora_tools.errors import BusyError
from sclora_tools.io.locks import lock_path, output_lock
from sclora_tools.io.manifest import load_manifest, verify_files
from tests.cli.commands import leftovers, squeeze
from tests.conftest import PUBLISHED
from tests.documents import failure_of
from tests.reliability.drivers import FAKE, make_fake_package
from tests.reliability.processes import holds_lock, wait_until_started

# ----------------------------------------------------------------------------- the lock itself


def test_a_second_holder_is_refused_with_one_sentence_and_the_lock_file_goes_with_the_holder(tmp_path):
    final = tmp_path / "run"
    with output_lock(final):
        assert lock_path(final).is_file()
        with pytest.raises(BusyError, match=r"another sclora process \(pid \d+\) is writing .*run right now") as refused:
            with output_lock(final):
                pass
        assert "\n" not in str(refused.value) and "choose another output directory" in str(refused.value)
    assert not lock_path(final).exists()
    with output_lock(final):  # free again
        pass
    assert leftovers(final) == []


def test_a_waiting_holder_gets_the_lock_when_the_first_one_lets_go(tmp_path):
    final, holding, waited = tmp_path / "cache-entry", threading.Event(), []

    def hold_briefly():
        with output_lock(final):
            holding.set()
            time.sleep(0.3)

    holder = threading.Thread(target=hold_briefly)
    holder.start()
    assert holding.wait(5)
    started = time.monotonic()
    with output_lock(final, wait=10, on_wait=lambda: waited.append(time.monotonic())):
        assert time.monotonic() - started >= 0.2
    holder.join()
    assert len(waited) == 1
    with output_lock(final), pytest.raises(BusyError):
        with output_lock(final, wait=0.3):
            pass


def test_a_lock_left_by_a_sigkilled_process_never_blocks(forkserver, tmp_path):
    final = tmp_path / "run"
    child = forkserver.start(call="tests.reliability.drivers:hold_lock", args=(final, 600))
    wait_for(lambda: holds_lock(child, final), child)
    with pytest.raises(BusyError, match=str(child.pid)):
        with output_lock(final):
            pass
    child.signal(signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL
    assert lock_path(final).read_text().strip() == str(child.pid)  # the file outlives its holder ...
    with output_lock(final):  # ... but not its lock
        assert lock_path(final).read_text().strip() != str(child.pid)
    assert not lock_path(final).exists()


# ----------------------------------------------------------------------------- two stages, one output


@pytest.fixture(scope="module")
def chain(tiny_chain):
    return tiny_chain(**PUBLISHED)


def assert_refused_as_busy(child, holder, command: str) -> None:
    assert child.wait() == BusyError.exit_code, child.stderr
    lines = [line for line in child.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), child.stderr
    assert f"pid {holder.pid}" in squeeze(lines[0]) or f"(pid{holder.pid})" in squeeze(lines[0])
    assert "Traceback" not in child.stderr
    failure_of(child.stdout, command, BusyError.exit_code, "busy")  # each is run with --json


def test_a_second_stage_writing_the_same_output_is_refused_and_the_first_finishes_whole(forkserver, chain, data_files, tmp_path):
    output = tmp_path / "trained"
    first = forkserver.start(["train", chain.run, "-o", output, "--data", data_files["pos"], "--samples", "8", "--max-steps", "12",
                              "--batch-size", "4", "--max-length", "48", "--json"])
    assert wait_until_started(first, output)
    same_stage = forkserver.start(["train", chain.run, "-o", output, "--data", data_files["pos"], "--max-steps", "1", "--json"])
    assert_refused_as_busy(same_stage, first, "train")
    other_stage = forkserver.start(["init", chain.calib, "-o", output, "--rank", "4", "--json"])
    assert_refused_as_busy(other_stage, first, "init")
    assert holds_lock(first, output)
    assert first.wait() == 0, first.stderr
    manifest = load_manifest(output, "train")
    verify_files(output, manifest)
    assert manifest.summary.steps == 12
    assert leftovers(output) == []


# ----------------------------------------------------------------------------- the embedded model's cache


def start_materializing(forkserver, tmp_path: Path, seconds: float):
    return forkserver.start(call="tests.reliability.drivers:materialize_fake",
                            args=(tmp_path / "site", tmp_path / "cache", tmp_path / "builds.log", seconds))


def built_by(tmp_path: Path) -> list[str]:
    log = tmp_path / "builds.log"
    return log.read_text().split() if log.exists() else []


def wait_for(condition: Callable[[], bool], child) -> None:
    """Until `condition()` holds; `child` must keep running meanwhile."""
    while not condition():
        assert child.poll() is None, child.stderr
        time.sleep(0.01)


def cache_entry(tmp_path: Path) -> Path:
    gguf = tmp_path / "site" / "sclora_fake_embedded" / "tiny.gguf"
    return embedded.model_cache_dir(FAKE, embedded.sha256_file(gguf), tmp_path / "cache")


def test_two_processes_materialising_the_embedded_model_build_it_once(forkserver, tmp_path):
    make_fake_package(tmp_path / "site")
    first = start_materializing(forkserver, tmp_path, 2.0)
    wait_for(lambda: built_by(tmp_path), first)
    second = start_materializing(forkserver, tmp_path, 2.0)
    assert first.wait() == 0 and second.wait() == 0, (first.stderr, second.stderr)
    assert built_by(tmp_path) == [str(first.pid)]
    assert "Waiting for another process" in second.stderr
    target = cache_entry(tmp_path)
    assert first.stdout.strip() == second.stdout.strip() == str(target)
    assert embedded.read_manifest(target)["safetensors"]["model.safetensors"]["size"] == len(b"weights")
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]  # no staging, no lock


def test_a_waiting_process_builds_the_model_when_the_builder_is_killed(forkserver, tmp_path):
    make_fake_package(tmp_path / "site")
    doomed = start_materializing(forkserver, tmp_path, 600.0)
    wait_for(lambda: built_by(tmp_path), doomed)
    waiter = start_materializing(forkserver, tmp_path, 0.5)
    wait_for(lambda: "Waiting for another process" in waiter.stderr, waiter)
    doomed.signal(signal.SIGKILL)
    assert doomed.wait() == -signal.SIGKILL
    assert waiter.wait(timeout=60) == 0, waiter.stderr
    assert built_by(tmp_path) == [str(doomed.pid), str(waiter.pid)]
    target = cache_entry(tmp_path)
    assert waiter.stdout.strip() == str(target) and embedded.read_manifest(target) is not None
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]  # the killed build's staging is gone
