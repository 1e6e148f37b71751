"""The model card (README.md) of a published merge: Hub metadata that says exactly how the model
was made, and a body that says how to load it. Pure: manifest dict in, card text out.

Every user-provided string (dataset names, paths, commands) reaches the YAML only through
ModelCardData / yaml.dump, never through string formatting, and the rendered card is parsed back
and compared before it is returned. In the markdown body such strings are escaped, or shown in
fenced code blocks whose fence is longer than any backtick run inside.
"""

from __future__ import annotations

import math
import re
import shlex
from typing import Any

PIPELINE_TAG = "text-generation"
TAGS = ("sclora", "sc-lora", "lora", "safety")
STAGE_ORDER = ("calibration", "init", "train", "merge")
WHATS = ("all", "merged", "lora")
# vLLM accepts only these values for --max-lora-rank.
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#!|~&$])")
CALIBRATION_KEYS = ("role", "name", "kind", "source", "revision", "split", "samples", "tokens", "texts_sha256")


# ----------------------------------------------------------------------------- public


def render_card(
    manifest: dict,
    *,
    repo_id: str,
    what: str = "all",
    eval_report: dict | None = None,
    license_info: dict | None = None,
) -> str:
    """README.md text for `manifest` (a merge manifest) published as `what` in `repo_id`.

    `license_info` holds the base model's license / license_name / license_link when it declares
    one; `eval_report` is an `sclora eval` report ({"metrics": {...}, "datasets": ...}).
    """
    from huggingface_hub import ModelCard, ModelCardData

    if what not in WHATS:
        raise ValueError(f"what must be one of {WHATS}, not {what!r}")
    facts = Facts(manifest, repo_id, what, eval_report or {}, license_info or {})
    metadata = facts.metadata()
    data = ModelCardData(**metadata)
    order = ["license", "license_name", "license_link", "base_model", "base_model_relation", "library_name",
             "pipeline_tag", "tags", "datasets", "model-index", "sclora"]
    text = f"---\n{data.to_yaml(original_order=order)}\n---\n\n{facts.body()}"
    parsed = ModelCard(text)
    if parsed.data.to_dict() != data.to_dict():  # a string escaped its YAML scalar: never publish that
        raise ValueError("the model card metadata does not survive a YAML round trip")
    return text


def is_hub_id(text: object) -> bool:
    return isinstance(text, str) and bool(HUB_ID.match(text)) and "--" not in text and ".." not in text


def lineage(manifest: dict) -> list[dict]:
    """The manifest and every ancestor, ordered calibration, init, train, merge."""
    found: dict[str, dict] = {}

    def walk(node: dict) -> None:
        found.setdefault(node.get("kind", "?"), node)
        for parent in node.get("parents") or []:
            if isinstance(parent, dict) and isinstance(parent.get("manifest"), dict):
                walk(parent["manifest"])

    walk(manifest)
    return [found[kind] for kind in STAGE_ORDER if kind in found]


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


# ----------------------------------------------------------------------------- markdown helpers


def md(value: object) -> str:
    """One line of inert markdown text: whitespace (newlines included) collapsed, specials escaped."""
    return MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(str(value).split())) if value not in (None, "") else "-"


