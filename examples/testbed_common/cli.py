"""What both testbeds' commands share: the grid's options and the results.md they write."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
from pathlib import Path

from .grid import Config, RateRule, Store, known_rates, probe_measurements
from .report import Column, probes_table, table


def grid_arguments(parser: argparse.ArgumentParser, configs: list[Config], default_out: str) -> None:
    names = [c.name for c in configs]
    parser.add_argument("--out", type=Path, default=Path(default_out))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--configs", nargs="+", default=names, choices=names, metavar="NAME", help=f"rows to run: {', '.join(names)}")
    parser.add_argument("--lrs", type=float, nargs="+", help="run only these learning rates (skips the probe pass and the matched rows)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=1,
                        help="fine-tunes run at once (each gets torch.get_num_threads()/jobs threads; OMP_NUM_THREADS sets it)")
    parser.add_argument("--probe-lr", type=float, help="rate of the first pass's probes (default: the reference's rate)")
    parser.add_argument("--table-only", action="store_true", help="print and write results.md from --out without running anything")


def chosen(configs: list[Config], args) -> list[Config]:
    return [c for c in configs if c.name in args.configs]


def rate_rule(rule: RateRule, args) -> RateRule:
    """The script's rule, with --probe-lr when given."""
    return rule if args.probe_lr is None else dataclasses.replace(rule, probe_lr=args.probe_lr)


def saved_grid(out: Path, configs: list[Config], rule: RateRule, reference_file: str) -> tuple[Store, dict, dict]:
    """For --table-only: the rows and probes in --out, the rates they measured, and the metrics of
    the model before fine-tuning."""
    path = out / reference_file
    if not path.is_file():
        sys.exit(f"{path} is missing: the model before fine-tuning was never evaluated in this --out; run without --table-only first.")
    store = Store(out, None)
    return store, known_rates(store, configs, rule), json.loads(path.read_text())["metrics"]


def write_tables(out: Path, store: Store, configs: list[Config], rates: dict, reference: dict, before_label: str,
                 columns: tuple[Column, ...], rule: RateRule, seeds: int) -> str:
    """results.md: the command, the table (rows not run yet marked), and the probe pass."""
    rates = {**known_rates(store, configs, rule), **rates}
    markdown = (f"Command: `python {shlex.join(sys.argv)}`\n\n" + table(configs, rates, store.rows, reference, before_label, columns, rule, seeds)
                + "\n\nRate probes (the first pass; see the README's rate rule):\n\n"
                + probes_table(probe_measurements(store, configs, rule), rates, rule) + "\n")
    (out / "results.md").write_text(markdown)
    return markdown
