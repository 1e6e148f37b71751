"""Peak memory of `sclora merge` on a sharded model, side by side with PEFT's merge_and_unload.

    python bench/merge_memory.py [--layers 8] [--hidden 512] [--shard-mb 20]

Builds a random Llama (several safetensors shards), runs calibrate + init once, then measures
in fresh subprocesses the peak RSS (sampled every 2 ms) above the RSS right after the imports of:
  sclora merge (streamed, --shard-size as the source shards) and
  PEFT: from_pretrained(residual) + PeftModel + merge_and_unload + save_pretrained.
Prints the model size and each peak as a ratio to it.
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
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from sclora_tools import calibrate, init

SETUP = """
import threading, time, psutil, torch, transformers, peft, sclora_tools
process = psutil.Process()
start, peak, running = process.memory_info().rss, [0], [True]
def sample():
    while running[0]:
        peak[0] = max(peak[0], process.memory_info().rss)
        time.sleep(0.002)
watcher = threading.Thread(target=sample, daemon=True)
watcher.start()
"""
REPORT = "running[0] = False\nwatcher.join()\nprint('PEAK', max(peak[0], process.memory_info().rss) - start)"


def build_model(directory: Path, layers: int, hidden: int, shard_mb: int) -> int:
    config = LlamaConfig(vocab_size=512, hidden_size=hidden, intermediate_size=int(hidden * 2.6875), num_hidden_layers=layers,
                         num_attention_heads=8, num_key_value_heads=4, tie_word_embeddings=False)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(directory, max_shard_size=f"{shard_mb}MB")
    vocab = {chr(97 + i % 26) * (1 + i // 26): i for i in range(500)} | {"<pad>": 500, "<eos>": 501}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>").save_pretrained(directory)
    return sum(p.stat().st_size for p in directory.glob("*.safetensors"))


def write_data(path: Path, seed: int) -> Path:
    generator = torch.Generator().manual_seed(seed)
    rows = [{"text": " ".join(chr(97 + int(i)) for i in torch.randint(0, 26, (64,), generator=generator))} for _ in range(32)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def peak_bytes(code: str) -> int:
    out = subprocess.run([sys.executable, "-c", f"{SETUP}\n{code}\n{REPORT}"], capture_output=True, text=True, check=True,
                         env={**os.environ, "SCLORA_QUIET": "1", "HF_HUB_OFFLINE": "1"})
    return int(next(line.split()[1] for line in out.stdout.splitlines() if line.startswith("PEAK")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--shard-mb", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model_bytes = build_model(root / "model", args.layers, args.hidden, args.shard_mb)
        data = write_data(root / "d.jsonl", 0)
        calibrate(str(root / "model"), str(data), str(data), root / "calib", samples=32, max_length=64, progress=False)
        init(root / "calib", root / "run", rank=16, shard_bytes=args.shard_mb * 10**6, progress=False)
        ours = peak_bytes("from sclora_tools import merge\n"
                          f"merge({str(root / 'run')!r}, {str(root / 'out')!r}, shard_bytes={args.shard_mb * 10**6}, progress=False)")
        peft = peak_bytes("from transformers import AutoModelForCausalLM\nfrom peft import PeftModel\n"
                          f"m = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained({str(root / 'run' / 'residual')!r}), "
                          f"{str(root / 'run' / 'adapter')!r})\n"
                          f"m.merge_and_unload().save_pretrained({str(root / 'peft')!r}, max_shard_size='{args.shard_mb}MB')")
        shards = len(list((root / "model").glob("*.safetensors")))
    mib = 2**20
    print(f"model: {model_bytes / mib:.1f} MiB in {shards} shards of <= {args.shard_mb} MB")
    print(f"{'merge':<36}{'peak RSS above imports':>24}{'/ model size':>14}")
    for label, peak in (("sclora merge (streamed)", ours), ("PEFT merge_and_unload + save", peft)):
        print(f"{label:<36}{peak / mib:>20.1f} MiB{peak / model_bytes:>14.2f}")
    print(f"ratio sclora / PEFT peak: {ours / max(peft, 1):.2f}")


if __name__ == "__main__":
    main()
