"""The metrics of each held-out set, from the model's generations and reference NLLs:

- safety: refusal rate on harmful requests (keyword detector, sclora_tools.core.refusal) and the
  mean NLL of the reference refusals; optionally a 1-5 harmfulness score from an LLM judge.
- benign: over-refusal rate (also for the edgy_benign category alone) and the NLL of the answers.
- utility: ROUGE-1/2/L F-measure (rouge-score, with stemming) and the NLL of the summaries.
- knowledge: exact match of the answer or an alias inside the generation.

A new metric: its pure function in core/ (like core/refusal.py), its wiring into a scorer here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .. import ui
from ..core.refusal import exact_match, is_refusal, mean_score, over_refusal_rate, refusal_rate, share
from ..errors import InputError
from ..io.judge import JudgeConfig, judge_one
from .generation import Runner, generate_set, reference_nll
from .sets import EvalSet, answers_of

EXAMPLES_PER_SET = 3
EDGY_CATEGORY = "edgy_benign"
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


@dataclass
class Outcome:
    """What one set produced: its metrics, its generations and a few examples to read."""

    metrics: dict
    generations: list[str]
    examples: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def score_safety(runner: Runner, evalset: EvalSet, max_new_tokens: int) -> Outcome:
    generations = generate_set(runner, evalset, max_new_tokens)
    metrics = {"refusal_rate": refusal_rate(generations), "refusal_nll": reference_nll(runner, evalset)}
    return Outcome(metrics, generations, examples(evalset, generations, refusal=[is_refusal(g) for g in generations]))


def score_benign(runner: Runner, evalset: EvalSet, max_new_tokens: int) -> Outcome:
    generations = generate_set(runner, evalset, max_new_tokens)
    metrics = {"over_refusal_rate": over_refusal_rate(generations)}
    edgy = [g for g, row in zip(generations, evalset.loaded.rows, strict=True) if row.get("category") == EDGY_CATEGORY]
    if edgy:
        metrics["over_refusal_rate_edgy"] = over_refusal_rate(edgy)
    metrics["benign_nll"] = reference_nll(runner, evalset)
    return Outcome(metrics, generations, examples(evalset, generations, refusal=[is_refusal(g) for g in generations]))


def score_utility(runner: Runner, evalset: EvalSet, max_new_tokens: int) -> Outcome:
    generations = generate_set(runner, evalset, max_new_tokens)
    metrics = {**rouge_means(evalset.references, generations), "summary_nll": reference_nll(runner, evalset)}
    return Outcome(metrics, generations, examples(evalset, generations))


def score_knowledge(runner: Runner, evalset: EvalSet, max_new_tokens: int) -> Outcome:
    generations = generate_set(runner, evalset, max_new_tokens)
    matches = [exact_match(g, answers) for g, answers in zip(generations, answers_of(evalset), strict=True)]
    return Outcome({"knowledge_em": share(matches)}, generations, examples(evalset, generations, match=matches))


SCORERS = {"safety": score_safety, "benign": score_benign, "utility": score_utility, "knowledge": score_knowledge}


def rouge_means(references: list[str], generations: list[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measure (the rouge-score package, Porter stemming)."""
    try:
        from rouge_score import rouge_scorer
    except ImportError:
        raise InputError("ROUGE needs the rouge-score package; run `pip install rouge-score` or skip with --utility none.") from None
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    scores = [scorer.score(reference, generation) for reference, generation in zip(references, generations, strict=True)]
    return {kind: sum(score[kind].fmeasure for score in scores) / len(scores) for kind in ROUGE_TYPES}


def timed(scorer, runner: Runner, evalset: EvalSet, max_new_tokens: int) -> Outcome:
    started = time.time()
    outcome = scorer(runner, evalset, max_new_tokens)
    outcome.seconds = round(time.time() - started, 2)
    return outcome


def examples(evalset: EvalSet, generations: list[str], **flags: list[bool]) -> list[dict]:
    shown = []
    for i in range(min(EXAMPLES_PER_SET, len(generations))):
        extra = {name: values[i] for name, values in flags.items()}
        shown.append({"prompt": evalset.questions[i], "reference": evalset.references[i], "generation": generations[i], **extra})
    return shown


def add_judge_scores(config: JudgeConfig, evalset: EvalSet, outcome: Outcome, bar) -> None:
    """The judge's harmfulness score of every answer to the harmful requests, and their mean."""
    task = bar.add_task("safety judge", total=len(outcome.generations), rate="")
    scores = []
    for question, generation in zip(evalset.questions, outcome.generations, strict=True):
        scores.append(judge_one(config, question, generation))
        bar.update(task, advance=1, rate=f"mean {mean_score(scores) or 0:.2f}")
    unscored = sum(score is None for score in scores)
    if unscored:
        ui.warn(f"the judge gave no readable score for {unscored} of {len(scores)} answers; they are left out of the mean.")
    outcome.metrics["harmfulness"] = mean_score(scores)
    outcome.metrics["harmfulness_scored"] = len(scores) - unscored
    for shown, score in zip(outcome.examples, scores, strict=False):  # the examples are the first few answers
        shown["harmfulness"] = score
