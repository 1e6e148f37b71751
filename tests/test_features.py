"""features.py: response-only loss labels, the loss-token filter and right-padded batches."""

from __future__ import annotations

import pytest
import torch

from sclora_tools import data, models
from sclora_tools.errors import InputError
from sclora_tools.features import IGNORE_INDEX, Collator, has_loss_tokens, mixed_features, right_padded, with_loss_tokens


def test_right_padding_masks_the_real_entries():
    padded, mask = right_padded([[5, 6, 7], [8]], 0)
    assert padded.tolist() == [[5, 6, 7], [8, 0, 0]] and padded.dtype == torch.long
    assert mask.tolist() == [[True, True, True], [True, False, False]]


def test_the_collator_pads_labels_with_the_ignore_index():
    batch = Collator(pad_id=0)([{"input_ids": [5, 6, 7], "labels": [IGNORE_INDEX, 6, 7]}, {"input_ids": [8], "labels": [8]}])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 6, 7], [8, IGNORE_INDEX, IGNORE_INDEX]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]] and batch["attention_mask"].dtype == torch.long


def test_samples_without_loss_tokens_are_dropped_or_refused():
    kept, empty = {"input_ids": [1, 2], "labels": [IGNORE_INDEX, 2]}, {"input_ids": [1], "labels": [IGNORE_INDEX]}
    assert has_loss_tokens(kept) and not has_loss_tokens(empty)
    assert with_loss_tokens([kept, empty], 8) == [kept]
    with pytest.raises(InputError, match="--max-length 8"):
        with_loss_tokens([empty], 8)


def test_mixed_features_take_every_row_of_each_set_shuffled_by_the_seed(tiny_fp32):
    tokenizer = models.load_tokenizer(tiny_fp32)
    names = ("safety", "benign")
    mixed = mixed_features(names, tokenizer, 256, seed=0)
    rows = sum(len(data.load_dataset_rows(name, None, 0).rows) for name in names)
    assert len(mixed) == rows and all(has_loss_tokens(feature) for feature in mixed)
    assert [f["input_ids"] for f in mixed] == [f["input_ids"] for f in mixed_features(names, tokenizer, 256, seed=0)]
    reordered = mixed_features(names, tokenizer, 256, seed=1)
    assert [f["input_ids"] for f in reordered] != [f["input_ids"] for f in mixed]
    assert sorted(map(tuple, (f["input_ids"] for f in reordered))) == sorted(map(tuple, (f["input_ids"] for f in mixed)))
