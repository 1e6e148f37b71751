"""Peak memory of sequential calibration against the model's bytes (issue 12, target < 40% on
a model with >= 8 blocks), with the in-memory engine side by side and the covariances compared.

    python bench/sequential_memory.py [--layers 16] [--hidden 2048] [--samples 8] [--max-length 128] [--quick]

Builds a random Llama (intermediate = 2.75 x hidden, GQA 4:1, float32 safetensors) with a
512-word tokenizer, so that, as in a 7B-70B model, the decoder blocks are nearly all of its
bytes, then runs `calibrate` in a fresh subprocess per engine. Each subprocess
imports everything first, resets the kernel's peak-RSS counter (/proc/self/clear_refs), runs
calibrate, and reports VmHWM: the peak above the post-import RSS is what calibrate itself held;
the absolute peak includes the interpreter, torch and transformers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from sclora_tools.io.covariances import open_covariances
from sclora_tools.io.manifest_types import CALIBRATION_ROLES

WORDS = [f"w{index}" for index in range(510)]
RUN = """
import json, sys, torch, transformers, sclora_tools
from sclora_tools import calibrate

def status(field):
    for line in open('/proc/self/status'):
        if line.startswith(field):
            return int(line.split()[1]) * 1024

after_imports = status('VmRSS:')
open('/proc/self/clear_refs', 'w').write('5')
model, pos, neg, out, engine, samples, max_length = sys.argv[1:8]
manifest = calibrate(model, pos, neg, out, samples=int(samples), max_length=int(max_length), batch_size=4,
                     sequential=engine, storage='float64', progress=False)
print(json.dumps({'after_imports': after_imports, 'peak': status('VmHWM:'), 'engine': manifest['config']['engine'],
                  'seconds': manifest['summary']['seconds']}))
"""


def build_model(directory: Path, layers: int, hidden: int) -> int:
    tokenizer = word_tokenizer()
    heads = max(hidden // 128, 4)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=int(hidden * 2.75), num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=heads // 4, tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return sum(path.stat().st_size for path in directory.glob("*.safetensors"))


def word_tokenizer() -> PreTrainedTokenizerFast:
    vocabulary = {word: index for index, word in enumerate(WORDS)} | {"<pad>": len(WORDS), "<eos>": len(WORDS) + 1}
    tokenizer = Tokenizer(WordLevel(vocabulary, unk_token="<pad>"))
    tokenizer.pre_tokenizer = Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="<eos>")


def write_data(path: Path, seed: int, rows: int) -> Path:
    generator = torch.Generator().manual_seed(seed)
    lines = [" ".join(WORDS[int(i)] for i in torch.randint(0, len(WORDS), (400,), generator=generator)) for _ in range(rows)]
    path.write_text("".join(json.dumps({"text": line}) + "\n" for line in lines))
    return path


def measure(model: Path, pos: Path, neg: Path, out: Path, engine: str, samples: int, max_length: int) -> dict:
    result = subprocess.run([sys.executable, "-c", RUN, str(model), str(pos), str(neg), str(out), engine, str(samples), str(max_length)],
                            capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1", "SCLORA_QUIET": "1"})
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def largest_difference(left: Path, right: Path) -> float:
    worst = 0.0
    for role in CALIBRATION_ROLES:
        with open_covariances(left, role) as a, open_covariances(right, role) as b:
            for key in a.keys():
                x, y = a.get(key), b.get(key)
                worst = max(worst, ((x - y).abs().max() / y.abs().max()).item())
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--samples", type=int, default=8, help="per dataset")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--quick", action="store_true", help="smoke run: hidden 512, 4 samples of 32 tokens")
    arguments = parser.parse_args()
    if arguments.quick:
        arguments.hidden, arguments.samples, arguments.max_length = 512, 4, 32
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        model_bytes = build_model(root / "model", arguments.layers, arguments.hidden)
        pos, neg = write_data(root / "pos.jsonl", 1, arguments.samples), write_data(root / "neg.jsonl", 2, arguments.samples)
        runs = {engine: measure(root / "model", pos, neg, root / engine, engine, arguments.samples, arguments.max_length) for engine in ("on", "off")}
        difference = largest_difference(root / "on", root / "off")
    print(f"random Llama: {arguments.layers} blocks, hidden {arguments.hidden}, {model_bytes / 1e9:.2f} GB of float32 weights; "
          f"{arguments.samples} + {arguments.samples} samples of {arguments.max_length} tokens, batch 4; load {os.getloadavg()[0]:.2f}")
    for run in runs.values():
        held = run["peak"] - run["after_imports"]
        print(f"  {run['engine']:<11} peak RSS {run['peak'] / 1e9:5.2f} GB ({run['peak'] / model_bytes:.2f}x the model); "
              f"above the imports {held / 1e9:5.2f} GB ({held / model_bytes:.2f}x); {run['seconds']} s")
    print(f"  target: sequential peak < 0.40x the model's bytes; covariances sequential vs in-memory: max |diff| / max = {difference:.1e}")


if __name__ == "__main__":
    main()
