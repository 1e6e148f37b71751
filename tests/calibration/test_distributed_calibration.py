"""Data-parallel calibrate: `torchrun --nproc_per_node 2` (gloo, CPU) against one process, and a
rank that fails stops the others with one sentence instead of leaving them waiting."""

from __future__ import annotations

import datetime
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sclora_tools import calibrate
from sclora_tools.calibration.distributed import RankFailedError, Ranks, from_environment
from sclora_tools.errors import UsageError
from sclora_tools.io.covariances import open_covariances
from sclora_tools.io.manifest_types import CALIBRATION_ROLES, Role
from tests.documents import result_of

SCLORA = str(Path(sys.executable).parent / "sclora")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_ranks_under_torchrun_equal_one_process(tiny_fp32, data_files, tmp_path):
    options = ["--samples", "24", "--max-length", "40", "--batch-size", "4", "--storage", "float64", "--device", "cpu"]
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(free_port()), SCLORA, "calibrate", str(tiny_fp32), "--pos", str(data_files["pos"]),
               "--neg", str(data_files["neg"]), "-o", str(tmp_path / "two"), "--json", *options]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "SCLORA_QUIET": "0"}
    result = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = result_of(result.stdout, "calibrate")  # exactly one JSON document: rank 1 printed nothing on stdout
    single = calibrate(str(tiny_fp32), str(data_files["pos"]), str(data_files["neg"]), tmp_path / "one",
                       samples=24, max_length=40, batch_size=4, storage="float64", device="cpu", progress=False)
    assert manifest["config"]["world_size"] == 2 and single["config"]["world_size"] == 1
    for role, sign in (("pos", "+"), ("neg", "-")):
        ranks = manifest["config"]["samples_per_rank"][sign]
        assert len(ranks) == 2 and ranks[0] and ranks[1] and not set(ranks[0]) & set(ranks[1])
        assert sorted(ranks[0] + ranks[1]) == list(range(24))
        with open_covariances(tmp_path / "two", Role.parse(role)) as two, open_covariances(tmp_path / "one", Role.parse(role)) as one:
            assert two.keys() == one.keys()
            for key in one.keys():  # other batches, so other float32 batch products: float tolerance
                expected = one.get(key)
                torch.testing.assert_close(two.get(key), expected, rtol=1e-5, atol=1e-6 * expected.abs().max().item())
    tokens = {d["role"]: d["tokens"] for d in manifest["datasets"]}
    assert tokens == {d["role"]: d["tokens"] for d in single["datasets"]}
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["manifest.json", "neg.safetensors", "pos.safetensors"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging or checkpoint left behind


@pytest.mark.slow
def test_accelerate_launch_runs_two_ranks(tiny_fp32, data_files, tmp_path):
    """`accelerate launch --multi_gpu` sets the same variables as torchrun; on CPU it runs gloo."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()), SCLORA, "calibrate",
               str(tiny_fp32), "--pos", str(data_files["pos"]), "--neg", str(data_files["neg"]), "-o", str(tmp_path / "c"),
               "--samples", "12", "--max-length", "32", "--device", "cpu", "--json"]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = result_of(result.stdout, "calibrate")
    assert manifest["config"]["world_size"] == 2
    assert [len(share) for share in manifest["config"]["samples_per_rank"]["+"]] == [6, 6]


def one_rank(rank: int, init_file: str, outcome_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=120))
    ranks = Ranks(rank=rank, world_size=2)
    outcome = "finished"
    try:
        with ranks.phase():
            if rank == 1:
                raise ValueError("rank 1 cannot read its shard")
            total = torch.ones(3, dtype=torch.float64)  # rank 0 would go on to the collectives
        ranks.sum_to_writer(total)
    except RankFailedError as exc:
        outcome = f"stopped: {exc}"
    except ValueError as exc:
        outcome = f"failed: {exc}"
    Path(outcome_dir, f"rank{rank}").write_text(outcome)
    dist.destroy_process_group()


def test_a_failing_rank_stops_the_others_promptly(tmp_path):
    context = mp.get_context("spawn")
    processes = [context.Process(target=one_rank, args=(rank, str(tmp_path / "init"), str(tmp_path))) for rank in (0, 1)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
        assert process.exitcode == 0
    assert (tmp_path / "rank1").read_text() == "failed: rank 1 cannot read its shard"
    stopped = (tmp_path / "rank0").read_text()
    assert stopped.startswith("stopped: rank 1 of 2 failed") and "nothing was written" in stopped


@pytest.mark.parametrize("variables", [{"WORLD_SIZE": "2", "RANK": "2"}, {"WORLD_SIZE": "0", "RANK": "0"}])
def test_inconsistent_launcher_variables_are_refused(variables, monkeypatch):
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(UsageError, match="torchrun or accelerate launch"):
        from_environment("cpu")


def calibrate_as_rank(rank: int, port: int, arguments: dict, outcome_dir: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": str(rank)})
    manifest = calibrate(**arguments)
    Path(outcome_dir, f"rank{rank}.json").write_text(json.dumps(manifest))
    threads = [Path(task, "comm").read_text().strip() for task in Path("/proc/self/task").iterdir()]
    Path(outcome_dir, f"rank{rank}.threads").write_text(json.dumps(threads))


def test_sequential_engine_on_two_ranks_with_an_empty_share(tiny_bf16, data_files, tmp_path):
    """One sample per dataset: rank 1 has nothing to run, yet finishes every block with rank 0."""
    arguments = {"model": str(tiny_bf16), "pos": str(data_files["pos"]), "neg": str(data_files["neg"]), "output_dir": str(tmp_path / "two"),
                 "samples": 1, "max_length": 40, "storage": "float64", "device": "cpu", "sequential": "on", "progress": False}
    context = mp.get_context("spawn")
    port = free_port()
    processes = [context.Process(target=calibrate_as_rank, args=(rank, port, arguments, str(tmp_path))) for rank in (0, 1)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=240)
        assert process.exitcode == 0
    assert json.loads((tmp_path / "rank1.json").read_text()) is None  # rank 1 wrote and returned nothing
    for rank in (0, 1):  # the group is gone once calibrate returns: no gloo thread left to abort the interpreter's exit
        threads = json.loads((tmp_path / f"rank{rank}.threads").read_text())
        assert not [name for name in threads if "gloo" in name or "tcpstore" in name], threads
    manifest = json.loads((tmp_path / "rank0.json").read_text())
    assert manifest["config"]["engine"] == "sequential" and manifest["config"]["samples_per_rank"]["+"] == [[0], []]
    calibrate(**{**arguments, "output_dir": tmp_path / "one"})
    for role in CALIBRATION_ROLES:
        with open_covariances(tmp_path / "two", role) as two, open_covariances(tmp_path / "one", role) as one:
            for key in one.keys():
                assert torch.equal(two.get(key), one.get(key))  # the same single batch, summed with zeros
