"""`sclora train` under `torchrun --nproc_per_node 2` (gloo, CPU): the same global batch as one
process gives the same loss curve and adapter, rank 0 alone writes our files and prints, and
`--resume` under two processes continues from the checkpoint. `accelerate launch` (the README's
other command) gives the same run."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sclora_tools import train
from tests.documents import result_of

ROOT = Path(__file__).resolve().parents[2]
SCLORA = str(Path(sys.executable).parent / "sclora")
STEPS, SAVE_STEPS, SAMPLES = 4, 2, 100  # more samples than the file's 60 rows: a warning, rank 0's alone
OPTIONS = {"samples": SAMPLES, "max_steps": STEPS, "lr": 5e-3, "max_length": 64, "save_steps": SAVE_STEPS}
# The same samples make each optimiser step in both runs (accelerate's seeded sampler, rank r taking
# every other per-process batch), so the runs differ only in the order of float32 sums: all-reduce
# and the split of the token-weighted loss. 1e-5 relative leaves two orders of magnitude of margin
# over what we measured (6e-8 on the loss, 2e-7 on the factors).
LOSS_RTOL, WEIGHT_ATOL = 1e-5, 1e-5


@dataclass(frozen=True)
class Launch:
    resumed: Path  # the output after `--resume` from the checkpoint before the last
    uninterrupted: Path  # a copy of the output before that
    result: subprocess.CompletedProcess
    rank1_writes: list[str]  # paths rank 1 changed under the output, relative to it


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def cli_options(batch_size: int, data: Path) -> list[str]:
    """OPTIONS as `sclora train` flags."""
    flags = [(f"--{name.replace('_', '-')}", str(value)) for name, value in OPTIONS.items()]
    return [item for pair in flags for item in pair] + ["--batch-size", str(batch_size), "--data", str(data)]


def torchrun(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
            "--master_port", str(free_port()), *arguments]


def accelerate_launch(*arguments: str) -> list[str]:
    """`accelerate launch --multi_gpu` sets the variables torchrun sets; on CPU it runs gloo."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()), *arguments]


def launch(command: list[str]) -> subprocess.CompletedProcess:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "SCLORA_QUIET": "0", "PYTHONPATH": str(ROOT)}
    return subprocess.run(command, capture_output=True, text=True, env=environment, cwd=ROOT, timeout=600)


@pytest.fixture(scope="module")
def two_processes(small_run, data_files, tmp_path_factory):
    """One torchrun launch: train (batch 4 per process), keep a copy, drop the last checkpoint, --resume."""
    root = tmp_path_factory.mktemp("ddp")
    output, kept, writes = root / "two", root / "uninterrupted", root / "rank1_writes.json"
    result = launch(torchrun("-m", "tests.stages.train_launch", str(small_run()), str(output), str(kept), str(writes), "--",
                             *cli_options(4, data_files["pos"])))
    assert result.returncode == 0, result.stderr[-4000:]
    return Launch(output, kept, result, json.loads(writes.read_text()))


@pytest.fixture(scope="module")
def one_process(small_run, data_files, tmp_path_factory):
    output = tmp_path_factory.mktemp("single") / "one"
    train(small_run(), output, data_argument=str(data_files["pos"]), batch_size=8, progress=False, **OPTIONS)
    return output


def losses(directory: Path) -> list[tuple[int, float, int]]:
    return [(h["step"], h["loss"], h["tokens"]) for h in json.loads((directory / "loss_log.json").read_text())]


def manifest(directory: Path) -> dict:
    return json.loads((directory / "manifest.json").read_text())


def assert_same_curve(directory: Path, expected_directory: Path) -> None:
    curve, expected = losses(directory), losses(expected_directory)
    assert [step for step, _, _ in curve] == list(range(1, STEPS + 1))
    for (step, loss, tokens), (_, expected_loss, expected_tokens) in zip(curve, expected, strict=True):
        assert loss == pytest.approx(expected_loss, rel=LOSS_RTOL), step
        assert tokens == expected_tokens, step


def assert_same_adapter(directory: Path, expected_directory: Path) -> None:
    trained = load_file(directory / "adapter" / "adapter_model.safetensors")
    expected = load_file(expected_directory / "adapter" / "adapter_model.safetensors")
    assert trained.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(trained[key], expected[key], rtol=0, atol=WEIGHT_ATOL)


