"""AMBER (Wang et al. 2023): generative and discriminative hallucination metrics.

Files, as published in the AMBER repository (give their paths; nothing is downloaded):

- ``annotations.json``: a list; each item has ``id`` (int) and ``type``. Generative items
  (``"type": "generative"``) have ``truth`` (objects in the image) and ``hallu`` (objects
  a model is likely to hallucinate there); discriminative items
  (``"discriminative-existence"``, ``"discriminative-attribute-state"``, ...,
  ``"discriminative-relation"``) have ``truth`` = ``"yes"`` or ``"no"``.
- ``relation.json``: object word -> list of associated words (synonyms, kinds) that count
  as naming it.
- ``safe_words.txt`` (optional): words never counted as hallucinations.
- the answers: a JSON list (or JSONL) of ``{"id": int, "response": str}``.
- the queries (``query_all.json`` ...; only for generation): ``id``, ``image``, ``query``.

Generative metrics over the object words of each response (words of the relation
vocabulary, singularised; AMBER keeps nouns via a POS tagger, here the vocabulary decides):

- ``chair`` = hallucinated object words / object words (a word naming no ``truth`` object);
- ``cover`` = ``truth`` objects named / ``truth`` objects;
- ``hal``   = responses with a hallucinated object word / responses;
- ``cog``   = ``hallu`` objects named / ``hallu`` objects.

AMBER's extra spaCy word-vector similarity check (a word similar to a truth object is
forgiven) is not applied, so ``chair`` and ``hal`` can be slightly higher than the
reference script's. Discriminative metrics use "no" as the positive class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhfv.errors import InputError
from rlhfv.eval.metrics import BinaryRecord, Metric, binary_metrics, compute_metrics, json_safe, ratio
from rlhfv.eval.objects import ObjectExtractor, SynonymTable, normalize_phrase
from rlhfv.eval.pope import integer_id, parse_yes_no
from rlhfv.eval.problems import Problems, read_json, read_records


@dataclass(frozen=True)
class AmberItem:
    id: int
    type: str
    truth: tuple[str, ...] | str
    hallu: tuple[str, ...] = ()


@dataclass
class AmberBenchmark:
    items: dict[int, AmberItem]
    association: dict[str, tuple[str, ...]]  # normalised word -> normalised associated words
    safe_words: frozenset[str]
    extractor: ObjectExtractor = field(repr=False)


def load_amber(
    annotations: str | Path, relation: str | Path, safe_words: str | Path | None = None
) -> AmberBenchmark:
    """Read AMBER's annotation, relation and safe-word files (layout in the module docstring)."""
    raw = read_json(annotations)
    if not isinstance(raw, list):
        raise InputError("expected a JSON list of annotation items", path=str(annotations))
    items: dict[int, AmberItem] = {}
    rows: dict[int, int] = {}  # id -> its row, for messages
    for row, obj in enumerate(raw, start=1):
        if not isinstance(obj, dict):
            raise InputError("not a JSON object", path=str(annotations), row=row)
        for name in ("id", "type", "truth"):
            if name not in obj:
                raise InputError("missing", path=str(annotations), row=row, field=name)
        kind = str(obj["type"])
        if kind != "generative" and not kind.startswith("discriminative-"):
            raise InputError(
                f"unknown item type {kind!r}: AMBER's are 'generative' and 'discriminative-...'",
                path=str(annotations),
                row=row,
                field="type",
            )
        item_id = integer_id(obj["id"])
        if item_id is None:
            raise InputError(f"not an integer: {obj['id']!r}", path=str(annotations), row=row, field="id")
        if item_id in rows:
            raise InputError(
                f"id {item_id} repeats row {rows[item_id]}; ids must be unique",
                path=str(annotations),
                row=row,
                field="id",
            )
        if kind == "generative":
            truth = _words(obj["truth"], path=str(annotations), row=row, field="truth")
            hallu = _words(obj.get("hallu", []), path=str(annotations), row=row, field="hallu", null_ok=True)
            item = AmberItem(
                item_id, kind, tuple(map(normalize_phrase, truth)), tuple(map(normalize_phrase, hallu))
            )
        else:
            truth = obj["truth"]
            label = truth.strip().lower() if isinstance(truth, str) else None
            if label not in ("yes", "no"):
                raise InputError(
                    f"a discriminative item's truth is 'yes' or 'no', got {truth!r}",
                    path=str(annotations),
                    row=row,
                    field="truth",
                )
            item = AmberItem(item_id, kind, label)
        items[item.id] = item
        rows[item.id] = row
    rel = read_json(relation)
    if not isinstance(rel, dict):
        raise InputError("expected a JSON object word -> list of words", path=str(relation))
    association = {
        normalize_phrase(k): tuple(map(normalize_phrase, _words(v, path=str(relation), field=repr(k))))
        for k, v in rel.items()
    }
    safe: frozenset[str] = frozenset()
    if safe_words is not None:
        try:
            lines = Path(safe_words).read_text("utf-8").splitlines()
        except OSError as err:
            raise InputError(f"cannot read file: {err.strerror}", path=str(safe_words)) from err
        safe = frozenset(normalize_phrase(w) for w in lines if w.strip())
    vocabulary = set(association) | {w for ws in association.values() for w in ws}
    vocabulary |= {w for it in items.values() if it.type == "generative" for w in (*it.truth, *it.hallu)}
    extractor = ObjectExtractor(SynonymTable.from_dict({w: [w] for w in sorted(vocabulary) if w}))
    return AmberBenchmark(items, association, safe, extractor)


