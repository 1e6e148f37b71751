"""The GPU check (run it through bench/gpu_check.sh): the calibrate -> init -> train -> merge path on
a >= 1B-parameter Llama built from a config (random weights, no download), then on the embedded
SmolLM2 when its materialised directory is given, printing the time and peak GPU memory of every
stage. Calibrate runs twice, in memory and sequentially (one decoder block at a time), in bf16,
and the two covariances are compared; merge rebuilds W0 and checks it bit for bit. After init,
its I/O floor (issue 13, item 4: read, sha256 and write of the same checkpoint, as
bench/init_floor.py measures it) is timed, with init's ratio to it and its seconds per target layer.
First, the certified mixed-precision eigh is timed against the float64 eigh on the device, on a
dCov-like matrix of 4096 dimensions at rank 256 (bench/mixed_eigh.py's synthetic one).

It runs from the source tree (PYTHONPATH = the repository root, nothing installed), offline, and
imports nothing of datasets, rouge-score, gguf or matplotlib. `--cpu-smoke` runs the same path on
a tiny model on CPU in about a minute (peak memory is then the process's peak RSS).

Exit status 0 when every stage ran and passed its check; 1 otherwise (the failing line says why).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import peft
import torch
import transformers
from common import read_hash_write
from mixed_eigh import synthetic
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from transformers.utils import logging as transformers_logging

from sclora_tools import calibrate, init, merge, train
from sclora_tools.core import eigen, mixed_eigen
from sclora_tools.io.covariances import open_covariances
from sclora_tools.io.manifest_types import Role

DATASETS = Path(__file__).resolve().parents[1] / "sclora_tools" / "datasets"
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
EMBEDDED_VARIABLE = "SCLORA_EMBEDDED_DIR"
BUDGET_SECONDS = 8 * 60
NAME_WIDTH = 36
SEQUENTIAL_RTOL = 1e-3  # in-memory and sequential run the same bf16 blocks; float64 sums in another order


@dataclass(frozen=True)
class Workload:
    """How big each stage's job is."""

    samples: int
    max_length: int
    batch_size: int
    rank: int
    train_steps: int
    train_batch: int


# A TinyLlama-1.1B shape: 22 blocks, hidden 2048, intermediate 5632, GQA 32 / 4 heads, vocab 32000.
LLAMA_1B = {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32,
            "num_key_value_heads": 4, "vocab_size": 32000}
LLAMA_TINY = {"hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 4, "num_attention_heads": 4,
              "num_key_value_heads": 2, "vocab_size": 2048}
EIGEN_GPU, EIGEN_CPU = (4096, 256), (600, 16)  # (dimension, rank): Llama-2-7B's width at a rank Krylov leaves dense
GPU_WORK = Workload(samples=64, max_length=512, batch_size=8, rank=16, train_steps=10, train_batch=4)
CPU_WORK = Workload(samples=8, max_length=256, batch_size=4, rank=4, train_steps=2, train_batch=2)


@dataclass
class Stage:
    name: str
    seconds: float = 0.0
    peak_bytes: int | None = None
    result: str = ""
    passed: bool = True


@dataclass
class Check:
    """Runs stages one after the other, timing each and taking its peak memory."""

    device: str
    stages: list[Stage] = field(default_factory=list)

    def run(self, name: str, work: Callable[[], tuple[bool, str]]) -> bool:
        stage = Stage(name)
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        try:
            stage.passed, stage.result = work()
        except Exception as exc:  # noqa: BLE001 - a failed stage is a result to print, then the next model
            stage.passed, stage.result = False, f"FAILED: {type(exc).__name__}: {exc}"
            traceback.print_exc(file=sys.stderr)
        if self.device == "cuda":
            torch.cuda.synchronize()
        stage.seconds = time.perf_counter() - started
        stage.peak_bytes = torch.cuda.max_memory_allocated() if self.device == "cuda" else peak_rss()
        self.stages.append(stage)
        print(stage_line(stage, self.device), flush=True)
        return stage.passed

    def skip(self, name: str, why: str) -> None:
        self.stages.append(Stage(name, result=f"skipped: {why}"))
        print(f"{name:<{NAME_WIDTH}} {'skipped':>33}   {why}", flush=True)


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def gib(count: int | None) -> str:
    return "-" if count is None else f"{count / 2**30:.2f}"


def stage_line(stage: Stage, device: str) -> str:
    return f"{stage.name:<{NAME_WIDTH}} {stage.seconds:9.1f} s   {gib(stage.peak_bytes):>15} GiB   {stage.result}"


def header(device: str) -> str:
    memory = "peak GPU mem" if device == "cuda" else "peak RSS so far"
    return f"{'stage':<{NAME_WIDTH}} {'time':>11}   {memory:>19}   result"


def describe_machine(device: str) -> str:
    versions = f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}"
    if device == "cuda":
        properties = torch.cuda.get_device_properties(0)
        return f"{properties.name} ({properties.total_memory / 2**30:.0f} GiB), {versions}"
    return f"CPU only ({os.cpu_count()} cores), {versions}"


