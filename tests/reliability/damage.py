"""Ways to damage inputs on private copies, as disks, downloads, people and diverged runs do: a
flipped byte, a cut-off file, NaN or Inf written into a tensor (with the manifest's hash updated, so
only the numbers are wrong), pickled weights, a model that needs its own Python code."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from sclora_tools.io.covariances import open_covariances, write_covariances
from sclora_tools.io.hashing import sha256_file


def flip_byte(path: Path) -> Path:
    """Flip every bit of the byte in the middle of the file (inside the tensor data of a safetensors file)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def truncate(path: Path) -> Path:
    """Keep the first half of the file, as an interrupted copy or download does."""
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def poison_tensor(path: Path, value: float = float("nan"), key: str | None = None) -> str:
    """Write `value` into one element of a tensor of a safetensors file (the first key unless given); returns the key."""
    tensors = load_file(str(path))
    key = key or sorted(tensors)[0]
    tensors[key] = tensors[key].clone()
    tensors[key].view(-1)[0] = value
    save_file(tensors, str(path), metadata={"format": "pt"})
    return key


def poison_covariance(calibration: Path, role, value: float) -> str:
    """Write `value` into one covariance of a calibration, whatever form it was stored in (kept
    as float64 here: a packed form may not encode it); returns the covariance's key."""
    with open_covariances(calibration, role) as stored:
        covariances = {key: stored.get(key).clone() for key in stored.keys()}
    key = sorted(covariances)[0]
    covariances[key][0, 0] = value
    write_covariances(calibration, role, covariances, "float64")
    return key


def rerecord_hash(artefact: Path, relative: str) -> None:
    """Make the manifest agree with a file changed on purpose, so that only its contents are wrong."""
    manifest_path = artefact / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"][relative] = sha256_file(artefact / relative)
    manifest_path.write_text(json.dumps(manifest, indent=2))


def edit_manifest(artefact: Path, change) -> None:
    manifest_path = artefact / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    change(manifest)
    manifest_path.write_text(json.dumps(manifest, indent=2))


def copy_model(source: Path, destination: Path) -> Path:
    return Path(shutil.copytree(source, destination))


class PickleBomb:
    """Unpickling it writes a marker file: the proof that a pickle was loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "a pickle was loaded"))


def write_pickle_bomb(path: Path, marker: Path) -> Path:
    with open(path, "wb") as handle:
        pickle.dump(PickleBomb(marker), handle)
    return path


def bin_only_model(source: Path, destination: Path) -> Path:
    """The model with its weights in a pickle (pytorch_model.bin) instead of safetensors."""
    model = copy_model(source, destination)
    torch.save(load_file(str(model / "model.safetensors")), model / "pytorch_model.bin")
    (model / "model.safetensors").unlink()
    return model


CONFIGURATION = '''
from pathlib import Path
from transformers import LlamaConfig

Path({marker!r}).write_text("the model's own code ran")


class CustomConfig(LlamaConfig):
    model_type = "sclora_custom"
'''

MODELING = '''
from transformers import LlamaForCausalLM

from .configuration_custom import CustomConfig


class CustomForCausalLM(LlamaForCausalLM):
    config_class = CustomConfig
'''


def custom_code_model(source: Path, destination: Path, marker: Path) -> Path:
    """The model as a repository with its own Python code (auto_map), which writes `marker` when it runs."""
    model = copy_model(source, destination)
    config = json.loads((model / "config.json").read_text())
    config.update(model_type="sclora_custom", architectures=["CustomForCausalLM"],
                  auto_map={"AutoConfig": "configuration_custom.CustomConfig", "AutoModelForCausalLM": "modeling_custom.CustomForCausalLM"})
    (model / "config.json").write_text(json.dumps(config, indent=2))
    (model / "configuration_custom.py").write_text(CONFIGURATION.format(marker=str(marker)))
    (model / "modeling_custom.py").write_text(MODELING)
    return model
