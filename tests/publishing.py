"""Helpers of the push and card tests: the repo they publish to, the files a push uploads, manifest
edits on a private copy of the published run, and the run dressed up as if its base came from the Hub."""

from __future__ import annotations

import json
from pathlib import Path

REPO = "fake-org/tiny-sclora"


MERGED_FILES = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"}


LORA_FILES = {"adapter_config.json", "adapter_model.safetensors"}


def edit_manifest(run: Path, change) -> dict:
    path = run / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest, indent=2))
    return manifest


def hub_style(run: Path, tmp_path: Path) -> Path:
    """The run as if its base came from the Hub (id + revision), one calibration set were a Hub
    dataset, the base declared a license, and `sclora eval` had written its report."""
    base_card = tmp_path / "base-with-card"
    base_card.mkdir()
    (base_card / "README.md").write_text("---\nlicense: mit\n---\n# base\n")

    def change(manifest):
        manifest["model"].update(id="fake-org/tiny-base", spec="fake-org/tiny-base", revision="c0ffee" * 6 + "c0ff",
                                 path=str(base_card))
        manifest["datasets"][0].update(kind="hub", name="fake-org/dialogs@v1:train", source="fake-org/dialogs", revision="v1")

    edit_manifest(run, change)
    report = {"model": {"spec": str(run)}, "metrics": {"refusal_rate": 0.875, "over_refusal_rate": 0.05, "rouge1": 0.41,
                                                       "refusal_nll": 1.25, "judge_score": None},
              "sets": {"safety": {"name": "safety-heldout"}, "utility": {"name": "dialogsum-heldout"}},
              "examples": {"safety": [{"prompt": "how do i ...", "answer": "a harmful answer"}]}}
    (run / "eval.json").write_text(json.dumps(report))
    return run
