"""sclora.toml: every key, its type, its default and what it means, declared once.

The keys carry the names of the CLI options (`--max-length` is `max_length`, `--for` is `for`); one
table per stage, plus the model, the + and - data, the Hub repo id, where outputs go and which stages
a pipeline runs. `sclora new` writes its commented template from these declarations
(workspace/template.py), and the CLI's defaults are checked against them by the tests.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

STAGES = ("calibrate", "init", "train", "merge", "eval", "push")
Stage = Literal["calibrate", "init", "train", "merge", "eval", "push"]
DEFAULT_MODEL = "smollm2-135m-instruct"
DEFAULT_OUTPUTS = "sclora"


class Table(BaseModel):
    """A table of sclora.toml: unknown keys and values of the wrong type are errors."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True, validate_default=True)


class CalibrateTable(Table):
    samples: int = Field(256, gt=0, description="Rows per dataset, chosen deterministically from seed.")
    max_length: int = Field(512, gt=0, description="Truncate each sample to this many tokens.")
    batch_size: int = Field(8, gt=0, description="Samples per forward pass.")
    targets: str | None = Field(None, description="Comma-separated layer names (q_proj,k_proj,...); unset: every linear layer "
                                "of the decoder blocks.")
    dtype: str = Field("auto", description="Compute dtype: auto (the checkpoint's), float32, bfloat16, float16.")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N.")
    seed: int = Field(0, description="Seed for sampling rows.")
    normalize: str = Field("token", description="token: mean over real tokens; sample: sum over tokens / samples (the paper's).")
    accumulate_dtype: str = Field("float64", description="Covariance accumulator: float64 or float32 (half the memory).")
    for_methods: str | None = Field(None, alias="for", description="Also store what these init methods need (comma-separated, "
                                    "or all); unset: sclora's.")
    storage: str = Field("auto", description="How covariances are stored: auto, corr24, corr16, float24, float32, "
                         "float64-packed or float64.")
    sequential: str = Field("auto", description="One decoder block at a time from the shards: auto, on, off.")
    device_map: str | None = Field(None, description="'auto': let accelerate place the model across devices and CPU.")
    checkpoint_every: int = Field(0, ge=0, description="Save the running sums every N batches (0: never).")
    trust_remote_code: bool = Field(False, description="Allow the model repo's own Python code to run.")


class InitTable(Table):
    beta: float = Field(0.5, ge=0, le=1, description="0 favours the new task, 1 favours preservation.")
    rank: int = Field(128, gt=0, description="LoRA rank r.")
    alpha: float | None = Field(None, description="LoRA alpha (scale = alpha / rank); unset: rank.")
    method: str = Field("sclora", description="sclora, lora, pissa, milora, olora, corda-ipa, corda-kpa or lora-null.")
    seed: int = Field(0, description="Seed for random inits (lora).")
    shard_size: str = Field("5GB", description="Largest residual shard, e.g. 5GB or 500MB.")


class TrainTable(Table):
    data: str | None = Field(None, description="Training data (registry name, Hub id, or file); unset: the calibration's + data.")
    samples: int | None = Field(None, gt=0, description="Use this many rows (seeded sample); unset: all rows.")
    epochs: float = Field(1.0, gt=0, description="Passes over the data.")
    max_steps: int | None = Field(None, gt=0, description="Stop after this many optimiser steps (overrides epochs).")
    lr: float = Field(2e-5, gt=0, description="AdamW learning rate (cosine schedule, 3% warm-up).")
    batch_size: int = Field(8, gt=0, description="Sequences per device step.")
    grad_accum: int = Field(1, gt=0, description="Gradient accumulation steps (effective batch = batch_size x grad_accum x processes).")
    max_length: int = Field(512, gt=0, description="Truncate each sample to this many tokens.")
    seed: int = Field(0, description="Seed for sampling, shuffling and dropout.")
    freeze_a: bool = Field(False, description="Keep A at its initial value; train B only.")
    freeze_b: bool = Field(False, description="Keep B at Q_r so every update stays inside the subspace; train A only.")
    gradient_checkpointing: bool = Field(False, description="Trade compute for activation memory.")
    bf16: bool = Field(False, description="Load the residual model in bfloat16 and train with bf16 autocast.")
    save_steps: int = Field(200, gt=0, description="Write a resumable checkpoint every this many steps.")