def build_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE learnt from the bundled datasets (so their texts take realistic token
    counts), with a ChatML template: no download."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train([str(path) for path in sorted(DATASETS.glob("*_train.jsonl"))], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", unk_token="<|endoftext|>")
    fast.chat_template = CHATML
    return fast


def build_random_llama(directory: Path, shape: dict, device: str) -> str:
    """A Llama of `shape` with random bf16 weights (initialised on `device`) and a tokenizer learnt
    from the bundled data, saved as a normal safetensors checkpoint."""
    tokenizer = build_tokenizer(shape["vocab_size"])
    special = {name: tokenizer.convert_tokens_to_ids(token) for name, token in
               (("pad_token_id", "<|endoftext|>"), ("bos_token_id", "<|im_start|>"), ("eos_token_id", "<|im_end|>"))}
    config = LlamaConfig(**shape, max_position_embeddings=4096, tie_word_embeddings=False, **special)
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    parameters = sum(p.numel() for p in model.parameters())
    model.save_pretrained(directory, max_shard_size="2GB")
    tokenizer.save_pretrained(directory)
    del model
    return f"{parameters / 1e6:,.1f} M parameters, {config.num_hidden_layers} blocks, {checkpoint_bytes(directory) / 2**20:,.1f} MiB"


def checkpoint_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in Path(directory).glob("*.safetensors"))


def run_calibrate(model: Path, output: Path, work: Workload, device: str, engine: str) -> tuple[bool, str]:
    manifest = calibrate(str(model), "dialogsum", "safety", output, samples=work.samples, max_length=work.max_length,
                         batch_size=work.batch_size, dtype="bfloat16", device=device, sequential=engine, progress=False)
    tokens = {d["role"]: d["tokens"] for d in manifest["datasets"]}
    return True, f"{len(manifest['config']['targets'])} layers, {tokens['+']:,} + / {tokens['-']:,} - tokens"


def compare_covariances(first: Path, second: Path) -> tuple[bool, str]:
    worst = 0.0
    for role in (Role.POS, Role.NEG):
        with open_covariances(first, role) as one, open_covariances(second, role) as two:
            if sorted(one.keys()) != sorted(two.keys()):
                return False, f"FAILED: the {role.short} covariances cover different layers"
            for key in one.keys():
                expected = one.get(key).double()
                difference = (two.get(key).double() - expected).abs().max() / expected.abs().max().clamp_min(1e-30)
                worst = max(worst, float(difference))
    passed = worst <= SEQUENTIAL_RTOL
    return passed, f"{'equal' if passed else 'FAILED: differ'} to in-memory: max |diff| / max |cov| = {worst:.1e}"


def run_eigen(device: str, dim: int, rank: int) -> tuple[bool, str]:
    """The certified mixed-precision eigh (core.mixed_eigen) against the float64 eigh on a
    dCov-like matrix on the device, where init's dense eigen work runs (eigen_device)."""
    matrix = synthetic(dim, device)
    warm = matrix[:64, :64].contiguous()  # the solver libraries' one-off start-up, outside the timings
    eigen.dense_top(warm, 8)
    mixed_eigen.mixed_top(warm, 8)
    dense, dense_seconds = timed(lambda: eigen.dense_top(matrix, rank), device)
    mixed, mixed_seconds = timed(lambda: mixed_eigen.mixed_top(matrix, rank), device)
    times = f"{dim} x rank {rank}: float64 eigh {dense_seconds:.2f} s, mixed {mixed_seconds:.2f} s ({dense_seconds / mixed_seconds:.2f}x)"
    if mixed is None:
        return True, f"{times}, mixed refused (init then pays both)"
    best = float(dense.values.sum())
    difference = abs(best - float(mixed.values.sum())) / abs(best)
    return difference <= 1e-6, f"{times}, R(S) {difference:.1e} relative apart"


def timed(solve: Callable[[], eigen.Eigenpairs | None], device: str) -> tuple[eigen.Eigenpairs | None, float]:
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    found = solve()
    if device == "cuda":
        torch.cuda.synchronize()
    return found, time.perf_counter() - started


def target_layers(run: Path) -> int:
    return len(json.loads((run / "manifest.json").read_text())["config"]["targets"])


def run_init(calib: Path, output: Path, work: Workload) -> tuple[bool, str]:
    manifest = init(calib, output, beta=0.5, rank=work.rank, progress=False)
    return True, f"method {manifest['config']['method']}, rank {work.rank}, {len(manifest['config']['targets'])} layers"


def run_floor(model: Path, output: Path, init_stage: Stage, layers: int) -> tuple[bool, str]:
    started = time.perf_counter()
    read_hash_write(model, output)
    floor = time.perf_counter() - started
    shutil.rmtree(output, ignore_errors=True)
    return True, (f"floor {floor:.1f} s; init {init_stage.seconds / floor:.2f}x it, "
                  f"{init_stage.seconds / max(layers, 1):.3f} s per target layer")


