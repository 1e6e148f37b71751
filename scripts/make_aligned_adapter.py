"""python scripts/make_aligned_adapter.py [--out sclora_tools/adapters/smollm2-135m-instruct-safety]

Makes the safety-alignment LoRA that ships inside the package: SmolLM2-135M-Instruct as embedded
refuses almost no harmful request, so `sclora demo` starts from the embedded model with this
adapter merged in. A LoRA (not the testbed's full fine-tune, align.py) so that it ships in a few
MB: rank 8 on every attention and MLP projection, trained on the bundled `safety` (harmful
request -> refusal), `benign` (instruction -> answer) and `knowledge` (short factual QA) sets with
a fixed seed, saved in PEFT's format as bfloat16 safetensors. `recipe.json` next to it records the
recipe, the training time and the sha256 of the adapter file (a test checks the shipped file
against it). Held-out sets are never used for training; check the result with

    sclora eval smollm2-135m-instruct --adapter sclora_tools/adapters/smollm2-135m-instruct-safety
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import Trainer, TrainerCallback, TrainingArguments

from sclora_tools import models
from sclora_tools.features import Collator, mixed_features
from sclora_tools.io.hashing import sha256_file

BASE = "smollm2-135m-instruct"
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "sclora_tools" / "adapters" / f"{BASE}-safety"
DATASETS = ("safety", "benign", "knowledge")
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class Throughput(TrainerCallback):
    """Prints step, loss and tokens/s as training goes (to budget the run on a loaded machine)."""

    def __init__(self, tokens_per_step: float) -> None:
        self.tokens_per_step, self.started = tokens_per_step, time.time()

    def on_log(self, args, state, control, logs=None, **kwargs):
        elapsed = time.time() - self.started
        rate = state.global_step * self.tokens_per_step / max(elapsed, 1e-9)
        print(f"step {state.global_step}/{state.max_steps} loss {logs.get('loss', float('nan')):.4f} "
              f"{elapsed:.0f} s {rate:.0f} tokens/s", flush=True)


def train_adapter(args) -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(args.seed)
    source = models.resolve_model(BASE)
    tokenizer = models.load_tokenizer(source.path)
    base = models.load_model(source, torch.float32, torch.device("cpu"))
    config = LoraConfig(r=args.rank, lora_alpha=args.alpha, lora_dropout=0.0, target_modules=TARGETS, task_type="CAUSAL_LM")
    model = get_peft_model(base, config)
    features = mixed_features(DATASETS, tokenizer, args.max_length, args.seed)
    tokens = sum(len(f["input_ids"]) for f in features)
    arguments = TrainingArguments(output_dir=str(args.out.with_name(args.out.name + ".work")), num_train_epochs=args.epochs,
                                  learning_rate=args.lr, per_device_train_batch_size=args.batch_size, lr_scheduler_type="cosine",
                                  warmup_steps=5, weight_decay=0.0, logging_steps=5, save_strategy="no", report_to=[],
                                  seed=args.seed, data_seed=args.seed, use_cpu=True, remove_unused_columns=False,
                                  disable_tqdm=True)
    started = time.time()
    trainer = Trainer(model=model, args=arguments, train_dataset=features, data_collator=Collator(tokenizer.pad_token_id),
                      callbacks=[Throughput(tokens / len(features) * args.batch_size)])
    result = trainer.train()
    recipe = {"base": BASE, "base_gguf_sha256": source.revision, "datasets": list(DATASETS), "samples": len(features),
              "tokens_per_epoch": tokens, "epochs": args.epochs, "steps": result.global_step, "lr": args.lr,
              "schedule": "cosine, 5 warmup steps", "batch_size": args.batch_size, "max_length": args.max_length,
              "rank": args.rank, "alpha": args.alpha, "target_modules": TARGETS, "dtype": "bfloat16", "seed": args.seed,
              "final_train_loss": round(result.training_loss, 4), "seconds": round(time.time() - started, 1),
              "torch_threads": torch.get_num_threads(), "script": "scripts/make_aligned_adapter.py"}
    return model, recipe


def save(model, recipe: dict, out: Path) -> None:
    """The adapter as bfloat16 safetensors + its config, and recipe.json with the file's sha256."""
    staging = out.with_name(out.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    model.to(torch.bfloat16)
    model.peft_config["default"].base_model_name_or_path = BASE
    model.save_pretrained(staging, safe_serialization=True, save_embedding_layers=False)
    adapter = staging / "adapter_model.safetensors"
    recipe["adapter_file"] = adapter.name
    recipe["adapter_bytes"] = adapter.stat().st_size
    recipe["adapter_sha256"] = sha256_file(adapter)
    (staging / "recipe.json").write_text(json.dumps(recipe, indent=2) + "\n")
    (staging / "README.md").unlink(missing_ok=True)
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    shutil.rmtree(out.with_name(out.name + ".work"), ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--alpha", type=float, default=16.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    model, recipe = train_adapter(args)
    save(model, recipe, args.out)
    print(json.dumps(recipe, indent=2))


if __name__ == "__main__":
    main()
