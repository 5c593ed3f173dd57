"""CHAIR (Rohrbach et al. 2018) as used by Object HalBench.

Per response: the COCO classes it mentions (repeats kept, in text order), the image's
ground-truth classes (instance categories united with the classes named in its reference
captions) and the hallucinated mentions (mentioned classes not in the ground truth).

Aggregates over N responses (``h_r`` = hallucinated mentions of response r, ``m_r`` =
its mentions, ``g_r`` = its ground-truth classes):

- ``chair_s``           = #{r : |h_r| > 0} / N
- ``chair_s_mentioned`` = #{r : |h_r| > 0} / #{r : |m_r| > 0}      (the paper's "Resp.")
- ``chair_i``           = sum |h_r| / sum |m_r|                     (the paper's "Mention")
- ``recall``            = sum |set(m_r) & g_r| / sum |g_r|

Undefined ratios (nothing mentioned at all) are NaN, serialised as null.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from tqdm import tqdm

from rlhfv.errors import InputError
from rlhfv.eval.metrics import Metric, compute_metrics, json_safe, ratio
from rlhfv.eval.objects import ObjectExtractor
from rlhfv.eval.problems import Problems, coco_records, coco_value, iter_image_rows, list_field, read_json

GroundTruth = dict[str, frozenset[str]]

_COCO_ID = re.compile(r"^(?:coco_[a-z]+\d*_)?0*(\d+)$", re.IGNORECASE)


def normalize_image_id(value: Any) -> str:
    """One spelling per image: COCO ids lose zero padding, prefixes and extensions.

    >>> [normalize_image_id(v) for v in (296284, "000000296284", "COCO_val2014_000000296284.jpg")]
    ['296284', '296284', '296284']
    >>> normalize_image_id("df62a56fdc1bb12b")
    'df62a56fdc1bb12b'
    """
    text = Path(str(value).strip()).name
    stem = text.rsplit(".", 1)[0] if re.search(r"\.(jpe?g|png|webp|bmp|gif)$", text, re.I) else text
    match = _COCO_ID.match(stem)
    return match.group(1) if match else stem


@dataclass(frozen=True)
class ChairRecord:
    """One scored response."""

    image_id: str
    mentioned: tuple[str, ...]
    ground_truth: frozenset[str]
    response: str = ""
    # position of the response among those given to score_chair (some may be skipped), so
    # a caller can find its question; several questions may ask about one image
    index: int | None = field(default=None, compare=False)

    @cached_property  # read by several metrics
    def hallucinated(self) -> tuple[str, ...]:
        return tuple(c for c in self.mentioned if c not in self.ground_truth)

    @property
    def covered(self) -> frozenset[str]:
        return frozenset(self.mentioned) & self.ground_truth


def chair_s(records: Sequence[ChairRecord]) -> float:
    return ratio(sum(1 for r in records if r.hallucinated), len(records))


def chair_s_mentioned(records: Sequence[ChairRecord]) -> float:
    return ratio(sum(1 for r in records if r.hallucinated), sum(1 for r in records if r.mentioned))


def chair_i(records: Sequence[ChairRecord]) -> float:
    return ratio(sum(len(r.hallucinated) for r in records), sum(len(r.mentioned) for r in records))


def object_recall(records: Sequence[ChairRecord]) -> float:
    return ratio(sum(len(r.covered) for r in records), sum(len(r.ground_truth) for r in records))


CHAIR_METRICS: tuple[Metric[ChairRecord], ...] = (
    Metric("chair_s", chair_s, False, "responses with a hallucinated object / responses"),
    Metric("chair_s_mentioned", chair_s_mentioned, False, "... / responses mentioning any object (Resp.)"),
    Metric("chair_i", chair_i, False, "hallucinated mentions / mentions (Mention)"),
    Metric("recall", object_recall, True, "ground-truth objects mentioned / ground-truth objects"),
)


@dataclass
class ChairResult:
    """Aggregates, per-response records and the problems met on the way."""

    metrics: dict[str, float]
    n_responses: int
    n_mentions: int
    records: list[ChairRecord] = field(repr=False)
    problems: dict[str, dict[str, Any]] = field(default_factory=dict)
    # responses left out because the LLM extraction call failed (endpoint_error/_unreachable)
    n_judge_failed: int = 0

    def summary(self) -> dict[str, Any]:
        """The JSON the CLI prints: aggregates, counts and problems (NaN -> null)."""
        return json_safe(
            {**self.metrics, "n_responses": self.n_responses, "n_mentions": self.n_mentions}
            | ({"problems": self.problems} if self.problems else {})
        )

    def per_response(self) -> list[dict[str, Any]]:
        return [
            {
                "image_id": r.image_id,
                "mentioned": list(r.mentioned),
                "ground_truth": sorted(r.ground_truth),
                "hallucinated": list(r.hallucinated),
            }
            for r in self.records
        ]


def score_chair(
    responses: Iterable[tuple[Any, Any]],
    ground_truth: GroundTruth,
    extractor: ObjectExtractor,
    *,
    mentions: Callable[[str], list[str] | None] | None = None,
    problems: Problems | None = None,
    where: Callable[[int], str] = lambda i: f"response {i}",
    progress: bool = False,
) -> ChairResult:
    """Score (image_id, response) pairs against ground truth.

    ``mentions`` turns a response into canonical classes (default: the rule-based
    ``extractor.objects``; the LLM step passes its own, returning None for a response it
    could not extract, already counted in ``problems`` and in ``n_judge_failed``). A
    response that is not a string or whose image has no ground truth is counted in
    ``problems`` and left out.
    """
    problems = problems if problems is not None else Problems()
    mentions = mentions or extractor.objects
    records: list[ChairRecord] = []
    n_failed = 0
    items = tqdm(responses, desc="CHAIR", unit="resp", disable=not progress)
    for i, (image_id, response) in enumerate(items):
        if not isinstance(response, str):
            problems.add("response_not_string", f"{where(i)}: response is {type(response).__name__}")
            continue
        key = normalize_image_id(image_id)
        gt = ground_truth.get(key)
        if gt is None:
            problems.add("unknown_image_id", f"{where(i)}: no ground truth for image id {image_id!r}")
            continue
        found = mentions(response)
        if found is None:
            n_failed += 1
            continue
        records.append(ChairRecord(key, tuple(found), gt, response, index=i))
    return ChairResult(
        metrics=compute_metrics(CHAIR_METRICS, records),
        n_responses=len(records),
        n_mentions=sum(len(r.mentioned) for r in records),
        records=records,
        problems=problems.as_dict(),
        n_judge_failed=n_failed,
    )


# ---------------------------------------------------------------- ground truth


def _add(gt: dict[str, set[str]], image_id: Any, classes: Iterable[str]) -> None:
    gt.setdefault(normalize_image_id(image_id), set()).update(classes)


def _category(extractor: ObjectExtractor, name: str, path: str) -> str:
    cls = extractor.table.canonical(name)
    if cls is None:
        raise InputError(f"category {name!r} is not in the synonym table", path=path, reason="bad_category")
    return cls


def load_ground_truth(paths: Sequence[str | Path], extractor: ObjectExtractor) -> GroundTruth:
    """Ground-truth classes per image from any mix of:

    - JSONL, one image per line: ``id`` or ``image_id``, optional ``captions`` (list of
      str), optional ``instances`` (list of ``{"category": name}``) or ``objects`` (names);
    - a COCO instances file (``images``, ``annotations`` with ``category_id``, ``categories``);
    - a COCO captions file (``annotations`` with ``image_id`` and ``caption``).

    Instance categories are mapped to canonical classes; captions go through the extractor.
    """
    gt: dict[str, set[str]] = {}
    for path in paths:
        path = str(path)
        if path.endswith(".jsonl"):
            for row, image_id, obj in iter_image_rows(path):
                classes = set()
                for i, cap in enumerate(list_field(obj, "captions", path, row)):
                    classes.update(extractor.objects(_caption(cap, path, f"captions[{i}]", row)))
                for key in ("instances", "objects"):
                    for name in instance_names(obj, key, path, row):
                        classes.add(_category(extractor, name, path))
                _add(gt, image_id, classes)
            continue
        data = read_json(path)
        if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
            raise InputError("expected a COCO annotation file with 'annotations'", path=path)
        for where, image in coco_records(data, "images", path):
            _add(gt, coco_value(image, "id", where, path), ())
        if "categories" in data:
            names = {
                coco_value(c, "id", where, path): _category(
                    extractor, str(coco_value(c, "name", where, path)), path
                )
                for where, c in coco_records(data, "categories", path)
            }
            for where, ann in coco_records(data, "annotations", path):
                _add(gt, coco_value(ann, "image_id", where, path), [coco_category(names, ann, where, path)])
        else:
            for where, ann in coco_records(data, "annotations", path):
                if "caption" not in ann:
                    raise InputError("annotation has neither category_id nor caption", path=path, field=where)
                caption = _caption(coco_value(ann, "caption", where, path), path, f"{where}.caption")
                _add(gt, coco_value(ann, "image_id", where, path), extractor.objects(caption))
    return {k: frozenset(v) for k, v in gt.items()}


def _caption(value: Any, path: str, field: str, row: int | None = None) -> str:
    if not isinstance(value, str):
        raise InputError(
            f"caption is {type(value).__name__}, not a string",
            path=path,
            row=row,
            field=field,
            reason="bad_annotation",
        )
    return value


def instance_names(obj: dict[str, Any], key: str, path: str, row: int) -> list[str]:
    """Category names of a JSONL row's ``instances``/``objects``: names or ``{"category": name}``."""
    names = []
    for i, inst in enumerate(list_field(obj, key, path, row)):
        name = inst.get("category") if isinstance(inst, dict) else inst
        if not isinstance(name, str):
            raise InputError(
                'expected a category name or {"category": name}',
                path=path,
                row=row,
                field=f"{key}[{i}]",
                reason="bad_annotation",
            )
        names.append(name)
    return names


def coco_category(names: dict[Any, str], ann: dict[str, Any], where: str, path: str) -> str:
    """The class of a COCO annotation's ``category_id``, which ``categories`` must declare."""
    category_id = coco_value(ann, "category_id", where, path)
    if category_id not in names:
        raise InputError(
            f"category id {category_id!r} is not declared in 'categories'",
            path=path,
            field=f"{where}.category_id",
            reason="bad_category",
        )
    return names[category_id]
