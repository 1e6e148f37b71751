"""Exact-match scoring of the arithmetic word problems (the bundled `math` / `math-heldout` sets).

A generation's final answer is the number after its last "answer is" or, when it never says so,
the last number it wrote (the convention of GSM8K-style scoring); it is correct when that number
equals the reference exactly, as an integer (so "1,200", "1200.0" and "1200" are the same)."""

from __future__ import annotations

import re

NUMBER = r"-?\d[\d,]*(?:\.\d+)?"
ANSWER_IS = re.compile(rf"answer\s+is\s*:?\s*\$?\s*({NUMBER})", re.IGNORECASE)
ANY_NUMBER = re.compile(NUMBER)


def final_answer(generation: str) -> str | None:
    """The number the generation gives as its answer, or None when it wrote no number."""
    stated = ANSWER_IS.findall(generation)
    if stated:
        return canonical(stated[-1])
    numbers = ANY_NUMBER.findall(generation)
    return canonical(numbers[-1]) if numbers else None


def canonical(number: str) -> str:
    """'1,200' -> '1200', '12.0' -> '12', '2.50' -> '2.5'."""
    text = number.replace(",", "").rstrip(".")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def is_correct(generation: str, answer: str) -> bool:
    return final_answer(generation) == canonical(answer)


def accuracy(generations: list[str], answers: list[str]) -> float:
    marks = [is_correct(g, a) for g, a in zip(generations, answers, strict=True)]
    return sum(marks) / len(marks)
