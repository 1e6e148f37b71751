"""The typed manifest reader (io/manifest.py, io/manifest_types.py): current, older and newer
manifests read, unknown keys survive into children, and the records write the keys in the order
the manifests on disk have always had them."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from sclora_tools import calibrate, data
from sclora_tools.errors import MismatchError
from sclora_tools.io.manifest import Manifest, init_run_dir, load_manifest, parent_entry, read_manifest
from sclora_tools.io.manifest_settings import CalibrationConfig, InitConfig, MergeConfig, TrainConfig, TrainSettings
from sclora_tools.io.manifest_types import CALIBRATION_ROLES, DatasetRecord, Role

TRAIN_KEYS = ["data", "samples", "epochs", "max_steps", "lr", "batch_size", "grad_accum", "max_length", "seed", "freeze_a",
              "freeze_b", "gradient_checkpointing", "bf16", "optimizer", "lr_scheduler", "warmup_ratio", "weight_decay",
              "world_size"]
DATASET_KEYS = ["role", "name", "kind", "source", "split", "revision", "rows_available", "samples", "tokens", "texts_sha256", "truncated",
                "commit", "data_files"]


def dataset(role: str, name: str, tokens: int = 100) -> dict:
    return {"role": role, "name": name, "kind": "file", "source": f"/data/{name}", "split": "train", "revision": None,
            "rows_available": 60, "samples": 8, "tokens": tokens, "texts_sha256": "ab" * 32, "truncated": 0,
            "commit": None, "data_files": []}


def chain() -> dict:
    """A merge manifest embedding train, init and calibration, as the stages write them."""
    model = {"spec": "org/base", "id": "org/base", "revision": "c0ffee", "path": "/models/base",
             "weight_files": {"model.safetensors": "cd" * 32}, "checkpoint_dtype": "bfloat16", "architecture": "LlamaForCausalLM"}
    sets = [dataset("+", "pos.jsonl", 192), dataset("-", "neg.jsonl", 128)]
    site = {"key": "m.q:input", "module": "m.q", "side": "input", "dim": 64, "serves": ["m.q", "m.k"]}
    calibration = {"schema_version": 1, "kind": "calibration", "tool": {"name": "sclora-tools", "version": "0.1.0"},
                   "command": "sclora calibrate org/base", "model": model,
                   "config": {"targets": ["m.q", "m.k"], "sites": [site], "samples": 8, "normalization": "sample"},
                   "datasets": sets, "summary": {"seconds": 1.0}, "files": {"pos.safetensors": "00"}}
    init_config = {"method": "sclora", "beta": 0.9, "rank": 4, "alpha": 4.0, "scale": 1.0, "seed": 0, "targets": ["m.q", "m.k"],
                   "normalization": "sample", "checkpoint_dtype": "bfloat16"}
    init = {"kind": "init", "command": "sclora init calib", "model": model, "config": init_config, "datasets": sets,
            "parents": [{"kind": "calibration", "path": "/runs/calib", "manifest": calibration}],
            "summary": {"correction_bytes": 10}, "source_tensors": {"m.q.weight": "ef"}}
    settings = TrainSettings(data="pos.jsonl", samples=7, max_steps=2, lr=5e-3).to_dict()
    train = {"kind": "train", "command": "sclora train run", "model": model, "config": {**init_config, "train": settings},
             "datasets": [*sets, dataset("train", "pos.jsonl", 317)], "parents": [{"kind": "init", "path": "/runs/run", "manifest": init}]}
    verification = {"passed": True, "checked": 2, "tensors": {"m.q.weight": {"sha256": "ef", "ok": True}}}
    return {"kind": "merge", "command": "sclora merge trained", "model": model,
            "config": {**init_config, "train": settings, "output": "merged"}, "datasets": train["datasets"],
            "parents": [{"kind": "train", "path": "/runs/trained", "manifest": train}], "verification": verification}


def test_role_is_stored_as_its_value_and_named_pos_neg_in_files():
    assert [role.value for role in Role] == ["+", "-", "train"]
    assert [role.short for role in Role] == ["pos", "neg", "train"]
    assert Role.parse("+") is Role.POS and Role.parse("neg") is Role.NEG and Role("train") is Role.TRAIN
    assert CALIBRATION_ROLES == (Role.POS, Role.NEG)
    assert json.dumps({"role": Role.NEG}) == '{"role": "-"}' and f"data {Role.POS}" == "data +"
    with pytest.raises(ValueError):
        Role.parse("plus")


def test_a_merge_chain_reads_typed():
    manifest = Manifest.from_dict(chain())
    assert manifest.kind == "merge" and isinstance(manifest.config, MergeConfig)
    assert manifest.model.id == "org/base" and manifest.model.weight_files == {"model.safetensors": "cd" * 32}
    assert (manifest.config.method, manifest.config.beta, manifest.config.rank, manifest.config.output) == ("sclora", 0.9, 4, "merged")
    assert manifest.config.train == TrainSettings(data="pos.jsonl", samples=7, max_steps=2, lr=5e-3)
    assert manifest.dataset(Role.NEG).tokens == 128 and manifest.dataset(Role.TRAIN).tokens == 317
    assert [d.name for d in manifest.datasets_with(*CALIBRATION_ROLES)] == ["pos.jsonl", "neg.jsonl"]
    assert manifest.verification.all_passed() and manifest.verification.checked == 2
    assert [m.kind for m in manifest.lineage()] == ["calibration", "init", "train", "merge"]
    assert [m.command for m in manifest.lineage()][0] == "sclora calibrate org/base"
    init = manifest.parent("train").manifest.parent("init")
    assert init.path == Path("/runs/run") and isinstance(init.manifest.config, InitConfig)
    assert init.manifest.source_tensors == {"m.q.weight": "ef"}
    assert init.manifest.summary.correction_bytes == 10 and init.manifest.summary.energy_pos is None  # lora: no energies
    calibration = init.manifest.parent("calibration").manifest
    assert isinstance(calibration.config, CalibrationConfig) and calibration.config.normalization == "sample"
    assert calibration.config.site_of_target() == {"m.q": calibration.config.sites[0], "m.k": calibration.config.sites[0]}
    assert calibration.config.sites[0].serves == ("m.q", "m.k") and calibration.tool_version == "0.1.0"


def test_an_older_manifest_without_later_keys_still_reads():
    old = chain()
    del old["config"]["train"], old["config"]["output"], old["verification"]["checked"]
    for record in old["datasets"]:
        del record["rows_available"], record["texts_sha256"]
    old["parents"][0]["manifest"]["config"]["train"] = {"data": "pos.jsonl", "lr": 1e-4}  # before freeze_b and friends
    manifest = Manifest.from_dict(old)
    assert manifest.config.train is None and manifest.config.output is None
    assert manifest.dataset(Role.POS).rows_available is None and manifest.dataset(Role.POS).texts_sha256 is None
    assert not manifest.verification.all_passed()  # nothing recorded as checked: never trusted
    older = manifest.parent("train").manifest.config.train
    assert older.lr == 1e-4 and older.freeze_b is False and older.optimizer == "adamw_torch"
    assert manifest.tool_version is None and Manifest.from_dict({"kind": "merge"}).verification is None


def test_keys_this_version_does_not_know_are_kept_for_the_children():
    newer = chain()
    newer["config"]["lora_null"] = {"eigen_gap": [3, 4]}
    newer["datasets"][0]["world_size"] = 2
    newer["datasets"].append({"role": "eval", "name": "later-role"})
    newer["future_section"] = {"anything": True}
    manifest = Manifest.from_dict(newer)
    assert manifest.raw == newer and manifest.config.method == "sclora"
    assert [d.role for d in manifest.datasets] == [Role.POS, Role.NEG, Role.TRAIN]  # the unknown role is left to raw
    child_config = {**manifest.raw["config"], "train": {}}  # how train and merge build their config
    assert child_config["lora_null"] == {"eigen_gap": [3, 4]}
    assert parent_entry(Path("/runs/x"), manifest)["manifest"]["datasets"][0]["world_size"] == 2


def test_summaries_read_typed_per_kind():
    lora = Manifest.from_dict({"kind": "train", "summary": {"seconds": 2.5, "steps": 3, "first_loss": 1.5, "subspace": {}}})
    assert (lora.summary.seconds, lora.summary.steps, lora.summary.first_loss, lora.summary.subspace) == (2.5, 3, 1.5, None)
    drift = {"update_outside_fraction": 0.25, "b_change_outside_fraction": 0.5, "later_figure": 1}
    sclora = Manifest.from_dict({"kind": "train", "summary": {"subspace": drift, "update_norm": 0.3}})
    assert sclora.summary.subspace.update_outside_fraction == 0.25 and sclora.summary.update_norm == 0.3
    assert Manifest.from_dict({"kind": "merge", "summary": {"tensors": 21}}).summary.tensors == 21


def test_records_write_the_keys_in_the_order_manifests_have():
    assert list(TrainSettings().to_dict()) == TRAIN_KEYS
    record = DatasetRecord.from_dict(dataset("-", "neg.jsonl"))
    assert list(record.to_dict()) == DATASET_KEYS and record.to_dict() == dataset("-", "neg.jsonl")
    assert TrainSettings.from_dict(TrainSettings(lr=3e-4, freeze_b=True).to_dict()) == TrainSettings(lr=3e-4, freeze_b=True)
    # (fields added later, such as method_settings, come after the nine every init manifest has)
    assert list(InitConfig.from_dict(chain()["config"]).to_dict())[:9] == list(chain()["parents"][0]["manifest"]["config"])[:9]
    assert isinstance(Manifest.from_dict(chain()["parents"][0]["manifest"]).config, TrainConfig)


def test_texts_record_is_a_dataset_record(data_files):
    loaded = data.load_dataset_rows(str(data_files["neg"]), 4, 0)
    examples = [data.Example(text=row["text"]) for row in loaded.rows]
    written = data.texts_record(loaded, examples, 40, Role.NEG)
    assert list(written) == DATASET_KEYS and written["role"] == "-" and type(written["role"]) is str
    assert DatasetRecord.from_dict(written).to_dict() == written


def test_init_run_dir_follows_the_recorded_parent(tmp_path):
    train = Manifest.from_dict(chain()["parents"][0]["manifest"])
    assert init_run_dir(tmp_path, train) == Path("/runs/run")
    assert init_run_dir(tmp_path, train.parent("init").manifest) == tmp_path
    orphan = Manifest.from_dict({**train.raw, "parents": []})
    with pytest.raises(MismatchError, match="init"):
        init_run_dir(tmp_path, orphan)


def test_load_manifest_reads_what_calibrate_wrote(tiny_fp32, data_files, tmp_path):
    written = calibrate(str(tiny_fp32), str(data_files["pos"]), str(data_files["neg"]), tmp_path / "calib",
                        samples=4, max_length=16, batch_size=4, progress=False)
    manifest = load_manifest(tmp_path / "calib", "calibration")
    assert manifest.raw == written == read_manifest(tmp_path / "calib", "calibration")
    assert set(manifest.config.site_of_target()) == set(manifest.config.targets) == set(written["config"]["targets"])
    assert manifest.dataset(Role.POS).samples == 4 and manifest.dataset(Role.NEG).name == "neg.jsonl"
    assert manifest.model.checkpoint_dtype == "float32" and set(manifest.files) == {"pos.safetensors", "neg.safetensors"}
    with pytest.raises(MismatchError, match="calibration"):
        load_manifest(tmp_path / "calib", "init")
    assert Manifest.from_dict(copy.deepcopy(written)) == manifest
