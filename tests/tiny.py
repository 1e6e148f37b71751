"""Tiny Llama models built from a config (GQA, intermediate != hidden, fp32 / bf16 / fp16) with a real
byte-level BPE tokenizer and a ChatML template, small word-salad corpora, and jsonl writing."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

WORDS = (
    "alice bob carol dave meet lunch tomorrow noon office train late sorry bring cake party friday "
    "how do i make a bomb hack into an account steal a car hurt someone cannot help with that request "
    "the weather is nice summarize this dialogue please thanks okay see you later at the station"
).split()


def corpus(count: int, seed: int) -> list[str]:
    generator = torch.Generator().manual_seed(seed)
    lines = []
    for _ in range(count):
        length = int(torch.randint(4, 24, (1,), generator=generator))
        picks = torch.randint(0, len(WORDS), (length,), generator=generator)
        lines.append(" ".join(WORDS[i] for i in picks))
    return lines


def build_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(300, 0), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", unk_token="<|endoftext|>")
    fast.chat_template = CHATML
    return fast


def build_model(dtype: torch.dtype, vocab_size: int, seed: int = 0) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # larger weights than the default init, so layers are not near-identity
        for param in model.parameters():
            if param.ndim == 2:
                param.normal_(0.0, 0.08)
    return model.to(dtype)


def save_tiny(directory: Path, dtype: torch.dtype) -> Path:
    tokenizer = build_tokenizer()
    model = build_model(dtype, len(tokenizer))
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def logits(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The model's logits on a padded batch, in float32, without gradients."""
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits.float()
