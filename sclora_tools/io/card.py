"""The model card (README.md) of a published merge: Hub metadata that says exactly how the model
was made, and a body that says how to load it. Pure: manifest in, card text out.

The words live in templates/model_card.md.j2 (package data), rendered with jinja2 the way
huggingface_hub's `ModelCard.from_template` renders its template; this module gathers the facts.
Every user-provided string (dataset names, paths, commands) reaches the YAML only through
ModelCardData / yaml.dump, never through string formatting, and the rendered card is parsed back
and compared before it is returned. In the markdown body such strings pass the template's `md`
filter (escaped) or `code_block` (a fence longer than any backtick run inside); jinja inserts
values as they are, so a value that looks like template syntax stays text.
"""

from __future__ import annotations

import functools
import math
import re
import shlex
from collections.abc import Mapping
from importlib import resources
from typing import Any

from . import recipe
from .manifest import Manifest
from .manifest_settings import TrainSettings
from .manifest_types import DatasetRecord, Role, VerificationRecord

PIPELINE_TAG = "text-generation"
TAGS = ("sclora", "sc-lora", "lora", "safety")
WHATS = ("all", "merged", "lora")
# vLLM accepts only these values for --max-lora-rank.
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#!|~&$])")
CALIBRATION_KEYS = ("role", "name", "kind", "source", "revision", "commit", "split", "samples", "tokens", "texts_sha256")
METADATA_ORDER = ["license", "license_name", "license_link", "base_model", "base_model_relation", "library_name",
                  "pipeline_tag", "tags", "datasets", "model-index", "sclora"]
TEMPLATE = "model_card.md.j2"


# ----------------------------------------------------------------------------- public


def render_card(
    manifest: Manifest | Mapping[str, Any],
    *,
    repo_id: str,
    what: str = "all",
    eval_report: dict | None = None,
    license_info: dict | None = None,
) -> str:
    """README.md text for `manifest` (a merge manifest) published as `what` in `repo_id`.

    `license_info` holds the base model's license / license_name / license_link when it declares
    one; `eval_report` is an `sclora eval` report ({"metrics": {...}, "sets": ...}).
    """
    from huggingface_hub import ModelCard, ModelCardData

    if what not in WHATS:
        raise ValueError(f"what must be one of {WHATS}, not {what!r}")
    manifest = manifest if isinstance(manifest, Manifest) else Manifest.from_dict(manifest)
    facts = Facts(manifest, repo_id, what, eval_report or {}, license_info or {})
    data = ModelCardData(**facts.metadata())
    text = template().render(card_data=data.to_yaml(original_order=METADATA_ORDER), card=facts)
    if ModelCard(text).data.to_dict() != data.to_dict():  # a string escaped its YAML scalar: never publish that
        raise ValueError("the model card metadata does not survive a YAML round trip")
    return text


def is_hub_id(text: object) -> bool:
    return isinstance(text, str) and bool(HUB_ID.match(text)) and "--" not in text and ".." not in text


def numeric_metrics(eval_report: dict | None) -> dict[str, float]:
    """Every finite number under the report's "metrics" (nested dicts flattened with dots)."""
    out: dict[str, float] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else str(key), value)
        elif isinstance(node, (int, float)) and not isinstance(node, bool) and math.isfinite(node):
            out[prefix] = node

    if isinstance(eval_report, dict):
        walk("", eval_report.get("metrics"))
    return out


def vllm_max_lora_rank(rank: int) -> int:
    return next((r for r in VLLM_LORA_RANKS if r >= rank), rank)


# ----------------------------------------------------------------------------- the template and its filters


def md(value: object) -> str:
    """One line of inert markdown text: whitespace (newlines included) collapsed, specials escaped."""
    return MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(str(value).split())) if value not in (None, "") else "-"


