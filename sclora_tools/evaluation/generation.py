"""Running a loaded model over a held-out set: batched greedy generation (left padding, the
checkpoint's sampling settings ignored, so a run is deterministic) and the teacher-forced NLL of
the reference responses."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from .. import ui
from ..core.refusal import mean_nll, response_nll_sums
from ..features import Collator, has_loss_tokens, tokenize_for_loss
from .sets import EvalSet

NLL_MAX_LENGTH = 1024


@dataclass
class Runner:
    """The loaded model and everything a set needs to run through it."""

    model: torch.nn.Module
    tokenizer: object
    device: torch.device
    batch_size: int
    bar: object


def generate_set(runner: Runner, evalset: EvalSet, max_new_tokens: int) -> list[str]:
    """Greedy generations for every prompt, in row order; batches are formed by prompt length."""
    prompts = [example.prompt for example in evalset.examples]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    generations: list[str] = [""] * len(prompts)
    task = runner.bar.add_task(f"{evalset.role} generate", total=len(prompts), rate="")
    started, produced = time.time(), 0
    for start in range(0, len(order), runner.batch_size):
        batch = order[start:start + runner.batch_size]
        texts, tokens = generate_texts(runner, [prompts[i] for i in batch], evalset.examples[0].add_special_tokens, max_new_tokens)
        for index, text in zip(batch, texts, strict=True):
            generations[index] = text
        produced += tokens
        runner.bar.update(task, advance=len(batch), rate=ui.tokens_per_second(produced, started))
    return generations


def generate_texts(runner: Runner, prompts: list[str], add_special_tokens: bool, max_new_tokens: int) -> tuple[list[str], int]:
    """Decode one left-padded batch greedily; returns the texts and the number of tokens generated."""
    tokenizer = runner.tokenizer
    tokenizer.padding_side = "left"
    encoded = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=add_special_tokens).to(runner.device)
    stops = stop_token_ids(runner.model, tokenizer)
    with torch.inference_mode():
        output = runner.model.generate(**encoded, generation_config=greedy_config(max_new_tokens, tokenizer, stops))
    rows = [until_stop(row.tolist(), stops) for row in output[:, encoded["input_ids"].shape[1]:]]
    return [tokenizer.decode(row, skip_special_tokens=True).strip() for row in rows], sum(len(row) for row in rows)


def stop_token_ids(model, tokenizer) -> list[int]:
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = configured if isinstance(configured, list) else [configured]
    return sorted({i for i in [*ids, tokenizer.eos_token_id] if i is not None})


def greedy_config(max_new_tokens: int, tokenizer, stops: list[int]):
    from transformers import GenerationConfig

    return GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, repetition_penalty=1.0,
                            pad_token_id=tokenizer.pad_token_id, eos_token_id=stops)


def until_stop(tokens: list[int], stops: list[int]) -> list[int]:
    """The generated tokens before the first end-of-sequence token (the rest is padding)."""
    for position, token in enumerate(tokens):
        if token in stops:
            return tokens[:position]
    return tokens


def reference_nll(runner: Runner, evalset: EvalSet) -> float | None:
    """Mean per-token NLL of the reference responses given their prompts (response tokens only)."""
    features = nll_features(evalset, runner.tokenizer)
    collate = Collator(runner.tokenizer.pad_token_id)
    task = runner.bar.add_task(f"{evalset.role} nll", total=len(features), rate="")
    total, tokens = 0.0, 0
    for start in range(0, len(features), runner.batch_size):
        batch = {key: value.to(runner.device) for key, value in collate(features[start:start + runner.batch_size]).items()}
        with torch.inference_mode():
            logits = runner.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        batch_total, batch_tokens = response_nll_sums(logits, batch["labels"])
        total, tokens = total + batch_total, tokens + batch_tokens
        runner.bar.update(task, advance=len(batch["input_ids"]), rate=f"{tokens:,} tokens")
    return mean_nll(total, tokens)


def nll_features(evalset: EvalSet, tokenizer) -> list[dict]:
    """Prompt-masked features, shortest first; samples whose response lies past the limit are left out."""
    features = [tokenize_for_loss(example, tokenizer, NLL_MAX_LENGTH) for example in evalset.examples]
    kept = [f for f in features if has_loss_tokens(f)]
    if len(kept) < len(features):
        ui.warn(f"{len(features) - len(kept)} of {len(features)} {evalset.role} samples have no response tokens within "
                f"{NLL_MAX_LENGTH} tokens; they are left out of the NLL.")
    return sorted(kept, key=lambda f: len(f["input_ids"]))