class MergeTable(Table):
    shard_size: str = Field("5GB", description="Largest output shard, e.g. 5GB or 500MB.")


class EvalTable(Table):
    safety: str = Field("safety-heldout", description="Harmful requests with reference refusals; 'none' skips.")
    benign: str = Field("benign-heldout", description="Benign prompts with reference answers; 'none' skips.")
    utility: str = Field("dialogsum-heldout", description="Dialogue -> summary pairs (ROUGE, NLL); 'none' skips.")
    knowledge: str = Field("knowledge", description="Questions with answers for exact match; 'none' skips.")
    samples: int | None = Field(None, gt=0, description="Rows per set, chosen from seed; unset: all rows.")
    max_new_tokens: int | None = Field(None, gt=0, description="Greedy tokens per answer; unset: 64 (24 for knowledge).")
    batch_size: int = Field(8, gt=0, description="Prompts per generation batch.")
    judge: bool = Field(False, description="Score harmfulness 1-5 with an LLM judge at OPENAI_BASE_URL.")
    seed: int = Field(0, description="Seed for sampling rows.")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N.")
    gates: dict[str, str] = Field(default_factory=dict, description="METRIC = \"OP NUMBER\" (OP: >=, >, <=, <, ==), e.g. "
                                  "refusal_rate = \">= 0.9\": `sclora run` publishes only when every gate passes.")


class PushTable(Table):
    private: bool = Field(False, description="Create the Hub repository as private.")
    revision: str | None = Field(None, description="Branch to commit to; unset: main.")
    commit_message: str | None = Field(None, description="Commit summary (first line) and description (the rest).")
    what: str = Field("all", description="all: merged model + LoRA under lora/; merged; lora.")
    to: str | None = Field(None, description="Write the publishable folder to this local directory instead of uploading.")
    keep_local_paths: bool = Field(False, description="Publish local paths recorded in the manifests as they are.")


class PipelineConfig(Table):
    """The whole file."""

    model: str = Field(DEFAULT_MODEL, description="Hub id[@revision], local model directory, or an embedded short name.")
    pos: str | None = Field(None, description="Fine-tuning data D+: registry name, Hub dataset id[@rev][:split], or a file.")
    neg: str | None = Field(None, description="Data to preserve D-: same forms as pos.")
    repo_id: str | None = Field(None, description="Hub repository ORG/NAME that `sclora push` publishes to.")
    outputs: str = Field(DEFAULT_OUTPUTS, description="Folder (relative to this file) that holds one folder per stage.")
    stages: list[Stage] = Field(list(STAGES), description="The stages `sclora run` executes, in order; leave out train to merge "
                                "the init, eval to publish without gates, push to stop before publishing.")
    calibrate: CalibrateTable = Field(default_factory=CalibrateTable, description="`sclora calibrate` options.")
    init: InitTable = Field(default_factory=InitTable, description="`sclora init` options.")
    train: TrainTable = Field(default_factory=TrainTable, description="`sclora train` options.")
    merge: MergeTable = Field(default_factory=MergeTable, description="`sclora merge` options.")
    eval: EvalTable = Field(default_factory=EvalTable, description="`sclora eval` options and gates.")
    push: PushTable = Field(default_factory=PushTable, description="`sclora push` options.")


TOP_LEVEL = ("model", "pos", "neg", "repo_id", "outputs", "stages")
TABLES: dict[str, type[Table]] = {"calibrate": CalibrateTable, "init": InitTable, "train": TrainTable, "merge": MergeTable,
                                  "eval": EvalTable, "push": PushTable}
# The top-level keys each stage's settings include (its identity and its manifest record them).
STAGE_GLOBALS = {"calibrate": ("model", "pos", "neg"), "push": ("repo_id",)}
