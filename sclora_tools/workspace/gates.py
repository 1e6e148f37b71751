"""[eval.gates]: thresholds on eval metrics (`refusal_rate = ">= 0.9"`) that decide whether a
pipeline publishes."""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from ..errors import UsageError

OPERATORS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt, "==": operator.eq}
CONDITION = re.compile(r"^\s*(>=|<=|==|>|<)\s*([-+0-9.eE]+)\s*$")


@dataclass(frozen=True)
class GateResult:
    metric: str
    condition: str
    value: float | None
    passed: bool

    def describe(self) -> str:
        shown = "n/a" if self.value is None else f"{self.value:.4g}"
        return f"{self.metric} {self.condition}: {shown} ({'passed' if self.passed else 'FAILED'})"

    def to_dict(self) -> dict:
        return asdict(self)


def parse_condition(metric: str, condition: str) -> tuple[str, float]:
    match = CONDITION.match(condition)
    try:
        threshold = float(match.group(2)) if match else math.nan
    except ValueError:
        threshold = math.nan
    if match is None or math.isnan(threshold):
        raise UsageError(f"eval.gates.{metric} = {condition!r} is not a condition; write it like \">= 0.9\" (operators: "
                         f"{', '.join(OPERATORS)}).")
    return match.group(1), threshold


def check_conditions(gates: Mapping[str, str]) -> None:
    """Refuse a malformed gate before anything runs."""
    for metric, condition in gates.items():
        parse_condition(metric, condition)


def evaluate_gates(gates: Mapping[str, str], metrics: Mapping[str, object]) -> list[GateResult]:
    """Each gate against the eval metrics; a gate on a metric the eval did not produce is an error."""
    results = []
    for metric, condition in gates.items():
        symbol, threshold = parse_condition(metric, condition)
        value = metrics.get(metric)
        if metric not in metrics:
            numeric = sorted(name for name, v in metrics.items() if isinstance(v, (int, float)))
            raise UsageError(f"eval.gates.{metric} names a metric this eval did not produce; use one of {', '.join(numeric)}.")
        number = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
        passed = number is not None and math.isfinite(number) and OPERATORS[symbol](number, threshold)
        results.append(GateResult(metric, f"{symbol} {threshold:g}", number, passed))
    return results