def run_train(run: Path, output: Path, work: Workload) -> tuple[bool, str]:
    manifest = train(run, output, data_argument="dialogsum", samples=work.train_steps * work.train_batch, max_steps=work.train_steps,
                     lr=1e-4, batch_size=work.train_batch, max_length=work.max_length, bf16=True, save_steps=10_000, progress=False)
    summary = manifest["summary"]
    finite = all(isinstance(v, float) and torch.isfinite(torch.tensor(v)) for v in (summary["first_loss"], summary["last_loss"]))
    loss = f"loss {summary['first_loss']:.3f} -> {summary['last_loss']:.3f}" if finite else "FAILED: non-finite loss"
    return finite and summary["steps"] == work.train_steps, f"{summary['steps']} steps, {loss}, {summary['tokens']:,} tokens"


def run_merge(trained: Path, output: Path) -> tuple[bool, str]:
    verification = merge(trained, output, progress=False)["verification"]
    passed = bool(verification["passed"])
    return passed, f"W0 check {'passed' if passed else 'FAILED'}: {verification['checked']} tensors bit-identical to the source"


def check_model(check: Check, label: str, model: Path, work: Path, workload: Workload) -> None:
    """calibrate (in memory, then sequential) -> init -> train -> merge on one model."""
    device = check.device
    calib, sequential_calib = work / f"{label}-calib", work / f"{label}-calib-sequential"
    if not check.run(f"{label}: calibrate in-memory", lambda: run_calibrate(model, calib, workload, device, "off")):
        return
    if check.run(f"{label}: calibrate sequential", lambda: run_calibrate(model, sequential_calib, workload, device, "on")):
        check.run(f"{label}: sequential == in-memory", lambda: compare_covariances(calib, sequential_calib))
    if not check.run(f"{label}: init", lambda: run_init(calib, work / f"{label}-run", workload)):
        return
    init_stage, layers = check.stages[-1], target_layers(work / f"{label}-run")
    check.run(f"{label}: init vs its I/O floor", lambda: run_floor(model, work / f"{label}-floor", init_stage, layers))
    if check.run(f"{label}: train", lambda: run_train(work / f"{label}-run", work / f"{label}-trained", workload)):
        check.run(f"{label}: merge + W0 check", lambda: run_merge(work / f"{label}-trained", work / f"{label}-merged"))


def embedded_directory(option: str | None) -> Path | None:
    chosen = option or os.environ.get(EMBEDDED_VARIABLE)
    return Path(chosen) if chosen else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="A tiny model on CPU: proves the path, measures nothing.")
    parser.add_argument("--embedded-dir", help=f"The materialised SmolLM2 directory (or ${EMBEDDED_VARIABLE}); skipped without.")
    parser.add_argument("--work", help="Where the artefacts go (default: a temporary directory, removed at the end).")
    arguments = parser.parse_args(argv)
    device = "cpu" if arguments.cpu_smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device is visible; run it on a GPU machine, or with --cpu-smoke here.", flush=True)
        return 1
    os.environ.setdefault("SCLORA_QUIET", "1")  # our stages' own tables: the check prints one line per stage
    transformers_logging.disable_progress_bar()  # weight loading and shard writing bars
    work = Path(arguments.work) if arguments.work else Path(tempfile.mkdtemp(prefix="sclora-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        return run_check(device, work, embedded_directory(arguments.embedded_dir))
    finally:
        if not arguments.work:
            shutil.rmtree(work, ignore_errors=True)


def run_check(device: str, work: Path, embedded: Path | None) -> int:
    started = time.perf_counter()
    check = Check(device)
    print(f"gpu_check on {describe_machine(device)}", flush=True)
    print(header(device), flush=True)
    shape, workload = (LLAMA_1B, GPU_WORK) if device == "cuda" else (LLAMA_TINY, CPU_WORK)
    check.run("eigen: mixed vs float64 eigh", lambda: run_eigen(device, *(EIGEN_GPU if device == "cuda" else EIGEN_CPU)))
    label = "llama-1b" if device == "cuda" else "llama-tiny"
    model = work / f"{label}-model"
    if check.run(f"{label}: build (random bf16)", lambda: (True, build_random_llama(model, shape, device))):
        check_model(check, label, model, work, workload)
        shutil.rmtree(model, ignore_errors=True)
    if embedded is None:
        check.skip("smollm2: every stage", f"no embedded model directory (give --embedded-dir DIR or ${EMBEDDED_VARIABLE})")
    elif not (embedded / "config.json").is_file():
        check.run("smollm2: every stage", lambda: (False, f"FAILED: {embedded} holds no config.json; give the materialised model directory"))
    else:
        check_model(check, "smollm2", embedded, work, workload)
    return finish(check, time.perf_counter() - started)


def finish(check: Check, seconds: float) -> int:
    failed = [s.name for s in check.stages if not s.passed]
    within = "within" if seconds < BUDGET_SECONDS else "OVER"
    print(f"total {seconds:.0f} s ({within} the {BUDGET_SECONDS // 60} min budget); "
          f"{'all stages passed' if not failed else 'FAILED: ' + ', '.join(failed)}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
