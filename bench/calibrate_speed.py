"""Calibrate against a plain forward over the same tokens (issue 13.1, target <= 1.15x).

    python bench/calibrate_speed.py [--model smollm2-135m-instruct | --wide] [--samples 32]
        [--max-length 256] [--batch-size 8] [--threads 2] [--repeats 3] [--quick]

One process, one model load, the same padded batches (dialogsum as D+, safety as D-), the same
dtype, batch size and thread count. Each repeat runs, back to back:
  forward     the decoder (the modules calibrate runs; no LM head) over every batch
  full        the whole model including the LM head (what "a forward" usually means)
  calibrate   calibrate's engine: the same decoder forward with the collector's hooks and
              float64 accumulation, then finishing (normalise, encode, write) every site
The median of the repeats is printed for each, with the ratios. `--wide` builds a random Llama
(hidden 2048, intermediate 5632, 4 layers) so the d^2 terms show.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from sclora_tools import data, models
from sclora_tools.calibration import batches as batching
from sclora_tools.calibration import in_memory
from sclora_tools.calibration.distributed import Ranks
from sclora_tools.calibration.resume import Checkpointer
from sclora_tools.calibration.sink import CovarianceSink
from sclora_tools.collect import plan_sites
from sclora_tools.core.covariance_codec import resolve_form
from sclora_tools.io.manifest_types import Role

ROLES = {Role.POS: "dialogsum", Role.NEG: "safety"}


def wide_model(directory: Path, tokenizer_source: Path) -> Path:
    """A random Llama with hidden 2048 (the shape the issue measured), saved with a real tokenizer."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=2048, intermediate_size=5632, num_hidden_layers=4,
                         num_attention_heads=16, num_key_value_heads=4, tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def load(arguments, scratch: Path):
    source = models.resolve_model(arguments.model)
    if arguments.wide:
        source = models.resolve_model(str(wide_model(scratch / "wide", source.path)))
    tokenizer = models.load_tokenizer(source.path)
    net = models.load_model(source, torch.float32, torch.device("cpu"))
    targets = models.discover_targets(net)
    sites = plan_sites(net, models.shared_input_groups(net, targets, torch.device("cpu")))
    samples = {}
    for role, name in ROLES.items():
        loaded = data.load_dataset_rows(name, arguments.samples, 0)
        examples = [data.render(row, tokenizer, loaded.spec, i) for i, row in enumerate(loaded.rows)]
        samples[role] = batching.tokenize(examples, tokenizer, arguments.max_length)
    return net, sites, samples


def time_forward(module, samples, batch_size, pad_id) -> float:
    started = time.perf_counter()
    with torch.inference_mode():
        for role_samples in samples.values():
            for batch in batching.batched(role_samples, batch_size):
                input_ids, mask = batching.padded(batch, pad_id, torch.device("cpu"))
                module(input_ids=input_ids, attention_mask=mask.long(), use_cache=False)
    return time.perf_counter() - started


def time_calibrate(net, sites, samples, batch_size, scratch: Path) -> float:
    ranks = Ranks()
    never = Checkpointer(scratch / "no-checkpoints", {}, 0)
    counts = {role: (len(s), batching.token_count(s)) for role, s in samples.items()}
    out = Path(tempfile.mkdtemp(dir=scratch))
    started = time.perf_counter()
    form = resolve_form("auto", min(tokens for _, tokens in counts.values()), max(site.dim for site in sites))
    with CovarianceSink(out, sites, form, ranks, counts, "token") as sink:
        for role, role_samples in samples.items():
            moments = in_memory.collect_role(net, sites, role_samples, batch_size, torch.float64, role, never, progress=False)
            sink.finish(role, moments)
            del moments
        sink.close()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--wide", action="store_true", help="random Llama, hidden 2048, intermediate 5632, 4 layers")
    parser.add_argument("--samples", type=int, default=32, help="per dataset")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smoke run: 8 samples of 64 tokens, one repeat")
    arguments = parser.parse_args()
    if arguments.quick:
        arguments.samples, arguments.max_length, arguments.repeats = 8, 64, 1
    torch.set_num_threads(arguments.threads)
    with tempfile.TemporaryDirectory() as scratch:
        net, sites, samples = load(arguments, Path(scratch))
        decoder, pad_id = net.get_decoder(), net.config.pad_token_id or 0
        tokens = sum(batching.token_count(s) for s in samples.values())
        time_forward(decoder, samples, arguments.batch_size, pad_id)  # warm-up
        runs = {"forward": [], "full": [], "calibrate": []}
        for _ in range(arguments.repeats):
            runs["forward"].append(time_forward(decoder, samples, arguments.batch_size, pad_id))
            runs["full"].append(time_forward(net, samples, arguments.batch_size, pad_id))
            runs["calibrate"].append(time_calibrate(net, sites, samples, arguments.batch_size, Path(scratch)))
    median = {name: statistics.median(values) for name, values in runs.items()}
    print(f"model {'random wide Llama (2048/5632/4)' if arguments.wide else arguments.model}, float32, {arguments.threads} threads, "
          f"batch {arguments.batch_size}, {tokens:,} tokens ({arguments.samples} + {arguments.samples} samples of <= {arguments.max_length}), "
          f"{len(sites)} sites, median of {arguments.repeats}; load {os.getloadavg()[0]:.2f}")
    for name, seconds in median.items():
        print(f"  {name:<10} {seconds:7.2f} s  {tokens / seconds:8,.0f} tok/s   runs: {', '.join(f'{v:.2f}' for v in runs[name])}")
    print(f"  calibrate / decoder forward = {median['calibrate'] / median['forward']:.3f}x   (target <= 1.15x)")
    print(f"  calibrate / full forward    = {median['calibrate'] / median['full']:.3f}x")


if __name__ == "__main__":
    main()
