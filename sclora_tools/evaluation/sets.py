"""The held-out sets of an evaluation: rows rendered with the model's chat template, the user's
questions and the reference answers."""

from __future__ import annotations

from dataclasses import dataclass

from .. import data
from ..errors import InputError


@dataclass
class EvalSet:
    """One held-out set, rendered: chat-templated prompts, the user's questions and the references."""

    role: str
    loaded: data.LoadedDataset
    examples: list[data.Example]
    questions: list[str]
    references: list[str]


def load_set(role: str, argument: str, tokenizer, samples: int | None, seed: int) -> EvalSet:
    loaded = data.load_dataset_rows(argument, samples, seed)
    examples = data.render_all(loaded, tokenizer)
    if any(example.prompt is None for example in examples):
        raise InputError(f"rows of {argument} need prompt and response fields (or messages ending with the assistant) to be evaluated.")
    questions, references = zip(*(question_and_reference(row, loaded.spec) for row in loaded.rows), strict=True)
    return EvalSet(role, loaded, examples, list(questions), list(references))


def question_and_reference(row: dict, spec: data.DatasetSpec) -> tuple[str, str]:
    templated = data.apply_templates(row, spec)
    if "messages" in templated:
        messages = list(templated["messages"])
        users = [m["content"] for m in messages[:-1] if m.get("role") == "user"]
        return (users[-1] if users else ""), str(messages[-1]["content"])
    return str(templated.get("prompt", "")), str(templated.get("response", ""))


def answers_of(evalset: EvalSet) -> list[list[str]]:
    """The reference answer and the row's `aliases` (kept in the raw rows, not in the templates)."""
    return [[reference, *(row.get("aliases") or [])] for reference, row in zip(evalset.references, evalset.loaded.rows, strict=True)]