def test_two_processes_match_one_process_with_the_same_global_batch(two_processes, one_process):
    two, one = manifest(two_processes.uninterrupted), manifest(one_process)
    assert (two["config"]["train"]["world_size"], two["config"]["train"]["batch_size"]) == (2, 4)
    assert (one["config"]["train"]["world_size"], one["config"]["train"]["batch_size"]) == (1, 8)
    assert_same_curve(two_processes.uninterrupted, one_process)
    curve = losses(two_processes.uninterrupted)
    assert curve[-1][1] < curve[0][1]  # it learned
    drift = two["summary"]["subspace"]["update_outside_fraction"]
    assert drift == pytest.approx(one["summary"]["subspace"]["update_outside_fraction"], rel=1e-4)
    assert_same_adapter(two_processes.uninterrupted, one_process)


def test_resume_under_two_processes_continues_from_the_checkpoint(two_processes, one_process):
    resumed = result_of(two_processes.result.stdout, "train")  # stdout: rank 0's JSON document, nothing else
    assert resumed == manifest(two_processes.resumed) and resumed["summary"]["steps"] == STEPS
    # steps 1-2 come from the checkpoint's trainer state, 3-4 were trained again from checkpoint-2
    assert losses(two_processes.resumed) == pytest.approx(losses(two_processes.uninterrupted), rel=LOSS_RTOL)
    assert_same_adapter(two_processes.resumed, two_processes.uninterrupted)
    assert (two_processes.resumed / "checkpoints" / f"checkpoint-{STEPS}").is_dir()


def files_under(directory: Path) -> set[str]:
    return {p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()}


def assert_files_of_one_process_plus_rank_1_rng(output: Path, one_process: Path) -> None:
    """Rank 1's RNG state in every checkpoint, otherwise the files a one-process run writes."""
    two, checkpoints = files_under(output), [f"checkpoints/checkpoint-{step}" for step in (SAVE_STEPS, STEPS)]
    assert all(f"{checkpoint}/rng_state_{rank}.pth" in two for checkpoint in checkpoints for rank in (0, 1))
    as_one_process = {name.replace("rng_state_0.pth", "rng_state.pth") for name in two if not name.endswith("rng_state_1.pth")}
    assert as_one_process == files_under(one_process)  # nothing else, and no staging left over


def test_rank_0_alone_writes_our_files_and_prints(two_processes, one_process):
    writes = two_processes.rank1_writes
    assert writes and all(path.startswith("checkpoints/checkpoint-") for path in writes)  # its RNG state's folder only
    for output in (two_processes.uninterrupted, two_processes.resumed):
        assert_files_of_one_process_plus_rank_1_rng(output, one_process)
    stderr = two_processes.result.stderr
    assert stderr.count("sclora train") == 2  # one summary per run, rank 0's
    assert stderr.count("train ━") == 1  # one progress bar (the --json run shows none)
    rows, cut = stderr.count("has only 60 rows; using all of them"), stderr.count("longer than --max-length")
    assert rows == 2 and cut in (0, 2) and stderr.count("warning:") == rows + cut  # each warning once per run: rank 0's
    for noise in ("Warning", "Loading weights", "{'loss'", "OMP_NUM_THREADS"):  # Python warnings, bars, Trainer dicts
        assert noise not in stderr, noise


def test_bad_input_is_refused_once_and_the_other_rank_stops_with_one_sentence(small_run, tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    (output / "notes.txt").write_text("not ours")
    result = launch(torchrun(SCLORA, "train", str(small_run()), "-o", str(output), "--max-steps", "1"))
    assert result.returncode != 0 and result.stdout == ""
    ours = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(ours) == 2, result.stderr[-3000:]
    assert sum("holds other files (notes.txt)" in line for line in ours) == 1  # rank 0 alone checks the input
    assert sum("rank 1 of 2: another rank of this run stopped" in line for line in ours) == 1
    assert "internal error" not in result.stderr and "[rank" not in result.stderr  # no rank printed a traceback
    assert sorted(p.name for p in output.iterdir()) == ["notes.txt"]


@pytest.mark.slow
def test_accelerate_launch_trains_like_one_process(small_run, data_files, one_process, tmp_path):
    output = tmp_path / "accelerate"
    result = launch(accelerate_launch(SCLORA, "train", str(small_run()), "-o", str(output), "--json", *cli_options(4, data_files["pos"])))
    assert result.returncode == 0, result.stderr[-4000:]
    trained = result_of(result.stdout, "train")  # stdout: rank 0's JSON document, nothing else
    assert trained == manifest(output)
    assert (trained["config"]["train"]["world_size"], trained["config"]["train"]["batch_size"]) == (2, 4)
    assert_same_curve(output, one_process)
    assert_same_adapter(output, one_process)
    assert_files_of_one_process_plus_rank_1_rng(output, one_process)
    assert result.stderr.count("has only 60 rows; using all of them") == 1  # rank 0's warning alone
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr
