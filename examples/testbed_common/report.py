"""The testbeds' tables: one row per (configuration, learning rate), mean +- stdev over seeds, the
model before fine-tuning on top, and every planned row that has not run yet marked as such."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from .grid import MATCHED, Config, RateRule

NOT_RUN = "not run yet"


@dataclass(frozen=True)
class Column:
    key: str
    header: str


TRAILING = (Column("update_norm", "update norm"), Column("update_outside_fraction", "update outside S"))


def fmt(values: list) -> str:
    """'mean +- stdev' over the values that exist (stdev needs two), or 'n/a'."""
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} +- {statistics.stdev(values):.3f}"


def planned(configs: list[Config], rates: dict[str, float], rows: list[dict]) -> list[tuple[Config, float | str, bool]]:
    """Every (config, rate, in the plan) of the grid in table order: the rates it plans (a MATCHED
    one by its measured value, or MATCHED while unmeasured), then any other rate a row ran at."""
    entries = []
    for config in configs:
        known = [rates.get(config.name, MATCHED) if rate == MATCHED else rate for rate in config.rates]
        extra = sorted({r["lr"] for r in rows if r["config"] == config.name} - {k for k in known if k != MATCHED})
        ordered = sorted(known, key=lambda r: (r == MATCHED, 0.0 if r == MATCHED else r))
        entries += [(config, rate, True) for rate in ordered] + [(config, rate, False) for rate in extra]
    return entries


def table(configs: list[Config], rates: dict[str, float], rows: list[dict], reference: dict, before_label: str,
          columns: tuple[Column, ...], rule: RateRule, seeds: int) -> str:
    headers = ["model", "lr", "rate rule", *(c.header for c in columns), *(c.header for c in TRAILING), "seeds", "time/run"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines.append(f"| {before_label} | - | - | " + " | ".join(fmt([reference.get(c.key)]) for c in columns)
                 + " | - | - | - | - |")
    for config, rate, in_plan in planned(configs, rates, rows):
        lines.append(row_line(config, rate, in_plan, rows, columns, rule, seeds))
    return "\n".join(lines)


def not_run(count: int) -> str:
    return " | ".join([NOT_RUN, *["-"] * (count - 1)])


def row_line(config: Config, rate, in_plan: bool, rows: list[dict], columns: tuple[Column, ...], rule: RateRule, seeds: int) -> str:
    rule_text = rule.describe(config, rate) if in_plan else "outside the plan"
    blanks = not_run(len(columns) + len(TRAILING))
    if rate == MATCHED:
        return f"| {config.name} | matched, not measured yet | {rule_text} | {blanks} | 0 of {seeds} | - |"
    group = [r for r in rows if (r["config"], r["lr"]) == (config.name, rate)]
    if not group:
        return f"| {config.name} | {rate:g} | {rule_text} | {blanks} | 0 of {seeds} | - |"
    cells = [fmt([r.get(c.key) for r in group]) for c in (*columns, *TRAILING)]
    seconds = statistics.mean(r["train_seconds"] + r.get("eval_seconds", 0.0) for r in group)
    count = f"{len(group)}" if len(group) >= seeds else f"{len(group)} of {seeds}"
    return f"| {config.name} | {rate:g} | {rule_text} | " + " | ".join(cells) + f" | {count} | {seconds:.0f} s |"


def probes_table(measured: list[tuple[str, float, float | None]], rates: dict[str, float], rule: RateRule) -> str:
    """The first pass: (configuration, probe lr, |dW|_F or None) and the matched rate each gave."""
    lines = [f"| probe (seed {rule.seed}) | lr | update norm | matched rate |", "|---|---|---|---|"]
    for name, lr, norm in measured:
        result = "target" if name == rule.reference else (f"{rates[name]:g}" if name in rates else "-")
        lines.append(f"| {name} | {lr:g} | {NOT_RUN if norm is None else f'{norm:.3f}'} | {result} |")
    return "\n".join(lines)
