"""The testbeds' tables: mean +- stdev over seeds, the model before fine-tuning on top, rows not
run yet marked, and the probe pass (examples/testbed_common/report.py)."""

from __future__ import annotations

import json
import shutil
import statistics
import sys

from testbed_common.frontier import KNOWLEDGE, SAFETY, marker, plot_frontier
from testbed_common.grid import Config, RateRule
from testbed_common.report import Column, fmt, probes_table, table

from tests.examples.testbeds import EXAMPLES, load_script

RULE = RateRule(reference="LoRA", lr=2e-3, probe_lr=2e-3)
CONFIGS = [Config("LoRA", "lora", rates=(2e-3,)), Config("PiSSA", "pissa"), Config("CorDA KPA", "corda-kpa"),
           Config("SC-LoRA b=0.9", "sclora", 0.9, rates=(2.2e-4, 2e-3))]
COLUMNS = (Column("score", "score"),)


def row(config: str, lr: float, seed: int, score: float, norm: float) -> dict:
    return {"config": config, "lr": lr, "seed": seed, "score": score, "update_norm": norm, "update_outside_fraction": None,
            "train_seconds": 10.0, "eval_seconds": 5.0}


def test_fmt_is_mean_and_sample_stdev():
    assert fmt([0.9, 0.87, 0.94]) == f"{statistics.mean([0.9, 0.87, 0.94]):.3f} +- {statistics.stdev([0.9, 0.87, 0.94]):.3f}"
    assert fmt([0.5, None]) == "0.500"
    assert fmt([None]) == "n/a"


def lines_of(markdown: str) -> dict[str, list[str]]:
    return {cells[0]: cells for cells in ([c.strip() for c in line.strip("|").split("|")] for line in markdown.splitlines()[2:])}


def test_table_rows_hold_mean_stdev_and_mark_what_has_not_run():
    rows = [row("LoRA", 2e-3, s, v, n) for s, v, n in ((0, 0.9, 13.0), (1, 0.8, 14.0), (2, 0.7, 15.0))]
    rows += [row("PiSSA", 3e-4, 0, 0.95, 12.0)]
    markdown = table(CONFIGS, {"PiSSA": 3e-4}, rows, {"score": 0.98}, "before", COLUMNS, RULE, seeds=3)
    lines = markdown.splitlines()
    assert lines[0].startswith("| model | lr | rate rule | score | update norm | update outside S | seeds | time/run |")
    assert lines[2] == "| before | - | - | 0.980 | - | - | - | - |"
    body = [[c.strip() for c in line.strip("|").split("|")] for line in lines[3:]]
    assert body[0] == ["LoRA", "0.002", "reference", "0.800 +- 0.100", "14.000 +- 1.000", "n/a", "3", "15 s"]
    assert body[1][:4] == ["PiSSA", "0.0003", "matched update norm (LoRA at 0.002)", "0.950"] and body[1][-2] == "1 of 3"
    assert body[2][:4] == ["CorDA KPA", "matched, not measured yet", "matched update norm (LoRA at 0.002)", "not run yet"]
    assert body[2][-2:] == ["0 of 3", "-"]
    assert [b[:3] for b in body[3:]] == [["SC-LoRA b=0.9", "0.00022", "matched update norm (LoRA at 0.002)"],
                                         ["SC-LoRA b=0.9", "0.002", "equal lr"]]
    assert body[3][3] == "not run yet" and body[4][3] == "not run yet"
    assert all(len(b) == len(body[0]) for b in body), "every row has every column"


def test_a_row_run_at_an_unplanned_rate_still_shows():
    markdown = table(CONFIGS, {}, [row("LoRA", 1e-3, 0, 0.5, 7.0)], {"score": 1.0}, "before", COLUMNS, RULE, seeds=1)
    assert any(line.startswith("| LoRA | 0.001 | outside the plan | 0.500 |") for line in markdown.splitlines())


def test_probe_table_gives_each_measured_rate():
    markdown = probes_table([("LoRA", 2e-3, 13.9), ("PiSSA", 2e-3, 139.0), ("CorDA KPA", 2e-3, None)], {"PiSSA": 2e-4}, RULE)
    assert "| LoRA | 0.002 | 13.900 | target |" in markdown
    assert "| PiSSA | 0.002 | 139.000 | 0.0002 |" in markdown
    assert "| CorDA KPA | 0.002 | not run yet | - |" in markdown