def code_block(content: str, language: str = "") -> str:
    """A fenced block that `content` cannot close: the fence outgrows every backtick run in it."""
    longest = max((len(run) for run in re.findall(r"`+", content)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{content}\n{fence}"


def table(header: tuple[str, ...], rows: list[tuple]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(md(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the facts of one run


class Facts:
    """What the card says, read once from the manifest chain."""

    def __init__(self, manifest: dict, repo_id: str, what: str, eval_report: dict, license_info: dict) -> None:
        self.manifest = manifest
        self.repo_id = repo_id
        self.what = what
        self.eval_report = eval_report
        self.license_info = {k: v for k, v in license_info.items() if k in ("license", "license_name", "license_link") and v}
        self.chain = lineage(manifest)
        self.model = manifest.get("model") or {}
        self.config = manifest.get("config") or {}
        self.verification = manifest.get("verification") or {}
        self.train_manifest = next((m for m in self.chain if m.get("kind") == "train"), None)
        self.train_settings = self.config.get("train") or ((self.train_manifest or {}).get("config") or {}).get("train")
        datasets = list(manifest.get("datasets") or [])
        if self.train_manifest:
            datasets += [d for d in self.train_manifest.get("datasets") or [] if d.get("role") == "train" and d not in datasets]
        self.calibration_sets = [d for d in datasets if d.get("role") in ("+", "-")]
        self.training_sets = [d for d in datasets if d.get("role") == "train"]
        self.rank = int(self.config.get("rank") or 0)
        self.alpha = self.config.get("alpha")
        self.base_id = self.model.get("id")
        self.base_on_hub = is_hub_id(self.base_id) and self.base_id != self.model.get("path")
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
        method = str(self.config.get("method") or "")
        data["tags"] = list(dict.fromkeys([*TAGS, *(["peft"] if self.what == "lora" else []),
                                           *([method] if method and method not in TAGS else [])]))
        hub_sets = [d.get("source") for d in self.calibration_sets + self.training_sets if d.get("kind") == "hub"]
        hub_sets = list(dict.fromkeys(s for s in hub_sets if is_hub_id(s)))
        if hub_sets:
            data["datasets"] = hub_sets
        if self.metrics:
            data["model_name"] = self.repo_id.split("/")[-1]
            data["eval_results"] = self.eval_results()
        data["sclora"] = self.sclora_block()
        return data

    def eval_results(self) -> list:
        from huggingface_hub import EvalResult

        names = self.eval_dataset_names()
        dataset_name = "sclora eval" + (f" ({', '.join(names)})" if names else "")
        return [
            EvalResult(task_type=PIPELINE_TAG, task_name="Text Generation", dataset_type="sclora-eval",
                       dataset_name=dataset_name, metric_type=key, metric_name=key, metric_value=value)
            for key, value in self.metrics.items()
        ]

    def eval_dataset_names(self) -> list[str]:
        """"role: name" per evaluation set of the report ("sets" or "datasets", a dict or a list)."""
        sets = self.eval_report.get("sets", self.eval_report.get("datasets"))
        if isinstance(sets, dict):
            return [f"{role}: {d['name']}" if isinstance(d, dict) and d.get("name") else str(role) for role, d in sets.items()]
        if isinstance(sets, list):
            return [str(d.get("name")) if isinstance(d, dict) else str(d) for d in sets]
        return []

    def sclora_block(self) -> dict:
        cfg = self.config
        block: dict[str, Any] = {
            "tool_version": (self.manifest.get("tool") or {}).get("version"),
            "method": cfg.get("method"),
            "beta": cfg.get("beta"),
            "rank": cfg.get("rank"),
            "alpha": cfg.get("alpha"),
            "scale": cfg.get("scale"),
            "normalization": cfg.get("normalization"),
            "checkpoint_dtype": cfg.get("checkpoint_dtype"),
            "targets": list(cfg.get("targets") or []),
            "base": {"id": self.base_id, "revision": self.model.get("revision"),
                     "weight_files": dict(self.model.get("weight_files") or {})},
            "published": self.what,
            "lora_export": {"path": self.lora_path() or None, "rank": 2 * self.rank,
                            "alpha": 2 * self.alpha if isinstance(self.alpha, (int, float)) else None,
                            "against": "original base model"} if self.what != "merged" else None,
            "calibration": [{key: d.get(key) for key in CALIBRATION_KEYS} for d in self.calibration_sets],
            "training": self.training_block(),
            "w0_check": {
                "passed": self.verification.get("passed"),
                "checked": self.verification.get("checked"),
                "correction_bytes": self.verification.get("correction_bytes"),
                "correction_fraction": self.verification.get("correction_fraction_of_target_weights"),
                "scheme": self.verification.get("scheme"),
            },
        }
        return {key: value for key, value in block.items() if value is not None}

    def training_block(self) -> dict | None:
        if not self.train_settings and not self.training_sets:
            return None
        block = dict(self.train_settings or {})
        block["datasets"] = [{key: d.get(key) for key in CALIBRATION_KEYS} for d in self.training_sets]
        return block

    def lora_path(self) -> str:
        return "lora" if self.what == "all" else ""

    # -- body ------------------------------------------------------------------------------------------------------

    def body(self) -> str:
        sections = [self.intro(), self.details(), self.beta_section(), self.data_section(), self.made_section(),
                    self.load_section(), self.eval_section(), self.check_section(), self.provenance_section()]
        return "\n\n".join(s for s in sections if s) + "\n"

    def base_label(self) -> str:
        if self.base_on_hub:
            revision = self.model.get("revision")
            return f"the Hub model {md(self.base_id)}" + (f" at revision {md(revision)}" if revision else "")
        return f"a local model ({md(self.base_id)})"

    def intro(self) -> str:
        name = self.repo_id.split("/")[-1]
        kind = {"all": "A fine-tuned model (merged weights at the root) and the same fine-tune as a standard LoRA adapter (in `lora/`)",
                "merged": "A fine-tuned model (merged weights)",
                "lora": f"A standard LoRA adapter (rank {2 * self.rank})"}[self.what]
        return (f"# {md(name)}\n\n{kind} made from {self.base_label()} with "
                f"sclora-tools using {md(self.config.get('method'))} initialisation "
                f"(Subspace-Constrained LoRA, SC-LoRA), beta = {md(self.config.get('beta'))}, rank r = {md(self.rank)}.")

    def details(self) -> str:
        cfg = self.config
        rows = [
            ("base model", self.base_id),
            ("base revision", self.model.get("revision") or "(local files, see the weight hashes)"),
            ("base weight files (sha256)", ", ".join(f"{k}: {v}" for k, v in (self.model.get("weight_files") or {}).items())),
            ("method", cfg.get("method")),
            ("beta", cfg.get("beta")),
            ("rank r / alpha", f"{cfg.get('rank')} / {cfg.get('alpha')} (scale {cfg.get('scale')})"),
            ("target layers", f"{len(cfg.get('targets') or [])} ({', '.join(sorted({str(t).rsplit('.', 1)[-1] for t in cfg.get('targets') or []}))})"),
            ("covariance normalisation", cfg.get("normalization")),
            ("checkpoint dtype", cfg.get("checkpoint_dtype")),
            ("sclora-tools", (self.manifest.get("tool") or {}).get("version")),
        ]
        return "## Model details\n\n" + table(("property", "value"), rows)

    def beta_section(self) -> str:
        beta = self.config.get("beta")
        return (
            "## What beta means\n\n"
            "For every target layer, sclora measured the covariance of the layer's outputs on the data of the new "
            "task (Cov+) and on the data whose behaviour must be preserved (Cov-, e.g. safety refusals). "
            "The LoRA is initialised on the r eigenvectors with the largest eigenvalues of "
            "`dCov = (1 - beta) Cov+ - beta Cov-`, so that fine-tuning starts in the subspace that matters for "
            "the new task and stays away from the one that carries the preserved behaviour. "
            "beta = 0 only favours the new task; beta = 1 only protects the preserved data. "
            f"This model used beta = {md(beta)}. The initialisation leaves the model unchanged at step 0 "
            "(W_res + s B A = W0), which the W0 check below verifies bit for bit."
        )

    def data_section(self) -> str:
        header = ("role", "name", "kind", "source", "revision", "split", "samples", "tokens", "texts sha256")
        role_names = {"+": "+ (new task)", "-": "- (preserve)", "train": "training"}
        rows = [(role_names.get(d.get("role"), d.get("role")), d.get("name"), d.get("kind"), d.get("source"),
                 d.get("revision"), d.get("split"), d.get("samples"), d.get("tokens"), d.get("texts_sha256"))
                for d in self.calibration_sets + self.training_sets]
        text = "## Data\n\n" + table(header, rows)
        text += ("\n\nHub datasets are listed in the metadata; bundled and local datasets are identified here by name, "
                 "source and the sha256 of the exact texts the model saw.")
        if self.train_settings:
            settings = [(key, value) for key, value in self.train_settings.items()]
            text += "\n\n### Training settings\n\n" + table(("setting", "value"), settings)
        return text

    def made_section(self) -> str:
        commands = [str(m.get("command") or "") for m in self.chain if m.get("command")]
        note = ""
        if any(not c.startswith("sclora ") for c in commands):
            note = ("\n\nA line that does not start with `sclora` is the command line of the Python process that "
                    "called the stage through the Python API; the settings are in the `sclora` metadata block.")
        stages = ", ".join(m.get("kind", "?") for m in self.chain)
        return f"## How it was made\n\nThe exact commands, in order ({md(stages)}):\n\n" + code_block("\n".join(commands), "bash") + note

    def load_section(self) -> str:
        repo = repr(self.repo_id)
        base = repr(str(self.base_id))
        base_revision = self.model.get("revision")
        revision_arg = f", revision={base_revision!r}" if base_revision and self.base_on_hub else ""
        parts = ["## How to load"]
        if self.what in ("all", "merged"):
            parts.append("With transformers (the merged weights):\n\n" + code_block(
                "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
                f"model = AutoModelForCausalLM.from_pretrained({repo})\n"
                f"tokenizer = AutoTokenizer.from_pretrained({repo})", "python"))
        if self.what in ("all", "lora"):
            subfolder = ', subfolder="lora"' if self.what == "all" else ""
            base_note = "" if self.base_on_hub else "  # the original base model (a local directory when it was made)"
            parts.append(
                f"With PEFT on the original, unmodified base model (rank {2 * self.rank} LoRA):\n\n" + code_block(
                    "from peft import PeftModel\nfrom transformers import AutoModelForCausalLM\n\n"
                    f"base = AutoModelForCausalLM.from_pretrained({base}{revision_arg}){base_note}\n"
                    f"model = PeftModel.from_pretrained(base, {repo}{subfolder})", "python"))
            served_rank = vllm_max_lora_rank(2 * self.rank)
            local = "./adapter" if self.what == "lora" else "./adapter/lora"
            include = " --include 'lora/*'" if self.what == "all" else ""
            parts.append(
                "With a LoRA-serving engine, e.g. vLLM, on the original base model (the adapter has rank "
                f"{2 * self.rank}; `--max-lora-rank` must be at least that):\n\n" + code_block(
                    f"hf download {self.repo_id}{include} --local-dir ./adapter\n"
                    f"vllm serve {shlex.quote(str(self.base_id))} --enable-lora --max-lora-rank {served_rank} \\\n"
                    f"    --lora-modules {self.repo_id.split('/')[-1]}={local}", "bash"))
        if self.what == "merged":
            parts.append("With vLLM:\n\n" + code_block(f"vllm serve {self.repo_id}", "bash"))
        return "\n\n".join(parts)

    def eval_section(self) -> str:
        if not self.metrics:
            return ""
        rows = [(key, f"{value:.4g}" if isinstance(value, float) else value) for key, value in self.metrics.items()]
        names = self.eval_dataset_names()
        suffix = f"\n\nEvaluation data: {md(', '.join(names))}." if names else ""
        return "## Evaluation\n\nFrom `sclora eval` (the `sclora_eval.json` file in this repository):\n\n" + table(("metric", "value"), rows) + suffix

    def check_section(self) -> str:
        v = self.verification
        fraction = v.get("correction_fraction_of_target_weights")
        fraction_text = f" ({fraction:.2%} of the target weights)" if isinstance(fraction, (int, float)) else ""
        return ("## W0 check\n\n"
                f"Before merging, sclora rebuilt the original weights W0 from the residual model, the initial adapter and "
                f"a small correction record, and compared every tensor's sha256 with the source checkpoint: "
                f"**{'passed' if v.get('passed') else 'FAILED'}**, {md(v.get('checked'))} tensors bit-identical; "
                f"correction data {md(v.get('correction_bytes'))} bytes{fraction_text}.")

    def provenance_section(self) -> str:
        return ("## Provenance\n\n`sclora_manifest.json` holds the full manifests of every stage (settings, sha256 of "
                "every file, of every source weight file and of the exact calibration and training texts).")