def _words(value: Any, *, path: str, row: int | None = None, field: str, null_ok: bool = False) -> list[str]:
    """A list of words from an annotation field, or InputError naming the record and field:
    a string would otherwise be read letter by letter, and null crash later. AMBER's files
    always hold lists here; ``null_ok``: null reads as no words (an optional field)."""
    if value is None and null_ok:
        return []
    if not isinstance(value, list) or not all(isinstance(w, str) for w in value):
        got = type(value).__name__ if not isinstance(value, list) else "a list with non-strings"
        raise InputError(
            f"expected a list of words, got {got}", path=path, row=row, field=field, reason="bad_annotation"
        )
    return value


@dataclass(frozen=True)
class AmberGenerativeRecord:
    """Counts for one generative response."""

    n_words: int
    n_hallucinated: int
    truth_total: int
    truth_covered: int
    hallu_total: int
    hallu_named: int


def _first_named(word: str, objects: Sequence[str], association: dict[str, tuple[str, ...]]) -> int | None:
    """Index of the object ``word`` names: via an association list first, then directly
    (the order in which the reference script searches)."""
    for i, obj in enumerate(objects):
        if word in association.get(obj, ()):
            return i
    return objects.index(word) if word in objects else None


def score_generative(words: Sequence[str], item: AmberItem, bench: AmberBenchmark) -> AmberGenerativeRecord:
    """Classify each object word of a response as safe, covering a truth object, or hallucinated."""
    truth = list(item.truth)
    covered: set[int] = set()
    named: set[int] = set()
    hallucinated = 0
    for word in words:
        if word in bench.safe_words:
            continue
        t = _first_named(word, truth, bench.association)
        if t is not None:
            covered.add(t)
            continue
        h = _first_named(word, list(item.hallu), bench.association)
        if h is not None:
            named.add(h)
        hallucinated += 1
    return AmberGenerativeRecord(
        len(words), hallucinated, len(truth), len(covered), len(item.hallu), len(named)
    )


def _amber_chair(rs: Sequence[AmberGenerativeRecord]) -> float:
    return ratio(sum(r.n_hallucinated for r in rs), sum(r.n_words for r in rs))


def _amber_cover(rs: Sequence[AmberGenerativeRecord]) -> float:
    return ratio(sum(r.truth_covered for r in rs), sum(r.truth_total for r in rs))


def _amber_hal(rs: Sequence[AmberGenerativeRecord]) -> float:
    return ratio(sum(1 for r in rs if r.n_hallucinated), len(rs))


def _amber_cog(rs: Sequence[AmberGenerativeRecord]) -> float:
    return ratio(sum(r.hallu_named for r in rs), sum(r.hallu_total for r in rs))


AMBER_GENERATIVE_METRICS: tuple[Metric[AmberGenerativeRecord], ...] = (
    Metric("chair", _amber_chair, False, "hallucinated object words / object words"),
    Metric("cover", _amber_cover, True, "truth objects named / truth objects"),
    Metric("hal", _amber_hal, False, "responses with a hallucinated object / responses"),
    Metric("cog", _amber_cog, False, "likely-hallucination objects named / such objects"),
)
AMBER_DISCRIMINATIVE_METRICS: tuple[Metric[BinaryRecord], ...] = binary_metrics("no")


