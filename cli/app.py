"""`sclora`: one command per stage. Each parses options and calls sclora_tools.<stage>()."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from sclora_tools import aligned
from sclora_tools.errors import UsageError
from sclora_tools.workflows import demo as demo_workflow
from sclora_tools.workflows import sweep as sweep_workflow
from sclora_tools.workflows.workspace_stages import run_stage

from . import workspace_commands
from .errors import JsonFlag, RefusedCommandLine, handled, refused_command_line, terminate_like_interrupt
from .workspace_options import workspace_for

app = typer.Typer(
    name="sclora",
    help="SC-LoRA: fine-tune a model on a new task while keeping what it must not lose.\n\n"
    "Stages: calibrate -> init -> train -> merge -> push. Inside a workspace (a folder whose sclora.toml is here or "
    "above; `sclora new` writes one) every command takes its defaults and paths from it, and `sclora run` runs them all.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

Output = Annotated[Path | None, typer.Option("-o", "--output", help="Output directory (written atomically; re-running replaces it); "
                   "default: the stage's folder in the workspace.")]


@app.command()
@handled
def calibrate(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Argument(help="Hub id[@revision], local model directory (safetensors), or an embedded short "
            "name; default: the workspace's model (the embedded smollm2-135m-instruct outside a workspace).")] = None,
    pos: Annotated[str | None, typer.Option("--pos", help="Fine-tuning data D+: registry name, Hub dataset id[@rev][:split], or "
            ".jsonl/.json/.csv/.parquet; default: the workspace's pos.")] = None,
    neg: Annotated[str | None, typer.Option("--neg", help="Data to preserve D-: same forms as --pos; default: the workspace's neg.")] = None,
    output: Output = None,
    samples: Annotated[int, typer.Option(help="Rows per dataset, chosen deterministically from --seed.")] = 256,
    max_length: Annotated[int, typer.Option(help="Truncate each sample to this many tokens.")] = 512,
    batch_size: Annotated[int, typer.Option(help="Samples per forward pass.")] = 8,
    targets: Annotated[str | None, typer.Option(help="Comma-separated layer names (q_proj,k_proj,... or full names); default: "
            "every linear layer in the decoder blocks.")] = None,
    dtype: Annotated[str, typer.Option(help="Compute dtype: auto (the checkpoint's), float32, bfloat16, float16.")] = "auto",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed for sampling rows.")] = 0,
    normalize: Annotated[str, typer.Option(help="token: mean over real tokens; sample: sum over tokens / samples (the paper's).")] = "token",
    accumulate_dtype: Annotated[str, typer.Option(help="Covariance accumulator: float64 (default) or float32 (half the memory).")] = "float64",
    for_methods: Annotated[str | None, typer.Option("--for", help="Also store what these init methods need (comma-separated, or "
            "all): corda-ipa, corda-kpa and lora-null need every target's input-side covariance (a larger calibration). "
            "Default: sclora's.")] = None,
    storage: Annotated[str, typer.Option(help="How covariances are stored: auto (corr24 when each set has >= 2 tokens per dimension, "
            "else float32), corr24 (float64 variances + 24-bit correlations), corr16, float24, float32, float64-packed (lossless) or "
            "float64 (full matrices, the old format); all but float64 keep one triangle.")] = "auto",
    sequential: Annotated[str, typer.Option(help="One decoder block at a time from the shards: auto (when the model does not fit "
            "the device), on, off.")] = "auto",
    device_map: Annotated[str | None, typer.Option(help="'auto': let accelerate place the model across devices and CPU instead.")] = None,
    checkpoint_every: Annotated[int, typer.Option(help="Save the running sums every N batches, so --resume can finish a killed run "
            "(0: never).")] = 0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint of the same command (same settings "
            "and data).")] = False,
    trust_remote_code: Annotated[bool, typer.Option(help="Allow the model repo's own Python code to run.")] = False,
    as_json: JsonFlag = False,
) -> dict | None:
    """Run the model over + and - data and store the covariances of every target layer.

    Runs data-parallel under `torchrun --nproc_per_node N` or `accelerate launch` (rank 0 writes)."""
    workspace = workspace_for(ctx, "calibrate", {"output", "resume"}, typed_paths=model is not None and output is not None)
    manifest = run_stage(workspace, "calibrate", output=output, extra={"resume": resume}, progress=not as_json)
    return manifest  # None on ranks other than 0 of a distributed run: they print nothing


@app.command()
@handled
def init(
    ctx: typer.Context,
    calibration: Annotated[Path | None, typer.Argument(help="Output directory of `sclora calibrate`; default: the workspace's.")] = None,
    output: Output = None,
    beta: Annotated[float, typer.Option(help="0 favours the new task, 1 favours preservation; dCov = (1-beta) Cov+ - beta Cov-.")] = 0.5,
    rank: Annotated[int, typer.Option(help="LoRA rank r.")] = 128,
    alpha: Annotated[float | None, typer.Option(help="LoRA alpha (scale = alpha / rank); default: rank.")] = None,
    method: Annotated[str, typer.Option(help="sclora (default), lora, pissa, milora, olora, corda-ipa, corda-kpa or lora-null; "
            "corda-* and lora-null need a calibration made with --for.")] = "sclora",
    model: Annotated[Path | None, typer.Option(help="Use this local copy of the calibrated model instead of the recorded location.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for random inits (lora).")] = 0,
    shard_size: Annotated[str, typer.Option(help="Largest residual shard, e.g. 5GB or 500MB.")] = "5GB",
    as_json: JsonFlag = False,
) -> dict | None:
    """Turn a calibration into a residual model (W_res) and a PEFT adapter (A_init, B_init)."""
    workspace = workspace_for(ctx, "init", {"calibration", "output", "model"}, typed_paths=calibration is not None and output is not None)
    manifest = run_stage(workspace, "init", source=calibration, output=output, extra={"model": model}, progress=not as_json)
    return manifest


@app.command()
@handled
def sweep(
    calibration: Annotated[Path, typer.Argument(help="Output directory of `sclora calibrate`.")],
    betas: Annotated[str, typer.Option(help="Comma-separated betas in [0, 1].")] = "0,0.25,0.5,0.75,0.9,0.95,0.99,1",
    rank: Annotated[int, typer.Option(help="LoRA rank r.")] = 128,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write table.csv, frontier.png, layers.png (and --init "
            "folders) here.")] = None,
    write_init: Annotated[bool, typer.Option("--init", help="Also write an init folder (beta-B/) per beta, as `sclora init` "
            "would.")] = False,
    alpha: Annotated[float | None, typer.Option(help="LoRA alpha for --init (scale = alpha / rank); default: rank.")] = None,
    model: Annotated[Path | None, typer.Option(help="Use this local copy of the calibrated model instead of the recorded "
            "location.")] = None,
    no_plots: Annotated[bool, typer.Option("--no-plots", help="Skip the PNG figures (they need matplotlib).")] = False,
    as_json: JsonFlag = False,
) -> dict | None:
    """Predict the SC-LoRA trade-off for many betas, no training: Cov+ and Cov- energy in each subspace."""
    manifest = sweep_workflow.sweep(calibration, output, betas=parse_betas(betas), rank=rank, write_init=write_init, alpha=alpha,
                                    model=model, plots_enabled=not no_plots, progress=not as_json)
    return manifest


def parse_betas(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"--betas must be comma-separated numbers like 0,0.5,0.9, got {text!r}.") from None


@app.command()
@handled
def train(
    ctx: typer.Context,
    run_dir: Annotated[Path | None, typer.Argument(help="Output directory of `sclora init`; default: the workspace's.")] = None,
    output: Output = None,
    data: Annotated[str | None, typer.Option(help="Training data (registry name, Hub id, or file); default: the calibration's + dataset.")] = None,
    samples: Annotated[int | None, typer.Option(help="Use this many rows (seeded sample); default: all rows.")] = None,
    epochs: Annotated[float, typer.Option(help="Passes over the data.")] = 1.0,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many optimiser steps (overrides --epochs).")] = None,
    lr: Annotated[float, typer.Option(help="AdamW learning rate (cosine schedule, 3% warm-up, no weight decay).")] = 2e-5,
    batch_size: Annotated[int, typer.Option(help="Sequences per device step.")] = 8,
    grad_accum: Annotated[int, typer.Option(help="Gradient accumulation steps.")] = 1,
    max_length: Annotated[int, typer.Option(help="Truncate each sample to this many tokens.")] = 512,
    seed: Annotated[int, typer.Option(help="Seed for sampling, shuffling and dropout.")] = 0,
    freeze_a: Annotated[bool, typer.Option("--freeze-a", help="Keep A at its initial value; train B only.")] = False,
    freeze_b: Annotated[bool, typer.Option("--freeze-b", help="Keep B at Q_r so every update stays inside the subspace; train A only.")] = False,
    gradient_checkpointing: Annotated[bool, typer.Option("--gradient-checkpointing", help="Trade compute for activation memory.")] = False,
    bf16: Annotated[bool, typer.Option("--bf16", help="Load the residual model in bfloat16 and train with bf16 autocast.")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint in the output directory.")] = False,
    save_steps: Annotated[int, typer.Option(help="Write a resumable checkpoint every this many steps.")] = 200,
    as_json: JsonFlag = False,
) -> dict | None:
    """Train only the adapter on the new task, on top of the residual model.

    Runs data-parallel under `torchrun --nproc_per_node N` or `accelerate launch` (rank 0 writes;
    --batch-size is per process)."""
    workspace = workspace_for(ctx, "train", {"run_dir", "output", "resume"}, typed_paths=run_dir is not None and output is not None)
    manifest = run_stage(workspace, "train", source=run_dir, output=output, extra={"resume": resume}, progress=not as_json)
    return manifest  # None on ranks other than 0 of a distributed run: they print nothing


@app.command()
@handled
def merge(
    ctx: typer.Context,
    run_dir: Annotated[Path | None, typer.Argument(help="Output of `sclora init` or `sclora train`; default: the workspace's train "
            "output when it was trained from the current init, else the init.")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Writes DIR/merged (full model) and DIR/lora (rank-2r "
            "LoRA for the original base); default: the workspace's merge folder.")] = None,
    rebuild_base: Annotated[Path | None, typer.Option(help="Write only the rebuilt original model (W0) to this directory.")] = None,
    shard_size: Annotated[str, typer.Option(help="Largest output shard, e.g. 5GB or 500MB; peak memory is about one shard.")] = "5GB",
    as_json: JsonFlag = False,
) -> dict | None:
    """Rebuild W0 bit-exactly, verify it, and write the merged model and a standard LoRA."""
    workspace = workspace_for(ctx, "merge", {"run_dir", "output", "rebuild_base"}, typed_paths=run_dir is not None)
    manifest = run_stage(workspace, "merge", source=run_dir, output=output, extra={"rebuild_base": rebuild_base}, progress=not as_json)
    return manifest


@app.command("eval")
@handled
def eval_command(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Argument(help="Model directory, embedded short name, Hub id, or an sclora init/train/merge output "
            "(result goes to RUN/eval.json); default: the workspace's merge.")] = None,
    safety: Annotated[str, typer.Option(help="Harmful requests with reference refusals (refusal rate, refusal NLL); "
            "'none' skips.")] = "safety-heldout",
    benign: Annotated[str, typer.Option(help="Benign prompts with reference answers (over-refusal, NLL); 'none' skips.")] = "benign-heldout",
    utility: Annotated[str, typer.Option(help="Dialogue -> summary pairs (ROUGE-1/2/L, NLL); 'none' skips.")] = "dialogsum-heldout",
    knowledge: Annotated[str, typer.Option(help="Questions with answers (+ aliases) for exact match; 'none' skips.")] = "knowledge",
    samples: Annotated[int | None, typer.Option(help="Rows per set, chosen deterministically from --seed; default: all rows.")] = None,
    max_new_tokens: Annotated[int | None, typer.Option(help="Greedy tokens per answer for every set; default: 64 (24 for knowledge).")] = None,
    batch_size: Annotated[int, typer.Option(help="Prompts per generation batch.")] = 8,
    adapter: Annotated[Path | None, typer.Option(help="Apply this PEFT adapter on top of the model.")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write the results as JSON to this file (default for a "
            "run: RUN/eval.json).")] = None,
    judge: Annotated[bool, typer.Option("--judge", help="Score harmfulness 1-5 with an LLM judge at OPENAI_BASE_URL "
            "(OPENAI_API_KEY, SCLORA_JUDGE_MODEL).")] = False,
    seed: Annotated[int, typer.Option(help="Seed for sampling rows.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    as_json: JsonFlag = False,
) -> dict | None:
    """Refusal rate, over-refusal, ROUGE, knowledge exact match and reference NLLs on held-out sets."""
    workspace = workspace_for(ctx, "eval", {"model", "adapter", "output"}, typed_paths=model is not None)
    result = run_stage(workspace, "eval", source=None if model is None else Path(model), output=output, extra={"adapter": adapter},
                       progress=not as_json)
    return result


@app.command()
@handled
def push(
    ctx: typer.Context,
    merge_dir: Annotated[Path | None, typer.Argument(help="Output directory of `sclora merge`; default: the workspace's.")] = None,
    repo_id: Annotated[str | None, typer.Option("--repo-id", help="Hub repository ORG/NAME (created if missing); default: the "
            "workspace's repo_id.")] = None,
    private: Annotated[bool, typer.Option("--private", help="Create the repository as private (refused if it exists and is public).")] = False,
    revision: Annotated[str | None, typer.Option("--revision", help="Branch to commit to, created from main if missing; default: main.")] = None,
    commit_message: Annotated[str | None, typer.Option("--commit-message", help="Commit summary (first line) and description (the rest).")] = None,
    what: Annotated[str, typer.Option("--what", help="all: merged model at the root + LoRA under lora/; merged: the merged "
            "model; lora: the rank-2r LoRA for the original base.")] = "all",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan (files, sizes) and the model card; no network at all.")] = False,
    to: Annotated[Path | None, typer.Option("--to", help="Write the publishable folder to this local directory instead of uploading.")] = None,
    keep_local_paths: Annotated[bool, typer.Option("--keep-local-paths", help="Publish the local paths recorded in the "
            "manifests as they are; by default each becomes <local>/NAME.")] = False,
    as_json: JsonFlag = False,
) -> dict | None:
    """Publish a verified merge to the Hub in one commit, with a model card that records beta and the data.

    The token comes from HF_TOKEN or `hf auth login`, never from the command line; HF_ENDPOINT selects a self-hosted hub."""
    workspace = workspace_for(ctx, "push", {"merge_dir", "dry_run", "to"}, typed_paths=merge_dir is not None)
    record = run_stage(workspace, "push", source=merge_dir, extra={"dry_run": dry_run, "to": to}, progress=not as_json)
    if dry_run and not as_json:
        typer.echo(record["card"])  # the document it would publish, for a pipe or a file; the plan is on stderr
    return record


@app.command()
@handled
def demo(
    output: Annotated[Path, typer.Option("-o", "--output", help="Where the demo's artefacts go.")] = Path("sclora-demo"),
    model: Annotated[str, typer.Option(help="Model to start from (default: the embedded SmolLM2-135M-Instruct with the shipped "
            "safety adapter merged in).")] = demo_workflow.DemoSettings.model,
    samples: Annotated[int, typer.Option(help="Rows per calibration set.")] = demo_workflow.DemoSettings.samples,
    rank: Annotated[int, typer.Option(help="LoRA rank r.")] = demo_workflow.DemoSettings.rank,
    steps: Annotated[int, typer.Option(help="Training steps.")] = demo_workflow.DemoSettings.steps,
    eval_samples: Annotated[int, typer.Option(help="Rows per evaluation set (0 skips eval).")] = demo_workflow.DemoSettings.eval_samples,
    quick: Annotated[bool, typer.Option("--quick", help="Skip the vanilla LoRA run the table compares SC-LoRA with.")] = False,
    as_json: JsonFlag = False,
) -> dict | None:
    """Run the whole pipeline offline from the shipped safety-aligned start: calibrate -> init -> train -> merge -> eval -> push
    (local), then compare with vanilla LoRA at the same update norm (refusal rate and ROUGE-L)."""
    settings = demo_workflow.DemoSettings(model=model, baseline=aligned.base_of(model), samples=samples, rank=rank, steps=steps,
                                          eval_samples=eval_samples, compare=not quick)
    return demo_workflow.demo(output, settings, progress=not as_json)


app.command("new")(workspace_commands.new)
app.command("run")(workspace_commands.run)
app.command("status")(workspace_commands.status)


def main() -> None:
    terminate_like_interrupt()
    sys.exit(run_app(sys.argv[1:]))


def run_app(argv: list[str]) -> int:
    """Run the command line; the exit code of one the parser refused (with its --json document)."""
    try:
        outcome = app(args=argv, prog_name="sclora", standalone_mode=False)
    except RefusedCommandLine as refused:
        return refused_command_line(refused, argv, [command.name for command in typer.main.get_command(app).commands.values()])
    except typer.Abort:  # a prompt met the end of its input (sclora has none; typer's own)
        return 1
    return outcome if isinstance(outcome, int) else 0  # --help and the like exit with their code; a command returns its result
