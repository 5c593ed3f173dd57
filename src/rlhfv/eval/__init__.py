"""Hallucination evaluation: object mentions + CHAIR, Object HalBench, POPE, AMBER, MMHal-Bench.

Python API (each scorer returns a dataclass with ``metrics``, counts, ``problems`` and
``summary()``):

>>> from rlhfv.eval import coco_extractor, score_chair
>>> result = score_chair([("1", "A dog and a cat.")], {"1": frozenset({"dog"})}, coco_extractor())
>>> result.metrics["chair_i"], result.records[0].hallucinated
(0.5, ('cat',))

- :mod:`rlhfv.eval.objects`: ``SynonymTable``, ``ObjectExtractor``, ``coco_extractor``
- :mod:`rlhfv.eval.chair`: ``score_chair``, ``load_ground_truth``, ``CHAIR_METRICS``
- :mod:`rlhfv.eval.objhal`: ``run_object_halbench``, ``run_chair``
- :mod:`rlhfv.eval.generate`: ``generate_answers``, ``answer_with_model``, ``generation_settings``, ``load_model``
- :mod:`rlhfv.eval.pope`, :mod:`rlhfv.eval.amber`, :mod:`rlhfv.eval.mmhal`
- :mod:`rlhfv.eval.judge`: ``ChatClient`` (OpenAI-compatible, retries, disk cache)
"""

from rlhfv.eval.amber import AmberResult, load_amber, score_amber
from rlhfv.eval.chair import CHAIR_METRICS, ChairRecord, ChairResult, load_ground_truth, score_chair
from rlhfv.eval.judge import ChatClient, EndpointError, EndpointUnreachable
from rlhfv.eval.metrics import Metric
from rlhfv.eval.mmhal import MMHalResult, load_mmhal, score_mmhal
from rlhfv.eval.objects import ExtractionRules, Mention, ObjectExtractor, SynonymTable, coco_extractor
from rlhfv.eval.pope import PopeResult, build_pope_questions, parse_yes_no, score_pope
from rlhfv.eval.problems import Problems

__all__ = [
    "CHAIR_METRICS",
    "AmberResult",
    "ChairRecord",
    "ChairResult",
    "ChatClient",
    "EndpointError",
    "EndpointUnreachable",
    "ExtractionRules",
    "MMHalResult",
    "Mention",
    "Metric",
    "ObjectExtractor",
    "PopeResult",
    "Problems",
    "SynonymTable",
    "build_pope_questions",
    "coco_extractor",
    "load_amber",
    "load_ground_truth",
    "load_mmhal",
    "parse_yes_no",
    "score_amber",
    "score_chair",
    "score_mmhal",
    "score_pope",
]
