"""python examples/safety_testbed/align.py [--out DIR] [--epochs 3] [--lr 1e-4]

Step 1 of the safety testbed: SmolLM2-135M-Instruct as shipped refuses almost no harmful request,
so align it first with a FULL fine-tune on the bundled `safety` (harmful request -> refusal),
`benign` (instruction -> answer) and `knowledge` (short factual QA) sets, then cache the result as
a normal model directory. Held-out sets are never used here; the testbed does not report knowledge
EM, since the knowledge set is part of this mix. One epoch at lr 1e-4 on safety + benign alone
taught the model to refuse 32% of held-out benign prompts (43% at lr 5e-5): too little training
learns "refuse" before it learns when.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from transformers import Trainer, TrainingArguments

from sclora_tools import models
from sclora_tools.features import Collator, mixed_features

CACHE = Path.home() / ".cache" / "sclora" / "testbed"


def default_out(epochs: float, lr: float) -> Path:
    return CACHE / f"smollm2-aligned-lr{lr:g}-ep{epochs:g}"


DATASETS = ("safety", "benign", "knowledge")


def align(out: Path, epochs: float, lr: float, batch_size: int, max_length: int, seed: int) -> Path:
    if (out / "alignment.json").is_file():
        cached = json.loads((out / "alignment.json").read_text())
        if (cached["epochs"], cached["lr"], cached["datasets"]) != (epochs, lr, list(DATASETS)):
            sys.exit(f"{out} holds another alignment ({cached['epochs']} epochs, lr {cached['lr']}, {cached['datasets']}); pass another --out.")
        print(f"aligned model already cached at {out}")
        return out
    source = models.resolve_model("smollm2-135m-instruct")
    tokenizer = models.load_tokenizer(source.path)
    model = models.load_model(source, torch.float32, torch.device("cpu")).train()
    features = mixed_features(DATASETS, tokenizer, max_length, seed)
    arguments = TrainingArguments(output_dir=str(out.with_suffix(".work")), num_train_epochs=epochs, learning_rate=lr,
                                  per_device_train_batch_size=batch_size, lr_scheduler_type="cosine", warmup_steps=3,
                                  weight_decay=0.0, logging_steps=5, save_strategy="no", report_to=[], seed=seed,
                                  use_cpu=True, remove_unused_columns=False)
    started = time.time()
    Trainer(model=model, args=arguments, train_dataset=features, data_collator=Collator(tokenizer.pad_token_id)).train()
    staging = out.with_name(out.name + ".tmp")
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    for extra in ("generation_config.json",):
        if (source.path / extra).is_file():
            (staging / extra).write_bytes((source.path / extra).read_bytes())
    record = {"base": "smollm2-135m-instruct", "gguf_sha256": source.revision, "datasets": list(DATASETS),
              "samples": len(features), "epochs": epochs, "lr": lr, "batch_size": batch_size, "max_length": max_length,
              "seed": seed, "seconds": round(time.time() - started, 1)}
    (staging / "alignment.json").write_text(json.dumps(record, indent=2) + "\n")
    staging.rename(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="default: ~/.cache/sclora/testbed/smollm2-aligned-lr{LR}-ep{EPOCHS}")
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=160)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(align(args.out or default_out(args.epochs, args.lr), args.epochs, args.lr, args.batch_size, args.max_length, args.seed))


if __name__ == "__main__":
    main()
