"""Shared pieces of the bench scripts: models built from a config, the code of another git
revision to run side by side ("today"), child processes measured for wall time and peak RSS,
and the machine's load so every figure says under which conditions it was taken.

Every bench runs its contenders as separate processes, one at a time, and prints ratios.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
from transformers.utils import logging

from sclora_tools import models

REPO = Path(__file__).resolve().parents[1]
BASELINE_REF = "da272ef"  # main before issue 13: full eigh per layer, lzma corrections
ENV = {"HF_HUB_OFFLINE": "1", "SCLORA_QUIET": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}


@dataclass(frozen=True)
class Run:
    """One child process: wall seconds, peak resident set (bytes) and its stdout."""

    seconds: float
    peak_rss: int
    stdout: str

    def value(self, key: str) -> str:
        """The last `KEY value` line the child printed."""
        lines = [line.split(maxsplit=1)[1] for line in self.stdout.splitlines() if line.startswith(key + " ")]
        if not lines:
            raise RuntimeError(f"the child printed no {key} line:\n{self.stdout}")
        return lines[-1]


def read_hash_write(source: Path, out: Path) -> None:
    """The I/O floor of `sclora init` (issue 13, item 4): read every tensor of the checkpoint,
    sha256 it, write it to shards of the same size (plain safetensors + hashlib), which any init
    must at least do."""
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.glob("*.safetensors")):
        tensors = {}
        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():
                tensor = handle.get_tensor(name)
                hashlib.sha256(tensor.contiguous().reshape(-1).view(torch.uint8).numpy()).hexdigest()
                tensors[name] = tensor
        save_file(tensors, str(out / path.name), metadata={"format": "pt"})


def run_python(code: str, *, code_root: Path | None = None, cwd: Path | None = None, threads: int | None = None) -> Run:
    """Run `code` in a fresh interpreter (with `code_root` first on sys.path when given: another
    revision's sclora_tools) and measure it; raises with the child's stderr on failure."""
    env = {**os.environ, **ENV}
    if code_root is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(code_root), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    if threads is not None:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        # never the checkout as working directory: `python -c` puts it first on sys.path, ahead of PYTHONPATH
        child = subprocess.Popen([sys.executable, "-c", PEAK_PROBE + code], stdout=out, stderr=err, env=env, cwd=cwd or tempfile.gettempdir())
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if child.returncode != 0:
        raise RuntimeError(f"child failed ({child.returncode}):\n{stderr[-4000:]}")
    return Run(seconds=seconds, peak_rss=child_peak(stdout, usage.ru_maxrss * 1024), stdout=stdout)


# Linux carries a parent's RSS over into its child's ru_maxrss (the fork's copy of the parent's
# memory counts before exec), so a bench that built a 2 GB model in-process would see every child
# peak at >= 2 GB. The child therefore resets its own high-water mark first and reports it at exit.
PEAK_PROBE = """import atexit as _atexit
try:
    with open('/proc/self/clear_refs', 'w') as _refs:
        _refs.write('5')
    def _peak():
        with open('/proc/self/status') as _status:
            print('peak_kib', next(line.split()[1] for line in _status if line.startswith('VmHWM:')), flush=True)
    _atexit.register(_peak)
except OSError:
    pass
"""


def child_peak(stdout: str, fallback: int) -> int:
    """The peak RSS the child reported (bytes), or the kernel's rusage figure when it could not."""
    lines = [line.split()[1] for line in stdout.splitlines() if line.startswith("peak_kib ")]
    return int(lines[-1]) * 1024 if lines else fallback


def baseline_code(ref: str, into: Path) -> Path:
    """sclora_tools as of git revision `ref`, extracted under `into` (for PYTHONPATH)."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref, "sclora_tools"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def import_baseline_rss() -> int:
    """Peak RSS of a process that only imports what the contenders import."""
    return run_python("import torch, transformers, peft, safetensors, sclora_tools").peak_rss


def machine() -> str:
    load = os.getloadavg()
    return f"{os.cpu_count()} CPU cores, load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1/5/15 min)"


def embedded_model() -> Path:
    return Path(models.resolve_model("smollm2-135m-instruct").path)


def build_llama(directory: Path, *, hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int,
                dtype: str = "bfloat16", vocab_from: Path | None = None, shard_mb: int | None = None, seed: int = 0) -> Path:
    """A random Llama saved as safetensors, with the embedded model's tokenizer (a real vocabulary,
    so calibration sees varied tokens); built once per directory."""
    logging.disable_progress_bar()
    if (directory / "config.json").is_file():
        return directory
    tokenizer = AutoTokenizer.from_pretrained(vocab_from or embedded_model())
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=kv_heads, tie_word_embeddings=False,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, max_position_embeddings=2048)
    torch.manual_seed(seed)
    with torch.device("cpu"):
        model = LlamaForCausalLM(config).to(getattr(torch, dtype))
    kwargs = {"max_shard_size": f"{shard_mb}MB"} if shard_mb else {}
    model.save_pretrained(directory, **kwargs)
    tokenizer.save_pretrained(directory)
    return directory


WIDE_LLAMA = {"hidden": 2048, "intermediate": 5632, "layers": 4, "heads": 32, "kv_heads": 4}  # issue 13's "wider random Llama"
CALIBRATE = """
from sclora_tools import calibrate
calibrate({model!r}, "dialogsum", "safety", {out!r}, samples={samples}, max_length={length}, dtype="float32", progress=False)
"""


def calibrate_once(model: Path, out: Path, samples: int = 24, length: int = 128) -> Path:
    """The benches' calibration (dialogsum vs safety, fp32) in a child process, unless `out` has one."""
    if not (out / "manifest.json").is_file():
        run_python(CALIBRATE.format(model=str(model), out=str(out), samples=samples, length=length))
    return out


def model_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in Path(directory).glob("*.safetensors"))


def write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def table(rows: list[tuple], header: tuple) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows, strict=True)]
    line = lambda row: "  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True))  # noqa: E731
    return "\n".join([line(header), line(tuple("-" * w for w in widths)), *map(line, rows)])
