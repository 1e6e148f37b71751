"""Shared fixtures: the tiny models (fp32, bf16, fp16) and data files, a batch of token ids, the
cached pipeline chain (`tiny_chain`) and the published run the push and card tests use, a CLI
runner, the fork server that starts `sclora` as real processes (`forkserver`), and the Hub test
double's fixtures (`fake_hub`, `fake_hub_factory`) through its plugin."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from transformers import AutoTokenizer
from typer.testing import CliRunner

from tests.chain import ChainFactory
from tests.reliability.processes import REPO, ForkServer
from tests.tiny import DTYPES, corpus, save_tiny, write_jsonl

pytest_plugins = ["tests.hubdouble.plugin"]

# calibrate (beta 0.9, r 4) -> train 2 steps -> merge: the run the push and card tests publish
PUBLISHED = {
    "calibrate": {"samples": 8, "max_length": 24, "batch_size": 8},
    "init": {"beta": 0.9, "rank": 4},
    "train": {"samples": 8, "max_steps": 2, "lr": 5e-3, "batch_size": 4, "max_length": 48},
    "merge": {},
}


@pytest.fixture(scope="session", autouse=True)
def private_hash_cache(tmp_path_factory):
    """Weight-file hashes remembered for this session only (io.hash_cache), in this process and in
    every process it starts: tests never write the user's cache."""
    os.environ["SCLORA_HASH_CACHE"] = str(tmp_path_factory.mktemp("hash-cache") / "file-hashes.json")
    yield
    os.environ.pop("SCLORA_HASH_CACHE", None)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """`tiny_model("fp32" | "bf16" | "fp16") -> Path`: each saved once per session, on first use."""
    saved: dict[str, Path] = {}

    def get(dtype: str) -> Path:
        if dtype not in saved:
            saved[dtype] = save_tiny(tmp_path_factory.mktemp(f"tiny-{dtype}"), DTYPES[dtype])
        return saved[dtype]

    return get


@pytest.fixture(scope="session")
def tiny_fp32(tiny_model) -> Path:
    return tiny_model("fp32")


@pytest.fixture(scope="session")
def tiny_bf16(tiny_model) -> Path:
    return tiny_model("bf16")


@pytest.fixture(scope="session")
def tiny_fp16(tiny_model) -> Path:
    return tiny_model("fp16")


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
    tokenizer = AutoTokenizer.from_pretrained(tiny_fp32)
    batch = tokenizer(corpus(4, 7), return_tensors="pt", padding=True)
    return batch["input_ids"], batch["attention_mask"]


@pytest.fixture(scope="session")
def tiny_chain(tiny_model, data_files, tmp_path_factory):
    """The cached calibrate -> init -> train -> merge factory (tests/chain.py). Its artefacts are
    shared: change one only through `tests.chain.fresh_copy`. The session fails if one was changed."""
    factory = ChainFactory(tiny_model, data_files, tmp_path_factory.mktemp)
    yield factory
    changed = factory.changed_artefacts()
    if changed:
        pytest.fail(f"tests wrote into shared tiny_chain artefacts (use fresh_copy): {changed}", pytrace=False)


@pytest.fixture(scope="session")
def merged_run(tiny_chain) -> Path:
    """calibrate -> init (beta 0.9, r 4) -> train (2 steps) -> merge of tiny_fp32, built once."""
    return tiny_chain(**PUBLISHED).merged


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(scope="session")
def forkserver(tmp_path_factory):
    """One fork server per session (its imports are the expensive part); children are offline."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "SCLORA_CACHE": str(tmp_path_factory.mktemp("sclora-cache"))}
    server = ForkServer(tmp_path_factory.mktemp("forked"), env)
    yield server
    server.close()
