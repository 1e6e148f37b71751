"""calibrate + init against PEFT's CorDA path to the same kind of result (issue 13, item 2).

    python bench/peft_corda.py [--quick] [--samples 24] [--max-length 128] [--rank 16]

Whole processes, one at a time, each measured for wall time and peak RSS (os.wait4):
  sclora   `calibrate` (24 dialogsum + 24 safety samples of <= 128 tokens) then `init` (rank 16),
           as two processes (wall: the sum; peak: the larger), with this checkout's code;
  sclora --sequential on   the same, calibrating one decoder block at a time (issue 12);
  sclora, one process      calibrate then init from the Python API in one process;
  today    the same with the code of git revision BASELINE_REF;
  CorDA    one process: load the model, preprocess_corda (KPM) over the same 48 samples one at a
           time (its hook takes batch 1), get_peft_model, save the adapter, unload and save the
           residual base model (safetensors).
Same model (the embedded SmolLM2-135M-Instruct, fp32), same targets (q, k, v, o, gate, up, down).
"Extra" memory is the peak minus the peak of a process that only imports the libraries.
Targets: sclora >= 2x faster end to end, <= 0.5x CorDA's extra peak memory.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from common import BASELINE_REF, baseline_code, build_llama, embedded_model, import_baseline_rss, machine, mib, run_python, table

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

CALIBRATE = """
from sclora_tools import calibrate
calibrate({model!r}, "dialogsum", "safety", {out!r}, samples={samples}, max_length={length}, progress=False{options})
"""

INIT = """
from sclora_tools import init
init({calibration!r}, {out!r}, rank={rank}, progress=False)
"""

CORDA = """
import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.lora.config import CordaConfig
from peft.tuners.lora.corda import preprocess_corda
from transformers import AutoModelForCausalLM, AutoTokenizer
from sclora_tools import data

tokenizer = AutoTokenizer.from_pretrained({model!r})
model = AutoModelForCausalLM.from_pretrained({model!r}, dtype=torch.float32)
texts = []
for name in ("dialogsum", "safety"):
    loaded = data.load_dataset_rows(name, {samples}, 0)
    texts += [data.render(row, tokenizer, loaded.spec, i).text for i, row in enumerate(loaded.rows)]
batches = [tokenizer(text, return_tensors="pt", truncation=True, max_length={length}) for text in texts]

@torch.no_grad()
def run_model():
    for batch in batches:
        model(**batch)

config = LoraConfig(r={rank}, lora_alpha={rank}, target_modules={targets!r}, init_lora_weights="corda",
                    corda_config=CordaConfig(corda_method="kpm"))
preprocess_corda(model, config, run_model=run_model)
peft_model = get_peft_model(model, config)
peft_model.save_pretrained({out!r} + "/adapter")
peft_model.unload().save_pretrained({out!r} + "/residual")
"""


def ours(model: Path, work: Path, samples: int, length: int, rank: int, root: Path | None, label: str, options: str = "") -> dict:
    calibration, out = work / f"calib-{label}", work / f"run-{label}"
    calibrate_code = CALIBRATE.format(model=str(model), out=str(calibration), samples=samples, length=length, options=options)
    calibrated = run_python(calibrate_code, code_root=root)
    initialised = run_python(INIT.format(calibration=str(calibration), out=str(out), rank=rank), code_root=root)
    detail = f"calibrate {calibrated.seconds:.1f} s / {mib(calibrated.peak_rss)}, init {initialised.seconds:.1f} s / {mib(initialised.peak_rss)}"
    return {"seconds": calibrated.seconds + initialised.seconds, "peak": max(calibrated.peak_rss, initialised.peak_rss), "detail": detail}


def ours_in_one_process(model: Path, work: Path, samples: int, length: int, rank: int) -> dict:
    """Both stages from the Python API in one process: the imports and the interpreter are paid once,
    as CorDA's single process pays them."""
    calibration, out = work / "calib-one", work / "run-one"
    code = (CALIBRATE.format(model=str(model), out=str(calibration), samples=samples, length=length, options="")
            + INIT.format(calibration=str(calibration), out=str(out), rank=rank))
    run = run_python(code)
    return {"seconds": run.seconds, "peak": run.peak_rss, "detail": "calibrate then init, one Python process"}


def corda(model: Path, work: Path, samples: int, length: int, rank: int) -> dict:
    run = run_python(CORDA.format(model=str(model), out=str(work / "corda"), samples=samples, length=length, rank=rank, targets=TARGETS))
    return {"seconds": run.seconds, "peak": run.peak_rss, "detail": "preprocess_corda + get_peft_model + save adapter and residual"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a tiny random Llama, 4 + 4 samples of 32 tokens: a smoke run")
    parser.add_argument("--samples", type=int, default=24)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--baseline-ref", default=BASELINE_REF)
    parser.add_argument("--no-today", action="store_true", help="skip today's code")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.quick:
            model = build_llama(work / "model", hidden=64, intermediate=172, layers=2, heads=4, kv_heads=2, dtype="float32")
            samples, length, rank = 4, 32, 4
        else:
            model, samples, length, rank = embedded_model(), args.samples, args.max_length, args.rank
        base = import_baseline_rss()
        rows = {"sclora": ours(model, work, samples, length, rank, None, "branch"),
                "sclora --sequential on": ours(model, work, samples, length, rank, None, "sequential", ", sequential='on'"),
                "sclora, one process": ours_in_one_process(model, work, samples, length, rank)}
        if not args.no_today:
            rows["today"] = ours(model, work, samples, length, rank, baseline_code(args.baseline_ref, work / "today-code"), "today")
        rows["CorDA"] = corda(model, work, samples, length, rank)
    reference = rows["CorDA"]
    extra = reference["peak"] - base
    lines = [(name, f"{r['seconds']:.1f}", f"{reference['seconds'] / r['seconds']:.2f}x", mib(r["peak"]), mib(r["peak"] - base),
              f"{(r['peak'] - base) / extra:.2f}x", r["detail"]) for name, r in rows.items()]
    print(table(lines, ("path", "wall s", "speed vs CorDA", "peak RSS", "extra over imports", "extra vs CorDA", "detail")))
    print(f"imports alone: {mib(base)}; {samples} + {samples} samples of <= {length} tokens, rank {rank}; {machine()}")


if __name__ == "__main__":
    main()