def table_only_over_committed(testbed: str, files: tuple[str, ...], tmp_path, monkeypatch):
    """Run a testbed's `--table-only` over copies of its committed results; returns its run.py
    module and the written results.md (past the command line), checked equal to the committed one."""
    results = EXAMPLES / testbed / "results"
    for name in files:
        shutil.copy(results / name, tmp_path / name)
    script = load_script(f"{testbed}/run.py", f"{testbed}_run")
    monkeypatch.setattr(sys, "argv", ["run.py", "--table-only", "--out", str(tmp_path)])
    script.main()
    written = (tmp_path / "results.md").read_text().split("\n", 2)[2]
    assert written == (results / "results.md").read_text().split("\n", 2)[2], "the committed results.md is what --table-only prints"
    return script, written


def test_the_committed_safety_results_render_as_committed_and_as_the_readmes_show(tmp_path, monkeypatch, capsys):
    """--table-only over the committed safety grid gives the committed results.md, every
    configuration ran 3 seeds at its rate, and both READMEs show that very table."""
    safety, written = table_only_over_committed("safety_testbed", ("results.json", "rates.json", "aligned_eval.json"), tmp_path, monkeypatch)
    assert written in capsys.readouterr().out
    assert "not run yet" not in written and "not measured yet" not in written
    table_rows = [line for line in written.split("\n\nRate probes")[0].splitlines() if line.startswith("| ") and "+-" in line]
    arms = sum(len(config.rates) for config in safety.CONFIGS)
    assert len(table_rows) == arms and all(line.split(" | ")[-2] == "3" for line in table_rows)  # seeds
    assert "| LoRA | 0.002 | reference | 0.903 +- 0.035 |" in written
    for readme in (EXAMPLES / "safety_testbed" / "README.md", EXAMPLES.parent / "README.md"):
        shown = readme.read_text()
        assert all(line in shown for line in table_rows), readme


def test_the_frontier_plot_draws_either_testbeds_metrics(tmp_path):
    order = ["LoRA", "SC-LoRA b=0.8"]
    for axes in (SAFETY, KNOWLEDGE):
        rows = [{"config": name, "lr": 1e-3, "seed": seed, "update_norm": 14.0, axes.x: 0.1 * seed, axes.y: 0.5 + 0.1 * seed}
                for name in order for seed in range(3)]
        path = tmp_path / f"{axes.y}.png"
        plot_frontier(rows, {axes.y: 0.6}, path, order, axes)
        assert path.read_bytes().startswith(b"\x89PNG")


def test_the_committed_knowledge_results_render_as_committed_and_as_the_readmes_show(tmp_path, monkeypatch):
    """--table-only over the committed knowledge grid gives the committed results.md, every row
    has 3 seeds, and both READMEs show that very table."""
    results = EXAMPLES / "knowledge_testbed" / "results"
    knowledge, written = table_only_over_committed("knowledge_testbed", ("results.json", "rates.json", "base_eval.json"), tmp_path, monkeypatch)
    assert (tmp_path / "frontier.png").read_bytes().startswith(b"\x89PNG")
    table_rows = [line for line in written.split("\n\nRate probes")[0].splitlines() if line.startswith("| ") and "+-" in line]
    assert len(table_rows) == len(knowledge.CONFIGS) and all(line.split(" | ")[-2] == "3" for line in table_rows)  # seeds
    for readme in (EXAMPLES / "knowledge_testbed" / "README.md", EXAMPLES.parent / "README.md"):
        shown = readme.read_text()
        assert all(line in shown for line in table_rows), readme
    samples = json.loads((results / "samples.json").read_text())
    assert len(samples) == len(json.loads((results / "results.json").read_text())["rows"])
    answers = {sample["generation"] for run in samples.values() for sample in run["knowledge"]}
    assert any(answer.startswith("14. 14. 14. 14.") for answer in answers)  # the README's quoted collapse


def test_a_remade_alignment_with_the_same_recipe_resumes_onto_the_committed_safety_rows(monkeypatch):
    """The grid refuses an --out made with other settings; the alignment's wall time is not one."""
    safety = load_script("safety_testbed/run.py", "safety_testbed_run")
    committed = json.loads((EXAMPLES / "safety_testbed" / "results" / "results.json").read_text())["settings"]
    monkeypatch.setattr(sys, "argv", ["run.py"])
    remade = {**committed["alignment"], "seconds": 1127.8}
    assert safety.settings_of(safety.parse_args(), remade) == committed
    other_recipe = {**remade, "epochs": 1.0}
    assert safety.settings_of(safety.parse_args(), other_recipe) != committed


def test_no_two_series_of_the_safety_plot_share_colour_and_marker():
    safety = load_script("safety_testbed/run.py", "safety_testbed_run")
    arms = [(config.name, rate) for config in safety.CONFIGS for rate in config.rates]
    looks = {(index % 10, marker(index, "locked" in name or "frozen" in name)) for index, (name, _) in enumerate(arms)}
    assert len(arms) > 10 and len(looks) == len(arms)
