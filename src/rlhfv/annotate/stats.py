"""Annotation statistics: categories, segments per answer, throughput, agreement.

Agreement is measured on double-annotated tasks (two current corrections of the same
answer, annotators A = slot 0 and B = slot 1):

- ``hallucination_kappa``: Cohen's kappa of the binary label "the answer needed a
  correction", ``kappa = (p_o - p_e) / (1 - p_e)`` with ``p_e = pA1 pB1 + pA0 pB0``;
- ``span_f1``: mean over pairs of the F1 of the changed places of the original answer.
  Places live on a grid with a point for each character ``i`` (``2i + 1``) and each gap
  before character ``i`` (``2i``): a replaced or deleted span ``[s, e)`` covers
  ``2s+1 .. 2e-1``, an insertion at ``p`` covers ``2p``. Two empty sets agree (F1 = 1);
- ``category_agreement``: share of overlapping (A segment, B segment) pairs with the
  same category;
- ``exact_match``: share of pairs with identical corrected answers.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict

from rlhfv.annotate.service import CurrentCorrection
from rlhfv.data.schema import CHANGE_CATEGORIES


def changed_places(segments: list[dict]) -> set[int]:
    """The grid points of the original answer that ``segments`` change (see module doc)."""
    places: set[int] = set()
    for seg in segments:
        s, e = seg["original_start"], seg["original_end"]
        if s == e:
            places.add(2 * s)
        else:
            places.update(range(2 * s + 1, 2 * e))
    return places


def f1(a: set[int], b: set[int]) -> float:
    if not a and not b:
        return 1.0
    return 2 * len(a & b) / (len(a) + len(b))


def cohen_kappa(labels_a: list[bool], labels_b: list[bool]) -> float | None:
    """Cohen's kappa of two raters' binary labels; None when chance agreement is 1."""
    n = len(labels_a)
    if n == 0:
        return None
    p_o = sum(x == y for x, y in zip(labels_a, labels_b, strict=True)) / n
    pa1, pb1 = sum(labels_a) / n, sum(labels_b) / n
    p_e = pa1 * pb1 + (1 - pa1) * (1 - pb1)
    if p_e == 1.0:
        return None
    return (p_o - p_e) / (1 - p_e)


def agreement(current: list[CurrentCorrection]) -> dict:
    by_task: dict[int, dict[int, CurrentCorrection]] = defaultdict(dict)
    for c in current:
        if c.n_annotations > 1:
            by_task[c.task_id][c.slot] = c
    pairs = [(slots[0], slots[1]) for slots in by_task.values() if 0 in slots and 1 in slots]
    span_f1s, same_cat, overlapping = [], 0, 0
    for a, b in pairs:
        span_f1s.append(f1(changed_places(a.segments), changed_places(b.segments)))
        for sa in a.segments:
            for sb in b.segments:
                if changed_places([sa]) & changed_places([sb]):
                    overlapping += 1
                    same_cat += sa["category"] == sb["category"]
    return {
        "pairs": len(pairs),
        "hallucination_kappa": cohen_kappa(
            [not a.is_correct for a, _ in pairs], [not b.is_correct for _, b in pairs]
        ),
        "span_f1": statistics.fmean(span_f1s) if span_f1s else None,
        "category_agreement": same_cat / overlapping if overlapping else None,
        "exact_match": sum(a.corrected == b.corrected for a, b in pairs) / len(pairs) if pairs else None,
    }


def annotation_stats(current: list[CurrentCorrection], tasks: dict[str, int] | None = None) -> dict:
    """All statistics of the current corrections as one JSON-able dict; ``tasks``: the
    progress counts of :func:`rlhfv.annotate.service.task_progress`, reported as given."""
    categories = Counter({c: 0 for c in CHANGE_CATEGORIES})
    for c in current:
        categories.update(seg["category"] or "unlabelled" for seg in c.segments)
    n_segments = [len(c.segments) for c in current]
    per_annotator: dict[str, dict] = {}
    for name in sorted({c.annotator for c in current}):
        mine = [c for c in current if c.annotator == name]
        durations = [c.submitted_at - c.started_at for c in mine if c.started_at is not None]
        first = min((c.started_at if c.started_at is not None else c.submitted_at) for c in mine)
        hours = (max(c.submitted_at for c in mine) - first) / 3600
        per_annotator[name] = {
            "submitted": len(mine),
            "segments": sum(len(c.segments) for c in mine),
            "median_seconds_per_task": statistics.median(durations) if durations else None,
            "tasks_per_hour": len(mine) / hours if hours > 0 else None,
        }
    corrected = [n for c, n in zip(current, n_segments, strict=True) if not c.is_correct]
    return {
        "tasks": tasks,
        "answers": len(current),
        "marked_correct": sum(c.is_correct for c in current),
        "segments": sum(n_segments),
        "categories": dict(categories),
        "segments_per_corrected_answer": statistics.fmean(corrected) if corrected else None,
        "segments_per_answer_histogram": {str(k): v for k, v in sorted(Counter(n_segments).items())},
        "per_annotator": per_annotator,
        "agreement": agreement(current),
    }


def format_stats(stats: dict) -> str:
    """The statistics as a short plain-text report."""
    total = max(stats["segments"], 1)
    lines = []
    if stats.get("tasks"):
        t = stats["tasks"]
        lines.append(
            f"tasks: {t['imported']} imported, {t['completed']} completed, "
            f"{t['in_progress']} in progress, {t['open']} open"
        )
    lines += [
        f"answers: {stats['answers']} ({stats['marked_correct']} marked correct), segments: {stats['segments']}",
        "segments per category:",
        *(f"  {cat:<10} {n:>6}  {100 * n / total:5.1f}%" for cat, n in stats["categories"].items()),
        f"segments per corrected answer: {_num(stats['segments_per_corrected_answer'])}",
        "per annotator: submitted, segments, median s/task, tasks/hour",
        *(
            f"  {name:<16} {a['submitted']:>6} {a['segments']:>6} {_num(a['median_seconds_per_task']):>8}"
            f" {_num(a['tasks_per_hour']):>8}"
            for name, a in stats["per_annotator"].items()
        ),
    ]
    ag = stats["agreement"]
    lines.append(
        f"agreement on {ag['pairs']} double-annotated tasks: kappa {_num(ag['hallucination_kappa'])}, "
        f"span F1 {_num(ag['span_f1'])}, category {_num(ag['category_agreement'])}, "
        f"exact {_num(ag['exact_match'])}"
    )
    return "\n".join(lines)


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"