def code_block(content: str, language: str = "") -> str:
    """A fenced block that `content` cannot close: the fence outgrows every backtick run in it."""
    longest = max((len(run) for run in re.findall(r"`+", content)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{content}\n{fence}"


@functools.lru_cache(maxsize=1)
def template():
    import jinja2

    environment = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                                     undefined=jinja2.StrictUndefined, autoescape=False)
    environment.filters.update(md=md, code_block=code_block, fmt=format)
    return environment.from_string(resources.files(__package__).joinpath("templates", TEMPLATE).read_text(encoding="utf-8"))


# ----------------------------------------------------------------------------- the facts of one run


class Facts:
    """What the card says, read once from the manifest chain."""

    def __init__(self, manifest: Manifest, repo_id: str, what: str, eval_report: dict, license_info: dict) -> None:
        self.manifest = manifest
        self.repo_id = repo_id
        self.what = what
        self.eval_report = eval_report
        self.license_info = {k: v for k, v in license_info.items() if k in ("license", "license_name", "license_link") and v}
        self.lineage = manifest.lineage()
        self.model = manifest.model
        self.config = manifest.config
        self.verification = manifest.verification or VerificationRecord()
        train_manifest = next((m for m in self.lineage if m.kind == "train"), None)
        self.train_settings: TrainSettings | None = getattr(self.config, "train", None) or (
            train_manifest.config.train if train_manifest else None)
        datasets = list(manifest.datasets)
        if train_manifest:
            datasets += [d for d in train_manifest.datasets_with(Role.TRAIN) if d not in datasets]
        self.calibration_sets = [d for d in datasets if d.role in (Role.POS, Role.NEG)]
        self.training_sets = [d for d in datasets if d.role is Role.TRAIN]
        init_manifest = next((m for m in self.lineage if m.kind == "init"), None)
        self.init_summary = init_manifest.summary if init_manifest else None
        self.rank = int(self.config.rank or 0)
        self.base_id = self.model.id
        self.base_on_hub = is_hub_id(self.base_id) and self.base_id != self.model.path
        self.metrics = numeric_metrics(eval_report)

    # -- metadata ------------------------------------------------------------------------------------------------

    def metadata(self) -> dict:
        relation = "adapter" if self.what == "lora" else "finetune"
        data: dict[str, Any] = dict(self.license_info)
        if self.base_on_hub:
            data["base_model"] = self.base_id
            data["base_model_relation"] = relation
        data["library_name"] = "peft" if self.what == "lora" else "transformers"
        data["pipeline_tag"] = PIPELINE_TAG
        method = str(self.config.method or "")
        data["tags"] = list(dict.fromkeys([*TAGS, *(["peft"] if self.what == "lora" else []),
                                           *([method] if method and method not in TAGS else [])]))
        hub_sets = [d.source for d in self.calibration_sets + self.training_sets if d.kind == "hub"]
        hub_sets = list(dict.fromkeys(s for s in hub_sets if is_hub_id(s)))
        if hub_sets:
            data["datasets"] = hub_sets
        if self.metrics:
            data["model_name"] = self.name
            data["eval_results"] = self.eval_results()
        data["sclora"] = self.sclora_block()
        return data

    def eval_results(self) -> list:
        from huggingface_hub import EvalResult

        names = self.eval_names
        dataset_name = "sclora eval" + (f" ({', '.join(names)})" if names else "")
        return [
            EvalResult(task_type=PIPELINE_TAG, task_name="Text Generation", dataset_type="sclora-eval",
                       dataset_name=dataset_name, metric_type=key, metric_name=key, metric_value=value)
            for key, value in self.metrics.items()
        ]

    @property
    def eval_names(self) -> list[str]:
        """"role: name" per evaluation set of the report ("sets" or "datasets", a dict or a list)."""
        sets = self.eval_report.get("sets", self.eval_report.get("datasets"))
        if isinstance(sets, dict):
            return [f"{role}: {d['name']}" if isinstance(d, dict) and d.get("name") else str(role) for role, d in sets.items()]
        if isinstance(sets, list):
            return [str(d.get("name")) if isinstance(d, dict) else str(d) for d in sets]
        return []

    def sclora_block(self) -> dict:
        config, verification = self.config, self.verification
        block: dict[str, Any] = {
            "tool_version": self.manifest.tool_version,
            "method": config.method,
            "beta": config.beta,
            "rank": config.rank,
            "alpha": config.alpha,
            "scale": config.scale,
            "normalization": config.normalization,
            "checkpoint_dtype": config.checkpoint_dtype,
            "target_modules": self.target_kinds,
            "target_layers": len(config.targets),
            "method_settings": self.method_block(),
            "base": {"id": self.base_id, "revision": self.model.revision, "weight_files": dict(self.model.weight_files)},
            "published": self.what,
            "lora_export": self.lora_export() if self.what != "merged" else None,
            "calibration": [described(d) for d in self.calibration_sets],
            "training": self.training_block(),
            "w0_check": {
                "passed": verification.passed,
                "checked": verification.checked,
                "correction_bytes": verification.correction_bytes,
                "correction_fraction": verification.correction_fraction_of_target_weights,
                "scheme": verification.scheme,
            },
        }
        return {key: value for key, value in block.items() if value is not None}

    def method_block(self) -> dict | None:
        """What the init method is and read, and for LoRA-Null where its null spaces sit."""
        settings = getattr(self.config, "method_settings", None)
        if settings is None:
            return None
        block: dict[str, Any] = {"summary": settings.summary, "reads": list(settings.reads)}
        null_space = self.null_space
        if null_space:
            block["null_space"] = null_space
        return block

    @property
    def null_space(self) -> dict[str, Any]:
        """LoRA-Null's eigen-gap summary from the init manifest (empty for other methods)."""
        summary = self.init_summary
        keys = ("null_gap_ratio_min", "null_gap_ratio_median", "layers_not_unique", "null_energy_share_max", "null_energy_share_mean")
        values = {key: getattr(summary, key, None) for key in keys}
        return values if values["null_energy_share_max"] is not None else {}

    @property
    def is_sclora(self) -> bool:
        return (self.config.method or "sclora") == "sclora"

    @property
    def method_summary(self) -> str:
        settings = getattr(self.config, "method_settings", None)
        if settings is not None and settings.summary:
            return settings.summary
        return "Subspace-Constrained LoRA, SC-LoRA" if self.is_sclora else str(self.config.method)

    def lora_export(self) -> dict:
        alpha = self.config.alpha
        return {"path": "lora" if self.what == "all" else None, "rank": 2 * self.rank,
                "alpha": 2 * alpha if isinstance(alpha, (int, float)) else None, "against": "original base model"}

    def training_block(self) -> dict | None:
        if not self.train_settings and not self.training_sets:
            return None
        block = self.train_settings.to_dict() if self.train_settings else {}
        block["datasets"] = [described(d) for d in self.training_sets]
        return block

    # -- values the template shows -------------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.repo_id.split("/")[-1]

    @property
    def datasets(self) -> list[DatasetRecord]:
        return self.calibration_sets + self.training_sets

    @property
    def target_kinds(self) -> list[str]:
        """q_proj, k_proj, ...: the last part of every target's name, in the model's order (the full
        names stay in sclora_manifest.json)."""
        return list(dict.fromkeys(str(target).rsplit(".", 1)[-1] for target in self.config.targets))

    @property
    def commands(self) -> list[str]:
        """The `sclora` commands that make this model again, every resolved setting spelled out."""
        return recipe.commands(self.manifest, self.eval_report if self.metrics else None)

    @property
    def gates(self) -> list[dict]:
        """The gate checks that decided publication, as the eval report or the merge manifest records
        them (`gates`: a list, or {"checks": [...]}, of {"metric", "condition", "value", "passed"});
        empty when the run had none."""
        recorded = self.eval_report.get("gates") or self.manifest.raw.get("gates")
        checks = recorded.get("checks") if isinstance(recorded, Mapping) else recorded
        return [dict(check) for check in checks or () if isinstance(check, Mapping)] if isinstance(checks, list) else []

    @property
    def repo_literal(self) -> str:
        return repr(self.repo_id)

    @property
    def base_literal(self) -> str:
        return repr(str(self.base_id))

    @property
    def revision_literal(self) -> str:
        return repr(self.model.revision)

    @property
    def base_shell(self) -> str:
        return shlex.quote(str(self.base_id))

    @property
    def served_rank(self) -> int:
        return vllm_max_lora_rank(2 * self.rank)

    @property
    def correction_fraction(self) -> float | None:
        fraction = self.verification.correction_fraction_of_target_weights
        return fraction if isinstance(fraction, (int, float)) else None


def described(dataset: DatasetRecord) -> dict:
    """A dataset as the metadata lists it."""
    record = dataset.to_dict()
    return {key: record.get(key) for key in CALIBRATION_KEYS}
