"""Only safetensors are loaded, and a model's own Python code runs only with --trust-remote-code.

Read from the source: no pickle, torch.load or numpy.load anywhere in the package, and every
from_pretrained says use_safetensors=True (models) and trust_remote_code explicitly (models and
tokenizers). Shown by running it: pickles planted beside the safetensors (a "pickle bomb" that
writes a file when unpickled) are never opened by calibrate, eval or train --resume; pickle-only
models and adapters are refused with the reason; a model with its own code is refused without the
flag and runs with it.
"""

from __future__ import annotations

import ast
import shutil
import sys
from pathlib import Path

import pytest
from transformers import dynamic_module_utils

import sclora_tools
from sclora_tools import train
from sclora_tools.cli.app import app
from sclora_tools.errors import InputError
from sclora_tools.training.resume import SEAL
from tests.cli.commands import assert_clean_failure
from tests.conftest import PUBLISHED
from tests.reliability.damage import bin_only_model, copy_model, custom_code_model, write_pickle_bomb

PACKAGE = Path(sclora_tools.__file__).parent
FORBIDDEN_CALLS = {("torch", "load"), ("pickle", "load"), ("pickle", "loads"), ("numpy", "load"), ("np", "load"), ("torch", "jit")}


def calls_in_the_package():
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                yield path.relative_to(PACKAGE), node


def owner(call: ast.Call) -> str:
    value = call.func.value
    return value.id if isinstance(value, ast.Name) else ast.unparse(value)


def keywords(call: ast.Call) -> dict[str, str]:
    return {keyword.arg: ast.unparse(keyword.value) for keyword in call.keywords}


def test_the_source_loads_no_pickle_and_says_safetensors_and_trust_remote_code_every_time():
    checked = 0
    for where, call in calls_in_the_package():
        pair = (owner(call), call.func.attr)
        assert pair not in FORBIDDEN_CALLS, f"{where}:{call.lineno} calls {'.'.join(pair)}"
        if call.func.attr != "from_pretrained" or not owner(call).startswith("Auto"):
            continue
        given = keywords(call)
        assert given.get("trust_remote_code") in ("False", "trust_remote_code"), f"{where}:{call.lineno}: trust_remote_code left implicit"
        if owner(call).startswith("AutoModel") and "gguf_file" not in given:
            assert given.get("use_safetensors") == "True", f"{where}:{call.lineno}: use_safetensors=True missing"
        checked += 1
    assert checked >= 5
    imported = {alias.name for path in PACKAGE.rglob("*.py") for node in ast.walk(ast.parse(path.read_text()))
                if isinstance(node, (ast.Import, ast.ImportFrom)) for alias in node.names}
    assert not {"pickle", "dill", "joblib", "cloudpickle"} & imported


@pytest.fixture(scope="module")
def chain(tiny_chain):
    return tiny_chain(**PUBLISHED)


def test_pickles_beside_the_safetensors_are_never_opened(tiny_fp32, data_files, runner, tmp_path):
    model = copy_model(tiny_fp32, tmp_path / "model")
    marker = tmp_path / "a-pickle-was-loaded"
    for name in ("pytorch_model.bin", "training_args.bin", "model.pt"):
        write_pickle_bomb(model / name, marker)
    calibrated = runner.invoke(app, ["calibrate", str(model), "--pos", str(data_files["pos"]), "--neg", str(data_files["neg"]),
                                     "-o", str(tmp_path / "calib"), "--samples", "4", "--max-length", "16", "--json"])
    assert calibrated.exit_code == 0, calibrated.output
    evaluated = runner.invoke(app, ["eval", str(model), "--samples", "1", "--max-new-tokens", "2", "--safety", "none", "--benign", "none",
                                    "--utility", "none", "-o", str(tmp_path / "eval.json"), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    assert not marker.exists()


def test_pickle_only_models_and_adapters_are_refused_with_the_reason(tiny_fp32, chain, data_files, runner, tmp_path):
    model = bin_only_model(tiny_fp32, tmp_path / "model")
    result = runner.invoke(app, ["calibrate", str(model), "--pos", str(data_files["pos"]), "--neg", str(data_files["neg"]),
                                 "-o", str(tmp_path / "calib")])
    assert_clean_failure(result, tmp_path / "calib", "only pickle weights", "never loads", code=InputError.exit_code)
    adapter = Path(shutil.copytree(chain.trained / "adapter", tmp_path / "adapter"))
    (adapter / "adapter_model.safetensors").unlink()
    write_pickle_bomb(adapter / "adapter_model.bin", tmp_path / "a-pickle-was-loaded")
    result = runner.invoke(app, ["eval", str(tiny_fp32), "--adapter", str(adapter), "--samples", "1", "-o", str(tmp_path / "e.json")])
    assert_clean_failure(result, tmp_path / "e.json", "adapter_model.safetensors", "never loaded", code=InputError.exit_code)
    assert not (tmp_path / "a-pickle-was-loaded").exists()


def test_resume_never_unpickles_a_checkpoint_file_that_was_swapped(chain, data_files, tmp_path):
    """The trainer's own state files (optimizer.pt, rng_state.pth, ...) are read with weights_only=True;
    a file swapped after the checkpoint was sealed is not read at all: its checkpoint is dropped."""
    options = dict(data_argument=str(data_files["pos"]), samples=8, max_steps=4, save_steps=2, lr=5e-3, batch_size=4, max_length=48,
                   progress=False)
    output = tmp_path / "trained"
    train(chain.run, output, **options)
    newest = output / "checkpoints" / "checkpoint-4"
    assert (newest / SEAL).is_file()
    marker = tmp_path / "a-pickle-was-loaded"
    write_pickle_bomb(newest / "optimizer.pt", marker)
    train(chain.run, output, resume=True, **options)
    assert not marker.exists()


def test_a_model_with_its_own_code_runs_it_only_with_the_flag(tiny_fp32, data_files, runner, tmp_path, monkeypatch):
    monkeypatch.setattr(dynamic_module_utils, "HF_MODULES_CACHE", str(tmp_path / "modules"))  # where transformers copies the code
    monkeypatch.setattr(sys, "path", list(sys.path))
    marker = tmp_path / "the-model-code-ran"
    model = custom_code_model(tiny_fp32, tmp_path / "custom", marker)
    base = ["calibrate", str(model), "--pos", str(data_files["pos"]), "--neg", str(data_files["neg"]), "--samples", "4",
            "--max-length", "16"]
    refused = runner.invoke(app, [*base, "-o", str(tmp_path / "refused")])
    assert_clean_failure(refused, tmp_path / "refused", "--trust-remote-code", code=InputError.exit_code)
    assert not marker.exists()
    trusted = runner.invoke(app, [*base, "-o", str(tmp_path / "trusted"), "--trust-remote-code", "--json"])
    assert trusted.exit_code == 0, trusted.output
    assert marker.exists()
