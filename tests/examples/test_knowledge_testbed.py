"""The knowledge testbed's data: the knowledge split never overlaps, and the math task's exact
match scores the final number (examples/knowledge_testbed/split.py, math_task.py)."""

from __future__ import annotations

import json
import re

import pytest

from tests.datasets.files import load, norm
from tests.examples.testbeds import load_script

split = load_script("knowledge_testbed/split.py", "knowledge_testbed_split")
math_task = load_script("knowledge_testbed/math_task.py", "knowledge_testbed_math_task")


def test_knowledge_split_never_overlaps_and_loses_no_row():
    rows = load("knowledge_qa.jsonl")
    calibration, evaluation = split.split_rows(rows)
    assert {norm(r["question"]) for r in calibration}.isdisjoint({norm(r["question"]) for r in evaluation})
    assert len(calibration) + len(evaluation) == len(rows)
    assert 0.3 * len(rows) < len(calibration) < 0.5 * len(rows)
    assert len(evaluation) >= 100


def test_knowledge_split_depends_on_the_question_alone():
    rows = load("knowledge_qa.jsonl")
    calibration, _ = split.split_rows(rows)
    reordered, _ = split.split_rows(list(reversed(rows)) + [{"question": "Which new question is this?", "answer": "x"}])
    assert {r["question"] for r in calibration} <= {r["question"] for r in reordered}
    assert split.goes_to_calibration("What is the capital of France?") == split.goes_to_calibration("  what is the CAPITAL of france? ")


def test_written_split_files_are_disjoint_chat_rows(tmp_path):
    calibration_path, evaluation_path = split.write_split(load("knowledge_qa.jsonl"), tmp_path)
    calibration = [json.loads(line) for line in calibration_path.open()]
    evaluation = [json.loads(line) for line in evaluation_path.open()]
    assert {r["prompt"] for r in calibration}.isdisjoint({r["prompt"] for r in evaluation})
    assert all(set(r) == {"prompt", "response", "aliases"} for r in calibration + evaluation)
    again = split.write_split(load("knowledge_qa.jsonl"), tmp_path / "again")
    assert [p.read_bytes() for p in again] == [calibration_path.read_bytes(), evaluation_path.read_bytes()]


@pytest.mark.parametrize("generation,expected", [
    ("3 * 12 = 36. 36 - 5 = 31. The answer is 31.", "31"),
    ("The answer is 1,200 apples.", "1200"),
    ("So the answer is: $45.", "45"),
    ("The answer is 7. Wait, 7 + 2 = 9. The answer is 9", "9"),
    ("She has 12 and then 30 left", "30"),
    ("12.50 dollars", "12.5"),
    ("I do not know.", None),
])
def test_final_answer(generation, expected):
    assert math_task.final_answer(generation) == expected


def test_exact_match_needs_the_final_number_itself():
    assert math_task.is_correct("4 * 6 = 24. 24 - 20 = 4. The answer is 4.", "4")
    assert not math_task.is_correct("4 * 6 = 24. The answer is 24.", "4"), "a step's number is not the answer"
    assert not math_task.is_correct("The answer is 40.", "4"), "no partial match"
    assert not math_task.is_correct("The answer is 4.", "44")
    assert math_task.is_correct("The answer is 30.0", "30")
    assert math_task.accuracy(["The answer is 4.", "The answer is 5.", "nothing"], ["4", "6", "1"]) == pytest.approx(1 / 3)


@pytest.mark.parametrize("name", ["math_train.jsonl", "math_heldout.jsonl"])
def test_every_bundled_solution_scores_correct_and_its_steps_add_up(name):
    rows = load(name)
    for row in rows:
        assert set(row) == {"question", "solution", "answer"}
        assert math_task.is_correct(row["solution"], row["answer"]), row
        assert not math_task.is_correct(row["solution"], str(int(row["answer"]) + 1))
        steps = re.findall(r"(\d+) ([-+*/]) (\d+) = (\d+)\.", row["solution"])
        assert len(steps) == 2, row
        for x, op, y, z in steps:
            assert {"+": int(x) + int(y), "-": int(x) - int(y), "*": int(x) * int(y), "/": int(x) / int(y)}[op] == int(z), row
        assert int(steps[-1][3]) == int(row["answer"]) >= 0


def test_heldout_problems_are_not_in_the_training_file():
    train = {norm(r["question"]) for r in load("math_train.jsonl")}
    heldout = [norm(r["question"]) for r in load("math_heldout.jsonl")]
    assert len(heldout) == len(set(heldout)) == 200 and train.isdisjoint(heldout)
    assert len(train) == 1000


def test_measure_scores_both_sets_of_a_model(tiny_fp32, tmp_path):
    """The testbed's evaluation on the tiny model: every metric present and in range, examples kept."""
    knowledge = load_script("knowledge_testbed/run.py", "knowledge_testbed_run")
    _, evaluation = split.write_split(load("knowledge_qa.jsonl")[:12], tmp_path / "data")
    metrics = knowledge.measure(tiny_fp32, tmp_path / "eval.json", {"batch_size": 4, "math_samples": 3, "knowledge": str(evaluation)})
    assert set(metrics) == {"math_accuracy", "math_nll", "knowledge_em", "knowledge_nll"}
    assert 0.0 <= metrics["math_accuracy"] <= 1.0 and 0.0 <= metrics["knowledge_em"] <= 1.0
    assert metrics["math_nll"] > 0 and metrics["knowledge_nll"] > 0
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["metrics"] == metrics and len(saved["examples"]["math"]) == 3
