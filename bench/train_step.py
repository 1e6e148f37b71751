"""`sclora train` step time against a plain PEFT LoRA Trainer step (issue 13, item 5).

    python bench/train_step.py [--quick] [--batch-size 8] [--max-length 128] [--rank 16]

One init run (calibrate + init, rank 16, on the embedded SmolLM2-135M) is trained by:
  sclora  `train` (our Trainer settings, progress callback, loss log, drift tracking every 10
          steps, |dW|_F at the end);
  plain   transformers' Trainer on PeftModel.from_pretrained(residual, adapter): same data,
          same collator and padding, same batch, optimiser and schedule, no callbacks, no logging.
Each runs twice in fresh processes, for N1 and N2 steps; the time per step is
(t(N2) - t(N1)) / (N2 - N1), so loading, saving and other fixed costs cancel.
Target: sclora / plain <= 1.05x.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from common import build_llama, embedded_model, machine, run_python, table

PREPARE = """
from sclora_tools import calibrate, init
calibrate({model!r}, "dialogsum", "safety", {calibration!r}, samples=8, max_length=64, progress=False)
init({calibration!r}, {run!r}, rank={rank}, progress=False)
"""

OURS = """
from sclora_tools import train
train({run!r}, {out!r}, data_argument="dialogsum", samples={samples}, max_steps={steps}, batch_size={batch},
      max_length={length}, progress=False)
"""

PLAIN = """
import math, torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments
from sclora_tools import data, models
from sclora_tools.stages.train import Collator, tokenize_for_loss, with_loss_tokens

tokenizer = models.load_tokenizer({run!r} + "/residual")
loaded = data.load_dataset_rows("dialogsum", {samples}, 0)
examples = [data.render(row, tokenizer, loaded.spec, i) for i, row in enumerate(loaded.rows)]
features = with_loss_tokens([tokenize_for_loss(e, tokenizer, {length}) for e in examples], {length})
base = AutoModelForCausalLM.from_pretrained({run!r} + "/residual", dtype="auto")
model = PeftModel.from_pretrained(base, {run!r} + "/adapter", is_trainable=True)
arguments = TrainingArguments(output_dir={out!r}, max_steps={steps}, learning_rate=2e-5, per_device_train_batch_size={batch},
                              lr_scheduler_type="cosine", warmup_steps=math.ceil(0.03 * {steps}), weight_decay=0.0,
                              optim="adamw_torch", logging_strategy="no", save_strategy="no", seed=0, data_seed=0,
                              report_to=[], disable_tqdm=True, remove_unused_columns=False,
                              use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0)
Trainer(model=model, args=arguments, train_dataset=features, data_collator=Collator(tokenizer.pad_token_id)).train()
"""


def per_step(template: str, steps: tuple[int, int], **fields) -> tuple[float, float, float]:
    short, long = (run_python(template.format(steps=n, **fields)).seconds for n in steps)
    return short, long, (long - short) / (steps[1] - steps[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a tiny random Llama, 1 and 3 steps: a smoke run")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--steps", default="5,25", help="N1,N2")
    args = parser.parse_args()
    steps = (1, 3) if args.quick else tuple(int(n) for n in args.steps.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = build_llama(work / "model", hidden=64, intermediate=172, layers=2, heads=4, kv_heads=2, dtype="float32") \
            if args.quick else embedded_model()
        run_python(PREPARE.format(model=str(model), calibration=str(work / "calib"), run=str(work / "run"), rank=args.rank))
        fields = {"run": str(work / "run"), "samples": args.batch_size * steps[1], "batch": args.batch_size, "length": args.max_length}
        ours = per_step(OURS, steps, out=str(work / "ours"), **fields)
        plain = per_step(PLAIN, steps, out=str(work / "plain"), **fields)
    rows = [(name, f"{r[0]:.1f}", f"{r[1]:.1f}", f"{r[2]:.3f}") for name, r in (("sclora train", ours), ("plain PEFT", plain))]
    print(table(rows, ("trainer", f"{steps[0]} steps s", f"{steps[1]} steps s", "s per step")))
    print(f"sclora / plain per step: {ours[2] / plain[2]:.3f}x (target <= 1.05x); batch {args.batch_size} x <= {args.max_length} tokens, "
          f"rank {args.rank}; {machine()}")


if __name__ == "__main__":
    main()