@dataclass
class AmberResult:
    generative: dict[str, float]
    discriminative: dict[str, dict[str, float]]  # "all" and per item type
    n_generative: int
    n_discriminative: int
    problems: dict[str, dict[str, Any]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        flat: dict[str, Any] = {f"generative/{k}": v for k, v in self.generative.items()}
        flat["generative/n"] = self.n_generative
        for group, values in self.discriminative.items():
            flat |= {f"discriminative/{group}/{k}": v for k, v in values.items()}
        flat["discriminative/n"] = self.n_discriminative
        return json_safe(flat | ({"problems": self.problems} if self.problems else {}))


def read_amber_answers(path: str | Path) -> list[tuple[Any, Any]]:
    problems = Problems()
    rows = read_records(path, problems)
    problems.raise_first(path)
    out = []
    for row, obj in rows:
        if "id" not in obj:
            raise InputError("missing 'id'", path=str(path), row=row, field="id")
        out.append((obj["id"], obj.get("response", obj.get("answer"))))
    return out


def score_amber(bench: AmberBenchmark, answers: Sequence[tuple[Any, Any]]) -> AmberResult:
    """AMBER metrics for (id, response) pairs; bad ids/responses counted, not scored: an id
    that is no integer or not annotated (``unknown_id``), one answered before
    (``duplicate_id``, the first answer is kept)."""
    problems = Problems()
    gen: list[AmberGenerativeRecord] = []
    disc: dict[str, list[BinaryRecord]] = {}
    answered: set[int] = set()
    for raw_id, response in answers:
        item_id = integer_id(raw_id)
        if item_id is None:
            problems.add("unknown_id", f"answer id {raw_id!r} is not an integer")
            continue
        item = bench.items.get(item_id)
        if item is None:
            problems.add("unknown_id", f"answer id {raw_id!r} is not in the annotations")
            continue
        if item_id in answered:  # scoring it twice would weigh that item double
            problems.add("duplicate_id", f"answer id {raw_id!r} answered again; the first answer is kept")
            continue
        answered.add(item_id)
        if not isinstance(response, str):
            problems.add("response_not_string", f"id {raw_id}: response is {type(response).__name__}")
            continue
        if item.type == "generative":
            words = [normalize_phrase(w) for w in bench.extractor.objects(response)]
            gen.append(score_generative(words, item, bench))
            continue
        prediction = parse_yes_no(response)
        if prediction is None:
            problems.add("unparsed_answer", f"id {raw_id}: {response[:60]!r}")
            continue
        record = BinaryRecord(str(item.truth), prediction)
        disc.setdefault("all", []).append(record)
        group = item.type.removeprefix("discriminative-")
        disc.setdefault(group, []).append(record)
    if not gen and not disc:
        raise InputError("no answer could be scored: " + "; ".join(problems.lines() or ["no answers"]))
    return AmberResult(
        generative=compute_metrics(AMBER_GENERATIVE_METRICS, gen) if gen else {},
        discriminative={
            g: compute_metrics(AMBER_DISCRIMINATIVE_METRICS, rs) for g, rs in sorted(disc.items())
        },
        n_generative=len(gen),
        n_discriminative=len(disc.get("all", [])),
        problems=problems.as_dict(),
    )


@dataclass(frozen=True)
class AmberQuery:
    id: int
    image: str  # file name in the image folder
    query: str
    row: int  # in the query file, for messages


def read_amber_queries(path: str | Path) -> list[AmberQuery]:
    """The queries of an AMBER query file (``query_all.json`` ...: id, image, query)."""
    problems = Problems()
    rows = read_records(path, problems)
    problems.raise_first(path)
    out = []
    for row, obj in rows:
        try:
            out.append(AmberQuery(int(obj["id"]), str(obj["image"]), str(obj["query"]), row))
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(f"bad query item: {err}", path=str(path), row=row) from err
    return out


def answer_amber(
    queries: Sequence[AmberQuery],
    model: str,
    image_dir: str | Path,
    generation: dict[str, Any],
    batch_size: int = 8,
    device: str | None = None,
    dtype: str = "auto",
    *,
    queries_path: str | Path | None = None,
    save_to: str | Path | None = None,
) -> list[tuple[int, str]]:
    """(id, response) for every query, generated with a HF vision-language model; with
    ``save_to``, saved there batch by batch and resumed from it
    (:func:`rlhfv.eval.generate.answer_with_model`)."""
    from rlhfv.eval.generate import answer_with_model, check_images

    images = [Path(image_dir) / q.image for q in queries]
    check_images([(f"row {q.row}", p) for q, p in zip(queries, images, strict=True)], queries_path)
    texts = [q.query for q in queries]
    rows = [{"id": q.id, "image": q.image, "query": q.query} for q in queries]
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
    return [(q.id, a) for q, a in zip(queries, answers, strict=True)]
