"""Hallucination metrics for scene-world answers.

Object hallucination is CHAIR, computed by the evaluation engine
(:func:`rlhfv.eval.chair.score_chair`) with a scene-world synonym table (each class and
its plural): ``chair_s_mentioned`` (answers with a hallucinated object / answers that
mention any object), ``chair_i`` (hallucinated mentions / mentions) and ``recall``
(ground-truth objects mentioned / ground-truth objects).

Attribute, count and position errors come from the exact parser
(:func:`rlhfv.scenes.language.claims_of`): over the grammatical claims about objects that
*are* in the scene,

    attribute_error = #{claims with the wrong colour} / #{claims about present objects}

and likewise ``count_error`` and ``position_error``. ``mean_words`` is the mean answer
length in words (hallucination must not fall only because answers got shorter).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from rlhfv.eval.chair import score_chair
from rlhfv.eval.objects import ObjectExtractor, SynonymTable
from rlhfv.scenes.language import claims_of
from rlhfv.scenes.world import OBJECT_CLASSES, Scene, partner_of

# the keys of one results row (besides "model"), lower is better except recall/mean_words
METRIC_KEYS: tuple[str, ...] = (
    "chair_s_mentioned",
    "chair_i",
    "recall",
    "attribute_error",
    "count_error",
    "position_error",
    "mean_words",
)
HIGHER_IS_BETTER: dict[str, bool] = {
    "chair_s_mentioned": False,
    "chair_i": False,
    "recall": True,
    "attribute_error": False,
    "count_error": False,
    "position_error": False,
    "mean_words": True,
}


@lru_cache(maxsize=1)
def scene_extractor() -> ObjectExtractor:
    """The CHAIR object extractor over the scene world's classes (singular and plural)."""
    return ObjectExtractor(SynonymTable.from_dict({s: [p] for s, p in OBJECT_CLASSES.items()}))


@dataclass(frozen=True)
class AttributeCounts:
    """Parsed claims about present objects and how many got each attribute wrong."""

    checked: int = 0
    colour_wrong: int = 0
    count_wrong: int = 0
    position_wrong: int = 0

    def __add__(self, other: AttributeCounts) -> AttributeCounts:
        return AttributeCounts(
            self.checked + other.checked,
            self.colour_wrong + other.colour_wrong,
            self.count_wrong + other.count_wrong,
            self.position_wrong + other.position_wrong,
        )


def attribute_counts(answer: str, scene: Scene) -> AttributeCounts:
    """Counts over ``answer``'s grammatical claims about objects present in ``scene``."""
    total = AttributeCounts()
    for claim in claims_of(answer):
        truth = scene.get(claim.cls)
        if truth is None or claim.template is None:
            continue
        total += AttributeCounts(
            1,
            int(claim.colour != truth.colour),
            int(claim.count != truth.count),
            int(claim.position != truth.position),
        )
    return total


def _ratio(a: int, b: int) -> float:
    return a / b if b else math.nan


def hallucinated_spans(answer: str, scene: Scene) -> list[tuple[int, int, str]]:
    """``(start, end, class)`` of each object mention in ``answer`` that is not in ``scene``."""
    return [(m.start, m.end, m.cls) for m in scene_extractor().mentions(answer) if m.cls not in scene.classes]


def score_answers(answers: Sequence[str], scenes: Sequence[Scene]) -> dict[str, float]:
    """All of ``METRIC_KEYS`` for ``answers[i]`` about ``scenes[i]``."""
    if len(answers) != len(scenes):
        raise ValueError(f"{len(answers)} answers but {len(scenes)} scenes")
    gt = {str(i): frozenset(s.classes) for i, s in enumerate(scenes)}
    chair = score_chair(((str(i), a) for i, a in enumerate(answers)), gt, scene_extractor())
    counts = sum((attribute_counts(a, s) for a, s in zip(answers, scenes, strict=True)), AttributeCounts())
    return {
        "chair_s_mentioned": chair.metrics["chair_s_mentioned"],
        "chair_i": chair.metrics["chair_i"],
        "recall": chair.metrics["recall"],
        "attribute_error": _ratio(counts.colour_wrong, counts.checked),
        "count_error": _ratio(counts.count_wrong, counts.checked),
        "position_error": _ratio(counts.position_wrong, counts.checked),
        "mean_words": sum(len(a.split()) for a in answers) / len(answers) if answers else math.nan,
    }


def hallucination_kinds(answers: Sequence[str], scenes: Sequence[Scene]) -> dict[str, int]:
    """Where the hallucinated objects come from, counted over ``answers[i]`` about ``scenes[i]``.

    ``hallucinated``: distinct absent classes named per answer, summed; of those ``partner``:
    the usual partner of a present object (the co-occurrence bias); ``last_claim``: named in
    the answer's last object claim; ``colour_of_missed``: claimed in the colour of a present
    object the answer does not name (an object seen but misnamed). ``same_count_answers``:
    answers with exactly one object claim per scene object; a hallucination there took a
    present object's place (a misperception) rather than being added to the description.
    """
    if len(answers) != len(scenes):
        raise ValueError(f"{len(answers)} answers but {len(scenes)} scenes")
    kinds = dict.fromkeys(
        ("answers", "same_count_answers", "hallucinated", "partner", "last_claim", "colour_of_missed"), 0
    )
    kinds["answers"] = len(answers)
    for answer, scene in zip(answers, scenes, strict=True):
        claims = claims_of(answer)
        kinds["same_count_answers"] += len(claims) == len(scene.objects)
        named = {c.cls for c in claims}
        missed_colours = {o.colour for o in scene.objects if o.cls not in named}
        for cls in {cls for _, _, cls in hallucinated_spans(answer, scene)}:
            kinds["hallucinated"] += 1
            kinds["partner"] += partner_of(cls) in scene.classes
            kinds["last_claim"] += bool(claims) and claims[-1].cls == cls
            colour = next((c.colour for c in claims if c.cls == cls), None)  # as first claimed
            kinds["colour_of_missed"] += colour in missed_colours
    return kinds
