"""python examples/knowledge_testbed/samples.py [--out runs/knowledge] [--to examples/knowledge_testbed/results/samples.json]

What the grid's table cannot show, gathered from every finished run in --out: its final training
loss (the train manifest) and its first answers to the held-out knowledge questions and word
problems (the run's eval.json), so the README's examples can be checked against committed data.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sclora_tools.io.manifest import load_manifest

FIRST = 3


def run_samples(run: Path) -> dict:
    evaluated = json.loads((run / "eval.json").read_text())
    summary = load_manifest(run / "trained", "train").summary
    return {"first_loss": summary.first_loss, "last_loss": summary.last_loss,
            "knowledge": evaluated["examples"]["knowledge"][:FIRST], "math": evaluated["examples"]["math"][:1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/knowledge"))
    parser.add_argument("--to", type=Path, default=Path(__file__).parent / "results" / "samples.json")
    args = parser.parse_args()
    runs = sorted(p.parent for p in args.out.glob("*/eval.json") if (p.parent / "trained" / "manifest.json").is_file())
    args.to.write_text(json.dumps({run.name: run_samples(run) for run in runs}, indent=1, ensure_ascii=False) + "\n")
    print(f"{len(runs)} runs -> {args.to}")


if __name__ == "__main__":
    main()
