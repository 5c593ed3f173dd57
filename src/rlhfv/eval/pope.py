"""POPE (Li et al. 2023): "Is there a <object> in the image?" yes/no probing.

Question sets are built from instance annotations with a seed. For each sampled image,
``per_image`` ground-truth objects give "yes" questions and as many absent objects give
"no" questions, chosen by the split:

- ``random``: uniformly among the classes absent from the image;
- ``popular``: the absent classes present in the most images of the annotation set;
- ``adversarial``: the absent classes that co-occur most often with the image's objects.

Scores use "yes" as the positive class: accuracy, precision, recall, F1 and the yes-ratio.
Free-form answers are parsed to yes/no; an answer that says neither is counted
(``unparsed_answer``) and left out of the metrics rather than guessed.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

from rlhfv.errors import InputError
from rlhfv.eval.chair import coco_category, instance_names, normalize_image_id
from rlhfv.eval.metrics import BinaryRecord, Metric, binary_metrics, compute_metrics, json_safe
from rlhfv.eval.objects import SynonymTable
from rlhfv.eval.problems import Problems, coco_records, coco_value, iter_image_rows, iter_jsonl, read_json

SPLITS = ("random", "popular", "adversarial")
POPE_METRICS: tuple[Metric[BinaryRecord], ...] = binary_metrics("yes")


@dataclass(frozen=True)
class ImageObjects:
    image_id: str
    image: str  # file name
    objects: frozenset[str]


@dataclass(frozen=True)
class PopeQuestion:
    question_id: int
    image_id: str
    image: str
    text: str
    label: str  # "yes" | "no"
    object: str
    split: str
    row: int | None = field(default=None, compare=False, repr=False)  # in the question file


def load_object_annotations(
    paths: Sequence[str | Path], *, synonyms: str | Path | None = None
) -> dict[str, ImageObjects]:
    """Instance categories per image from JSONL (``id``, ``image``, ``instances``) or a
    COCO instances file (``images`` with ``file_name``, ``annotations``, ``categories``)."""
    table = SynonymTable.coco() if synonyms is None else SynonymTable.from_file(synonyms)

    def canonical(name: str, path: str) -> str:
        cls = table.canonical(name)
        if cls is None:
            raise InputError(f"category {name!r} is not in the synonym table", path=path)
        return cls

    out: dict[str, tuple[str, set[str]]] = {}
    for path in map(str, paths):
        if path.endswith(".jsonl"):
            for row, image_id, obj in iter_image_rows(path):
                key = normalize_image_id(image_id)
                entry = out.setdefault(key, (str(obj.get("image", f"{image_id}.jpg")), set()))
                entry[1].update(canonical(n, path) for n in instance_names(obj, "instances", path, row))
            continue
        data = read_json(path)
        if not isinstance(data, dict) or "categories" not in data or "annotations" not in data:
            raise InputError("expected a COCO instances file (images, annotations, categories)", path=path)
        names = {
            coco_value(c, "id", where, path): canonical(str(coco_value(c, "name", where, path)), path)
            for where, c in coco_records(data, "categories", path)
        }
        for where, image in coco_records(data, "images", path):
            image_id = coco_value(image, "id", where, path)
            out.setdefault(
                normalize_image_id(image_id), (str(image.get("file_name", f"{image_id}.jpg")), set())
            )
        for where, ann in coco_records(data, "annotations", path):
            image_id = coco_value(ann, "image_id", where, path)
            cls = coco_category(names, ann, where, path)
            out.setdefault(normalize_image_id(image_id), (f"{image_id}.jpg", set()))[1].add(cls)
    return {k: ImageObjects(k, f, frozenset(objs)) for k, (f, objs) in out.items()}


class NegativeSampler:
    """Absent classes for an image, in the order a split picks them.

    The class list, image counts and co-occurrence table are built once per annotation set
    (rebuilding them per image made an adversarial build over COCO take minutes)."""

    def __init__(self, annotations: dict[str, ImageObjects]) -> None:
        self.classes = sorted({c for a in annotations.values() for c in a.objects})
        self.counts = Counter(c for a in annotations.values() for c in a.objects)
        self.pairs: dict[str, Counter[str]] = {c: Counter() for c in self.classes}
        for a in annotations.values():
            for x, y in combinations(a.objects, 2):
                self.pairs[x][y] += 1
                self.pairs[y][x] += 1

    def candidates(self, split: str, image_objects: frozenset[str], rng: random.Random) -> list[str]:
        absent = [c for c in self.classes if c not in image_objects]
        if split == "random":
            rng.shuffle(absent)
            return absent
        if split == "popular":
            return sorted(absent, key=lambda c: (-self.counts[c], c))
        if split == "adversarial":
            score = {c: sum(self.pairs[c][o] for o in image_objects) for c in absent}
            return sorted(absent, key=lambda c: (-score[c], c))
        raise InputError(f"unknown POPE split {split!r}; choose from {SPLITS}")


def eligible_images(annotations: dict[str, ImageObjects], per_image: int) -> list[str]:
    """The ids of the images with ``per_image`` or more objects, sorted: the images sampled from."""
    return sorted(k for k, a in annotations.items() if len(a.objects) >= per_image)


def build_pope_questions(
    annotations: dict[str, ImageObjects],
    split: str,
    *,
    n_images: int = 500,
    per_image: int = 3,
    seed: int = 0,
    first_id: int = 0,
    sampler: NegativeSampler | None = None,
) -> list[PopeQuestion]:
    """Balanced yes/no questions for ``n_images`` images with >= ``per_image`` objects
    (all of them when there are fewer: the CLI warns).

    As in POPE, the splits of one seed share the images and the "yes" questions; only the
    "no" questions differ. ``sampler``: one built for ``annotations``, to share between splits."""
    if split not in SPLITS:
        raise InputError(f"unknown POPE split {split!r}; choose from {SPLITS}")
    # images and positives from a generator seeded without the split, negatives from one with it
    rng = random.Random(f"{seed}")
    negative_rng = random.Random(f"{seed}:{split}")
    sampler = sampler or NegativeSampler(annotations)
    eligible = eligible_images(annotations, per_image)
    if not eligible:
        raise InputError(f"no image has {per_image} or more annotated objects")
    chosen = rng.sample(eligible, min(n_images, len(eligible)))
    questions: list[PopeQuestion] = []
    for image_id in chosen:
        entry = annotations[image_id]
        positives = rng.sample(sorted(entry.objects), per_image)
        negatives = sampler.candidates(split, entry.objects, negative_rng)[:per_image]
        for pos, neg in zip(positives, negatives + [None] * (per_image - len(negatives)), strict=True):
            for obj, label in ((pos, "yes"), (neg, "no")):
                if obj is None:
                    continue
                questions.append(
                    PopeQuestion(
                        first_id + len(questions),
                        image_id,
                        entry.image,
                        f"Is there {_article(obj)} {obj} in the image?",
                        label,
                        obj,
                        split,
                    )
                )
    return questions


def _article(noun: str) -> str:
    return "an" if noun[0] in "aeiou" else "a"


def write_questions(questions: Sequence[PopeQuestion], path: str | Path) -> None:
    # ids unique across the splits written together
    with open(path, "w", encoding="utf-8") as f:
        for i, q in enumerate(questions):
            row = {k: v for k, v in asdict(q).items() if k != "row"}
            f.write(json.dumps(row | {"question_id": i}) + "\n")


def integer_id(raw: Any) -> int | None:
    """``raw`` as an integer id (an int, or a string holding one), or None: ``int()`` alone
    would also take 1.5 and True as ids.

    >>> [integer_id(v) for v in (3, "3", 1.5, True, None, "q3")]
    [3, 3, None, None, None, None]
    """
    if raw is None or isinstance(raw, (bool, float)):
        return None
    try:
        return int(raw)
    except (TypeError, ValueError):
        return None


def read_questions(path: str | Path) -> list[PopeQuestion]:
    """Questions from JSONL as :func:`write_questions` writes them. A question_id that is no
    integer (``"3"`` is one) or repeats, a label other than yes/no (any case), or the split
    name ``all`` (the overall scores) is an InputError naming the row and field."""
    problems = Problems()
    out = []
    rows: dict[int, int] = {}  # question_id -> row
    for row, obj in iter_jsonl(path, problems):
        try:
            fields = {k: obj[k] for k in PopeQuestion.__dataclass_fields__ if k != "row"}
        except KeyError as err:
            raise InputError(f"missing {err.args[0]!r}", path=str(path), row=row, field=err.args[0]) from err

        def bad(message: str, name: str, row: int = row) -> InputError:
            return InputError(message, path=str(path), row=row, field=name, reason="bad_question")

        qid = integer_id(fields["question_id"])
        if qid is None:
            raise bad(f"not an integer: {fields['question_id']!r}", "question_id")
        if qid in rows:
            raise bad(f"question_id {qid} repeats row {rows[qid]}; ids must be unique", "question_id")
        rows[qid] = row
        label = fields["label"]
        label = label.strip().lower() if isinstance(label, str) else label
        if label not in ("yes", "no"):
            raise bad(f"expected 'yes' or 'no', got {fields['label']!r}", "label")
        split = fields["split"]
        if not isinstance(split, str) or not split.strip() or split == "all":
            raise bad(f"expected a split name other than 'all', got {split!r}", "split")
        out.append(PopeQuestion(**fields | {"question_id": qid, "label": label}, row=row))
    problems.raise_first(path)
    return out


@dataclass
class PopeAnswers:
    """question_id -> answer, where each came from (``"file: row N"``), and the rows rejected."""

    answers: dict[int, Any]
    rows: dict[int, str]
    problems: Problems


def read_answers(path: str | Path) -> PopeAnswers:
    """Answers from JSONL with ``question_id`` and ``answer`` (or ``text``/``response``).

    Rows that are no JSON object, lack ``question_id`` or have one that is no integer are
    counted (``invalid_json``, ``missing_field``, ``unknown_id``), as ``eval chair`` does;
    a repeated question_id keeps the first answer (``duplicate_id``)."""
    out = PopeAnswers({}, {}, Problems())
    for row, obj in iter_jsonl(path, out.problems):
        where = f"{path}: row {row}"
        if "question_id" not in obj:
            out.problems.add("missing_field", f"{where}: no 'question_id'")
            continue
        raw = obj["question_id"]
        qid = integer_id(raw)
        if qid is None:
            out.problems.add("unknown_id", f"{where}: question_id {raw!r} is not an integer")
            continue
        if qid in out.answers:
            out.problems.add(
                "duplicate_id", f"{where}: question_id {qid} already answered on {out.rows[qid]}"
            )
            continue
        out.answers[qid] = obj.get("answer", obj.get("text", obj.get("response")))
        out.rows[qid] = where
    return out


_YES = {"yes", "yeah", "yep", "correct", "true", "indeed"}
# "cannot" is "can't" spelled as one word ("I cannot see a dog")
_NO = {"no", "nope", "not", "false", "none", "nothing", "neither", "nobody", "cannot"}
_WORDS = re.compile(r"[a-z]+(?:'[a-z]+)?")
# typographic apostrophes, as models often write them ("There isn’t a dog.")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\uff07": "'"})
_AFFIRM = re.compile(r"\bthere(?: is|'s| are|'re)\b|\bi (?:can )?see\b")


def parse_yes_no(text: str) -> str | None:
    """ "yes", "no" or None from a free-form answer, judged on its first sentence.

    A leading yes/no word decides; otherwise any negation ("not", "no", "isn't", "cannot"
    ...) means "no"; otherwise "there is/there's/I see" means "yes". Where this differs from
    LLaVA's eval_pope.py (which reads only No/not/no as negative): docs/evaluation.md.

    >>> [parse_yes_no(t) for t in ("Yes, there is.", "No.", "There isn’t a dog.", "There's a dog.", "A dog?")]
    ['yes', 'no', 'no', 'yes', None]
    """
    first = re.split(r"[.!?\n]", text.strip().lower().translate(_APOSTROPHES), maxsplit=1)[0]
    words = _WORDS.findall(first)
    if not words:
        return None
    if words[0] in _YES:
        return "yes"
    if words[0] in _NO:
        return "no"
    if any(w in _NO or w.endswith("n't") for w in words):
        return "no"
    if "yes" in words or _AFFIRM.search(" ".join(words)):
        return "yes"
    return None


@dataclass
class PopeResult:
    """Metrics per split (and ``all``), counts and problems."""

    metrics: dict[str, dict[str, float]]
    n_scored: dict[str, int]
    problems: dict[str, dict[str, Any]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        flat: dict[str, Any] = {}
        for split, values in self.metrics.items():
            for name, value in values.items():
                flat[f"{split}/{name}"] = value
            flat[f"{split}/n"] = self.n_scored[split]
        return json_safe(flat | ({"problems": self.problems} if self.problems else {}))


def score_pope(
    questions: Sequence[PopeQuestion],
    answers: dict[int, Any],
    *,
    problems: Problems | None = None,
    where: Callable[[int], str | None] | None = None,
) -> PopeResult:
    """Parse each answer and score per split; missing/non-text/unparsed answers counted,
    and so are answers to question ids that are not in ``questions`` (``unknown_id``).

    ``problems``: rows already rejected while reading (:func:`read_answers`); ``where``:
    question_id -> where its answer came from, for messages."""
    problems = problems if problems is not None else Problems()
    known = {q.question_id for q in questions}
    for qid in answers:
        if qid not in known:
            shown = (where(qid) if where else None) or "answers"
            problems.add("unknown_id", f"{shown}: question_id {qid} is not in the questions")
    by_split: dict[str, list[BinaryRecord]] = {}
    for q in questions:
        answer = answers.get(q.question_id)
        if answer is None:
            problems.add("missing_answer", f"question {q.question_id}: no answer")
            continue
        if not isinstance(answer, str):
            problems.add(
                "response_not_string", f"question {q.question_id}: answer is {type(answer).__name__}"
            )
            continue
        prediction = parse_yes_no(answer)
        if prediction is None:
            problems.add("unparsed_answer", f"question {q.question_id}: {answer[:60]!r}")
            continue
        record = BinaryRecord(q.label, prediction)
        by_split.setdefault(q.split, []).append(record)
        by_split.setdefault("all", []).append(record)
    if not by_split:
        raise InputError("no answer could be scored: " + "; ".join(problems.lines() or ["no questions"]))
    # splits of other question sets (such as "val") are scored too, after POPE's three
    others = sorted(s for s in by_split if s not in SPLITS and s != "all")
    order = [s for s in SPLITS if s in by_split] + others + ["all"]
    return PopeResult(
        metrics={s: compute_metrics(POPE_METRICS, by_split[s]) for s in order},
        n_scored={s: len(by_split[s]) for s in order},
        problems=problems.as_dict(),
    )


def answer_pope(
    questions: Sequence[PopeQuestion],
    model: str,
    image_dir: str | Path,
    generation: dict[str, Any],
    batch_size: int = 8,
    device: str | None = None,
    dtype: str = "auto",
    *,
    questions_path: str | None = None,
    save_to: str | Path | None = None,
) -> dict[int, str]:
    """Generate an answer to every question with a HF vision-language model; with
    ``save_to``, saved there batch by batch and resumed from it
    (:func:`rlhfv.eval.generate.answer_with_model`)."""
    from rlhfv.eval.generate import answer_with_model, check_images

    images = [Path(image_dir) / q.image for q in questions]
    where = [f"row {q.row}" if q.row is not None else f"question_id {q.question_id}" for q in questions]
    check_images(list(zip(where, images, strict=True)), questions_path)  # before the model is loaded
    texts = [f"{q.text} Answer yes or no." for q in questions]
    rows = [{"question_id": q.question_id, "image": q.image, "question": q.text} for q in questions]
    answers = answer_with_model(
        model,
        list(map(str, images)),
        texts,
        generation,
        batch_size,
        device,
        dtype,
        save_to=save_to,
        rows=rows,
    )
    return {q.question_id: a for q, a in zip(questions, answers, strict=True)}
