"""`sclora merge`: peak memory against the largest shard and throughput against a plain
safetensors read + write of the same files (issue 13, item 6).

    python bench/merge_speed.py [--quick] [--hidden 2048] [--layers 4] [--shard-mb 500]

Builds a random Llama (bf16, several shards; intermediate 2.75 x hidden), runs calibrate and
init once (rank 64), trains nothing (merge of the init output, which rebuilds W0 and verifies
every tensor's sha256), then in fresh processes, one at a time:
  merge   sclora merge -o (rebuild + sha256 check + merged model + rank-2r LoRA), same shard size;
  plain   for each residual shard: safetensors load_file, then save_file (no hashing, no maths).
Prints peak RSS (absolute and above a process that only imports the libraries) against the
largest shard (target: peak <= largest shard + 1 GiB) and MB/s of checkpoint bytes for both.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from common import build_llama, import_baseline_rss, machine, mib, model_bytes, run_python, table

PREPARE = """
from sclora_tools import calibrate, init
calibrate({model!r}, "dialogsum", "safety", {calibration!r}, samples={samples}, max_length=64, dtype="float32", progress=False)
init({calibration!r}, {run!r}, rank={rank}, shard_bytes={shard}, progress=False)
"""

MERGE = """
from sclora_tools import merge
merge({run!r}, {out!r}, shard_bytes={shard}, progress=False)
"""

PLAIN = """
from pathlib import Path
from safetensors.torch import load_file, save_file
out = Path({out!r})
out.mkdir(parents=True, exist_ok=True)
for path in sorted(Path({source!r}).glob("*.safetensors")):
    save_file(load_file(str(path)), str(out / path.name), metadata={{"format": "pt"}})
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="hidden 128, 2 layers, 2 MB shards: a smoke run")
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--shard-mb", type=int, default=500)
    parser.add_argument("--rank", type=int, default=64)
    args = parser.parse_args()
    hidden, layers, shard_mb, rank, samples = (128, 2, 2, 8, 4) if args.quick else (args.hidden, args.layers, args.shard_mb, args.rank, 16)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = build_llama(work / "model", hidden=hidden, intermediate=int(hidden * 2.75), layers=layers, heads=max(hidden // 128, 2),
                            kv_heads=max(hidden // 512, 1), dtype="bfloat16", shard_mb=shard_mb)
        shard = shard_mb * 10**6
        run_python(PREPARE.format(model=str(model), calibration=str(work / "calib"), run=str(work / "run"), rank=rank, shard=shard,
                                  samples=samples))
        residual = work / "run" / "residual"
        total, largest = model_bytes(residual), max(p.stat().st_size for p in residual.glob("*.safetensors"))
        shards = len(list(residual.glob("*.safetensors")))
        base = import_baseline_rss()
        merged = run_python(MERGE.format(run=str(work / "run"), out=str(work / "merged"), shard=shard))
        plain = run_python(PLAIN.format(source=str(residual), out=str(work / "plain")))
    rows = [(name, f"{r.seconds:.1f}", f"{total / 1e6 / r.seconds:,.0f}", mib(r.peak_rss), mib(r.peak_rss - base),
             f"{(r.peak_rss - largest) / 2**30:+.2f} GiB") for name, r in (("sclora merge", merged), ("plain read+write", plain))]
    print(table(rows, ("process", "wall s", "MB/s", "peak RSS", "above imports", "peak - largest shard")))
    print(f"checkpoint {mib(total)} in {shards} shards, largest {mib(largest)}; merge / plain time {merged.seconds / plain.seconds:.2f}x; "
          f"target: peak <= largest shard + 1 GiB: {'met' if merged.peak_rss <= largest + 2**30 else 'MISSED'}; {machine()}")


if __name__ == "__main__":
    main()
