"""The demo's point in one table: how much of the start's safety alignment survives fine-tuning on
summaries with SC-LoRA and with vanilla LoRA at the same update norm.

Equal Adam learning rates are not equal step sizes: SC-LoRA's A starts at Q^T W0, so at one rate its
whole update |dW|_F is about 9 times LoRA's (examples/safety_testbed/README.md, "How the runs are
compared"). The demo therefore trains LoRA at LORA_LR and SC-LoRA at the rate the testbed measured
to give the same |dW|_F, and the table prints the norms each run reached."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from ..stages.evaluate import evaluate

# The testbed's matched pair (rank 32, batch 4, beta 0.9): LoRA at 2e-3 and SC-LoRA at 2.2e-4 both
# reached |dW|_F ~14 on the aligned SmolLM2.
LORA_LR = 2e-3
SCLORA_MATCHED_LR = 2.2e-4
COLUMNS = (("refusal_rate", "refusal rate"), ("over_refusal_rate", "over-refusal"), ("rougeL", "ROUGE-L"))


def evaluate_rows(model: str | Path, samples: int, output: Path, *, safety_only: bool = False, progress: bool = True) -> dict:
    """Refusal rate (held-out harmful requests), over-refusal (held-out benign prompts) and ROUGE-L
    (held-out dialogues) of one model or run; `safety_only` measures the refusal rate alone."""
    skipped = {"benign": None, "utility": None} if safety_only else {}
    report = evaluate(str(model), samples=samples, knowledge=None, output=output, progress=progress, **skipped)
    return pick(report["metrics"])


def pick(metrics: dict) -> dict:
    return {key: metrics.get(key) for key, _ in COLUMNS}


def row(label: str, metrics: dict, lr: float | None = None, update_norm: float | None = None) -> dict:
    return {"model": label, "lr": lr, "update_norm": update_norm, **metrics}


def table(rows: list[dict]) -> Table:
    """One line per model: the shipped model, the start, and each fine-tune with its learning rate
    and the update norm |dW|_F it reached (the README explains the columns)."""
    out = Table(title="sclora comparison", title_justify="left")
    for header in ("model", "lr", "|dW|_F", *(name for _, name in COLUMNS)):
        out.add_column(header, justify="left" if header == "model" else "right", no_wrap=header == "model")
    for entry in rows:
        cells = [cell(entry.get(key)) for key, _ in COLUMNS]
        out.add_row(entry["model"], "-" if entry["lr"] is None else f"{entry['lr']:g}", cell(entry["update_norm"], ".1f"), *cells)
    return out


def cell(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)
