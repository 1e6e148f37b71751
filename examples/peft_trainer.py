# sclora calibrate smollm2-135m-instruct --pos dialogsum --neg safety --samples 64 -o calib && python examples/peft_trainer.py calib
import json
import sys
from importlib.resources import files
from pathlib import Path

from datasets import load_dataset
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForLanguageModeling, Trainer, TrainingArguments

from sclora_tools import preprocess_sclora

calibration = sys.argv[1]
base = json.loads(Path(calibration, "manifest.json").read_text())["model"]["path"]  # the calibrated model's directory
tokenizer = AutoTokenizer.from_pretrained(base)
tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(r=16, lora_alpha=16, target_modules="all-linear"))
preprocess_sclora(model, calibration, beta=0.9)  # A, B and the base weights (W_res) of every LoRA layer, in place
model.save_pretrained("out/sclora-init")  # the initial adapter, saved before any training step
data = load_dataset("json", data_files=str(files("sclora_tools.datasets") / "dialogsum_train.jsonl"), split="train[:64]")
data = data.map(lambda row: tokenizer(f"Summarize:\n{row['dialogue']}\nSummary: {row['summary']}", truncation=True, max_length=256),
                remove_columns=data.column_names)
arguments = TrainingArguments("out/run", max_steps=10, per_device_train_batch_size=4, learning_rate=2e-4, report_to=[])
Trainer(model=model, args=arguments, train_dataset=data, data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False)).train()
# a standard rank-2r LoRA for the ORIGINAL model: PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), "out/adapter")
model.save_pretrained("out/adapter", path_initial_model_for_weight_conversion="out/sclora-init")
