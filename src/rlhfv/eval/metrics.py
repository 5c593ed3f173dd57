"""Metric declarations: a pure function of records plus whether higher is better.

Benchmarks list their metrics as data (``CHAIR_METRICS``, ``POPE_METRICS`` ...), so a
report can say which way is good without knowing the benchmark.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

R = TypeVar("R")


@dataclass(frozen=True)
class Metric(Generic[R]):
    """A named aggregate over a sequence of per-item records."""

    name: str
    compute: Callable[[Sequence[R]], float]
    higher_is_better: bool | None  # None: neither (a bias check such as the yes-ratio)
    description: str = ""


def compute_metrics(metrics: Sequence[Metric[R]], records: Sequence[R]) -> dict[str, float]:
    return {m.name: m.compute(records) for m in metrics}


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, NaN (not 0) when the denominator is 0: an undefined metric."""
    return numerator / denominator if denominator else math.nan


def json_safe(value: Any) -> Any:
    """NaN -> None recursively, so results serialise as valid JSON (null = undefined)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


@dataclass(frozen=True)
class BinaryRecord:
    """One yes/no item: the gold label and the parsed prediction ("yes"/"no")."""

    label: str
    prediction: str


def binary_counts(records: Sequence[BinaryRecord], positive: str) -> tuple[int, int, int, int]:
    """(tp, fp, tn, fn) with ``positive`` as the positive class."""
    tp = fp = tn = fn = 0
    for r in records:
        if r.prediction == positive:
            if r.label == positive:
                tp += 1
            else:
                fp += 1
        elif r.label == positive:
            fn += 1
        else:
            tn += 1
    return tp, fp, tn, fn


def binary_metrics(positive: str) -> tuple[Metric[BinaryRecord], ...]:
    """accuracy, precision, recall, F1 and the positive-answer ratio for one positive class.

    precision = tp / (tp + fp); recall = tp / (tp + fn); F1 = 2 P R / (P + R);
    ``{positive}_ratio`` = (tp + fp) / n.
    """

    def accuracy(rs: Sequence[BinaryRecord]) -> float:
        tp, fp, tn, fn = binary_counts(rs, positive)
        return ratio(tp + tn, len(rs))

    def precision(rs: Sequence[BinaryRecord]) -> float:
        tp, fp, _, _ = binary_counts(rs, positive)
        return ratio(tp, tp + fp)

    def recall(rs: Sequence[BinaryRecord]) -> float:
        tp, _, _, fn = binary_counts(rs, positive)
        return ratio(tp, tp + fn)

    def f1(rs: Sequence[BinaryRecord]) -> float:
        p, r = precision(rs), recall(rs)
        if math.isnan(p) or math.isnan(r):
            return math.nan
        return ratio(2 * p * r, p + r) if p + r else 0.0

    def positive_ratio(rs: Sequence[BinaryRecord]) -> float:
        tp, fp, _, _ = binary_counts(rs, positive)
        return ratio(tp + fp, len(rs))

    return (
        Metric("accuracy", accuracy, True, "correct answers / answers"),
        Metric("precision", precision, True, f'"{positive}" answers that are right / "{positive}" answers'),
        Metric("recall", recall, True, f'"{positive}" items answered "{positive}" / "{positive}" items'),
        Metric("f1", f1, True, "harmonic mean of precision and recall"),
        Metric(f"{positive}_ratio", positive_ratio, None, f'share of "{positive}" answers (bias check)'),
    )
