"""Shared fixtures: tiny Llama models built from a config (GQA, intermediate != hidden, fp32 and
bf16 and fp16) with a real byte-level BPE tokenizer and a ChatML template, and small datasets.
Everything offline."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("SCLORA_QUIET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

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


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

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


def build_model(dtype: torch.dtype, vocab_size: int, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # larger weights than the default init, so layers are not near-identity
        for name, param in model.named_parameters():
            if param.ndim == 2:
                param.normal_(0.0, 0.08)
    return model.to(dtype)


def save_tiny(directory: Path, dtype: torch.dtype) -> Path:
    tokenizer = build_tokenizer()
    model = build_model(dtype, len(tokenizer))
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_fp32(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("tiny-fp32"), torch.float32)


@pytest.fixture(scope="session")
def tiny_bf16(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("tiny-bf16"), torch.bfloat16)


@pytest.fixture(scope="session")
def tiny_fp16(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("tiny-fp16"), torch.float16)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def data_files(tmp_path_factory) -> dict[str, Path]:
    """pos: prompt/response rows; neg: text rows; chat: messages rows."""
    root = tmp_path_factory.mktemp("data")
    texts = corpus(120, 1)
    pos = [{"prompt": f"summarize this dialogue: {t}", "response": " ".join(t.split()[:4])} for t in texts[:60]]
    neg = [{"text": f"how do i {t}"} for t in texts[60:]]
    chat = [{"messages": [{"role": "user", "content": t}, {"role": "assistant", "content": "cannot help with that request"}]} for t in texts[:40]]
    return {
        "pos": write_jsonl(root / "pos.jsonl", pos),
        "neg": write_jsonl(root / "neg.jsonl", neg),
        "chat": write_jsonl(root / "chat.jsonl", chat),
    }


@pytest.fixture
def sample_ids(tiny_fp32):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_fp32)
    batch = tokenizer(corpus(4, 7), return_tensors="pt", padding=True)
    return batch["input_ids"], batch["attention_mask"]


from hub_fixtures import fake_hub, fake_hub_factory  # noqa: E402,F401  (Hub test double on 127.0.0.1)
