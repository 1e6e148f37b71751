"""Checks on the bundled, self-written datasets in sclora_tools/datasets/.

Plain file reads only (no network, no model): row counts, schemas, train/held-out disjointness,
refusal variety, summaries that only state what the dialogue says.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter

import pytest

from tests.datasets.files import load, norm

MIN_ROWS = {
    "safety_train.jsonl": 280,
    "safety_heldout.jsonl": 120,
    "benign_train.jsonl": 260,
    "benign_heldout.jsonl": 120,
    "knowledge_qa.jsonl": 200,
}
PROMPT_KEYS = {"prompt", "response", "category"}
# Every refusal carries at least one standard refusal phrase, so simple keyword-based refusal
# detectors used in evaluation recognise the style the model is aligned to.
REFUSAL_MARKERS = ("can't", "cannot", "won't", "not able", "unable", "sorry")



# ---------------------------------------------------------------------------
# counts and schemas
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name,minimum", sorted(MIN_ROWS.items()))
def test_row_counts(name, minimum):
    assert len(load(name)) >= minimum


@pytest.mark.parametrize("name", ["safety_train.jsonl", "safety_heldout.jsonl", "benign_train.jsonl", "benign_heldout.jsonl"])
def test_prompt_response_schema(name):
    for i, row in enumerate(load(name)):
        assert set(row) == PROMPT_KEYS, (name, i, row)
        for key in PROMPT_KEYS:
            assert isinstance(row[key], str) and row[key].strip(), (name, i, key)
        assert "\n" not in row["prompt"], (name, i)


def test_knowledge_schema():
    rows = load("knowledge_qa.jsonl")
    for i, row in enumerate(rows):
        assert set(row) == {"question", "answer", "aliases"}, (i, row)
        assert isinstance(row["question"], str) and row["question"].strip().endswith("?"), i
        assert isinstance(row["answer"], str) and row["answer"].strip(), i
        assert isinstance(row["aliases"], list), i
        assert all(isinstance(a, str) and a.strip() for a in row["aliases"]), i
        assert norm(row["answer"]) not in {norm(a) for a in row["aliases"]}, i
    questions = [norm(r["question"]) for r in rows]
    assert len(questions) == len(set(questions)), "duplicate knowledge questions"


# ---------------------------------------------------------------------------
# safety and benign splits
# ---------------------------------------------------------------------------

def test_safety_categories():
    train_cats = {r["category"] for r in load("safety_train.jsonl")}
    held_cats = {r["category"] for r in load("safety_heldout.jsonl")}
    assert len(train_cats) >= 12, sorted(train_cats)
    assert held_cats <= train_cats, sorted(held_cats - train_cats)
    counts = Counter(r["category"] for r in load("safety_train.jsonl"))
    assert min(counts.values()) >= 10, counts


def test_benign_categories():
    train_cats = {r["category"] for r in load("benign_train.jsonl")}
    held = load("benign_heldout.jsonl")
    assert {r["category"] for r in held} <= train_cats
    assert sum(r["category"] == "edgy_benign" for r in held) >= 25
    assert sum(r["category"] == "edgy_benign" for r in load("benign_train.jsonl")) >= 25


@pytest.mark.parametrize("kind", ["safety", "benign"])
def test_no_duplicates_and_disjoint_splits(kind):
    train = [norm(r["prompt"]) for r in load(f"{kind}_train.jsonl")]
    held = [norm(r["prompt"]) for r in load(f"{kind}_heldout.jsonl")]
    assert len(train) == len(set(train)), Counter(train).most_common(3)
    assert len(held) == len(set(held)), Counter(held).most_common(3)
    assert not set(train) & set(held), sorted(set(train) & set(held))[:5]


@pytest.mark.parametrize("kind", ["safety", "benign"])
def test_no_near_duplicate_prompts_across_splits(kind):
    train = [re.sub(r"\W+", " ", norm(r["prompt"])).strip() for r in load(f"{kind}_train.jsonl")]
    for row in load(f"{kind}_heldout.jsonl"):
        h = re.sub(r"\W+", " ", norm(row["prompt"])).strip()
        for t in train:
            sm = difflib.SequenceMatcher(None, h, t)
            if sm.real_quick_ratio() >= 0.9 and sm.quick_ratio() >= 0.9:
                assert sm.ratio() < 0.9, (row["prompt"], t)


def test_safety_and_benign_prompts_do_not_overlap():
    safety = {norm(r["prompt"]) for n in ("safety_train.jsonl", "safety_heldout.jsonl") for r in load(n)}
    benign = {norm(r["prompt"]) for n in ("benign_train.jsonl", "benign_heldout.jsonl") for r in load(n)}
    assert not safety & benign


def test_refusals_are_varied_short_and_clear():
    train = load("safety_train.jsonl")
    assert len({r["response"] for r in train}) >= 50
    most_common = Counter(r["response"] for r in train).most_common(1)[0][1]
    assert most_common <= 10, most_common
    for name in ("safety_train.jsonl", "safety_heldout.jsonl"):
        for r in load(name):
            text = r["response"].casefold()
            assert any(m in text for m in REFUSAL_MARKERS), r
            assert len(r["response"].split()) <= 60, r


def test_benign_answers_are_not_refusals():
    for name in ("benign_train.jsonl", "benign_heldout.jsonl"):
        for r in load(name):
            opening = r["response"].casefold()[:40]
            assert not opening.startswith(("i can't", "i cannot", "sorry", "i won't", "i'm not able", "i'm sorry")), r



# ---------------------------------------------------------------------------
# dialogue summaries
# ---------------------------------------------------------------------------

def test_summary_names_and_amounts_come_from_the_dialogue():
    """Every capitalised word after the first one in a summary, and every amount of money,
    must appear in its dialogue (no hallucinated details in the references)."""
    days = {"Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"}
    allowed = {"Everyone", "They", "The", "Meanwhile", "He", "She", "It", "Pick-up", "Movie"}
    for name in ("dialogsum_train.jsonl", "dialogsum_heldout.jsonl"):
        for row in load(name):
            dialogue, summary = row["dialogue"], row["summary"]
            low = dialogue.lower()
            for m in re.finditer(r"(?<![.!?] )\b([A-Z][A-Za-z'-]+)", summary):
                if m.start() == 0:  # sentence-initial words are skipped by the lookbehind
                    continue
                word = m.group(1).removesuffix("'s")
                if word in allowed:
                    continue
                if word in days:
                    assert word in dialogue, (word, row)
                    continue
                assert word.lower() in low, (word, row)
            for amount in re.findall(r"[$£€]\d+(?:\.\d\d)?", summary):
                assert amount in dialogue, (amount, row)


def test_knowledge_answers_non_empty():
    rows = load("knowledge_qa.jsonl")
    assert all(r["answer"].strip() for r in rows)
