"""Rendered examples -> token features with a response-only loss, and right-padded batches of
them: what training and the teacher-forced NLL of evaluation both feed the model."""

from __future__ import annotations

import random

import torch

from . import data, ui
from .data import Example
from .errors import InputError

IGNORE_INDEX = -100  # the label of a token that carries no loss (transformers' convention)


def tokenize_for_loss(example: Example, tokenizer, max_length: int) -> dict:
    """input_ids and labels; prompt tokens get label -100 so the loss covers the response only.
    `truncated` says whether the text was cut at max_length (a manifest counts them)."""
    ids, truncated = cut_ids(example.text, tokenizer, max_length, example.add_special_tokens)
    labels = list(ids)
    if example.prompt is not None:
        prompt_ids = tokenizer(example.prompt, add_special_tokens=example.add_special_tokens)["input_ids"]
        masked = min(len(prompt_ids), len(labels))
        labels[:masked] = [IGNORE_INDEX] * masked
    return {"input_ids": ids, "labels": labels, "truncated": truncated}


def cut_ids(text: str, tokenizer, max_length: int, add_special_tokens: bool = True) -> tuple[list[int], bool]:
    """The text's token ids, truncated to max_length as the tokenizer truncates, and whether it
    was longer (read off a max_length + 1 tokenisation: no untruncated pass, no length warning)."""
    ids = tokenizer(text, add_special_tokens=add_special_tokens, truncation=True, max_length=max_length + 1)["input_ids"]
    if len(ids) <= max_length:
        return ids, False
    return tokenizer(text, add_special_tokens=add_special_tokens, truncation=True, max_length=max_length)["input_ids"], True


def count_truncated(features: list[dict]) -> int:
    return sum(1 for feature in features if feature.get("truncated"))


def has_loss_tokens(feature: dict) -> bool:
    """False for a sample whose response was truncated away entirely."""
    return any(label != IGNORE_INDEX for label in feature["labels"])


def with_loss_tokens(features: list[dict], max_length: int) -> list[dict]:
    """Drop samples whose response was truncated away entirely: they would train on nothing."""
    kept = [f for f in features if has_loss_tokens(f)]
    if not kept:
        raise InputError(f"no sample has response tokens within --max-length {max_length}; raise --max-length.")
    if len(kept) < len(features):
        ui.warn(f"{len(features) - len(kept)} of {len(features)} samples have no response tokens within --max-length {max_length}; they are skipped.")
    return kept


def mixed_features(names: tuple[str, ...], tokenizer, max_length: int, seed: int) -> list[dict]:
    """Every row of the named datasets, rendered and tokenised for a response-only loss, shuffled
    together with `seed` (samples with no response tokens left dropped)."""
    features = []
    for name in names:
        loaded = data.load_dataset_rows(name, None, seed)
        features += [tokenize_for_loss(example, tokenizer, max_length) for example in data.render_all(loaded, tokenizer)]
    random.Random(seed).shuffle(features)
    return with_loss_tokens(features, max_length)


def right_padded(rows: list[list[int]], fill: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows as one (len(rows) x longest) long tensor padded on the right with `fill`, and the
    boolean mask of the real entries."""
    width = max(len(row) for row in rows)
    padded = torch.full((len(rows), width), fill, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for index, row in enumerate(rows):
        padded[index, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[index, : len(row)] = True
    return padded, mask


class Collator:
    """Right-pads input_ids (pad id), labels (-100) and builds the attention mask."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, features: list[dict]) -> dict:
        ids, mask = right_padded([f["input_ids"] for f in features], self.pad_id)
        labels, _ = right_padded([f["labels"] for f in features], IGNORE_INDEX)
        return {"input_ids": ids, "labels": labels, "attention_mask": mask.long()}
