"""Object HalBench: generate detailed descriptions, score them with CHAIR, write a report.

Question file (the reference layout): JSONL, one question per line, with ``image_id``,
``question`` and ``image`` (base64-encoded image bytes, or a path, relative paths being
resolved against the question file's folder), and optionally a unique ``question_id``
(then answers are matched by it, so several questions may ask about one image).

Outputs in ``out_dir``: ``answers.jsonl`` (question_id where given, image_id, question,
response; while generating, ``answers.partial.jsonl`` grows batch by batch),
``result.json`` (aggregates, counts, problems, settings, per-response objects) and
``report.html`` (each image inline with its answer; hallucinated objects highlighted).
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhfv.data.images import is_image_file
from rlhfv.errors import InputError
from rlhfv.eval.chair import (
    ChairRecord,
    ChairResult,
    GroundTruth,
    load_ground_truth,
    normalize_image_id,
    score_chair,
)
from rlhfv.eval.generate import check_images, partial_path, write_answers
from rlhfv.eval.judge import ChatClient
from rlhfv.eval.objects import ObjectExtractor, coco_extractor
from rlhfv.eval.problems import Problems, iter_jsonl, problem_lines, read_records


@dataclass(frozen=True)
class Question:
    image_id: str
    question: str
    image: Any  # base64 string, path or bytes; decoded lazily
    row: int | None = field(default=None, compare=False)  # in the question file
    # optional in the question file; when given, answers are matched by it, so several
    # questions may ask about one image
    question_id: str | None = None


def load_questions(path: str | Path, *, limit: int | None = None) -> list[Question]:
    """Questions in the reference Object HalBench layout (see module docstring); an
    optional ``question_id`` must be unique."""
    if limit is not None and limit < 1:
        raise InputError(f"limit must be 1 or more, got {limit}", field="limit", reason="bad_limit")
    base = Path(path).parent
    problems = Problems()
    out = []
    seen: dict[str, int] = {}
    for row, obj in iter_jsonl(path, problems):
        for key in ("image_id", "question", "image"):
            if key not in obj:
                raise InputError(f"missing {key!r}", path=str(path), row=row, field=key)
        image = obj["image"]
        if isinstance(image, str) and is_image_file(image, base):
            # absolute: check_images resolves relative paths against the question file's
            # folder again, and a relative result would also depend on the working directory
            image = str((base / image).absolute())
        question_id = None if obj.get("question_id") is None else str(obj["question_id"])
        if question_id is not None:
            if question_id in seen:
                raise InputError(
                    f"question_id {question_id!r} repeats row {seen[question_id]}; ids must be unique",
                    path=str(path),
                    row=row,
                    field="question_id",
                )
            seen[question_id] = row
        out.append(Question(str(obj["image_id"]), str(obj["question"]), image, row, question_id))
        if limit is not None and len(out) >= limit:
            break
    problems.raise_first(path)
    if not out:
        raise InputError("no questions", path=str(path))
    return out


def check_question_images(questions: Sequence[Question], path: str | Path) -> None:
    """InputError naming the question file, the row and the image when any image is unreadable."""
    check_images([(f"row {q.row}", q.image) for q in questions], path, base_dir=Path(path).parent)


# no answer for a question, unlike a null one (scored, and counted as not a string)
_MISSING = object()


@dataclass
class Responses:
    """(image_id, response) pairs, where each came from, and the rows already rejected;
    ``question_ids``: each row's ``question_id`` (None where it has none), when read from a file."""

    pairs: list[tuple[Any, Any]]
    labels: list[str]
    problems: Problems
    question_ids: list[Any] = field(default_factory=list)


def load_responses(path: str | Path) -> Responses:
    """(image_id, response) pairs from JSONL (or a ``.json`` list); rows without the fields are counted."""
    out = Responses([], [], Problems())
    for row, obj in read_records(path, out.problems):
        if "image_id" not in obj or "response" not in obj:
            missing = "image_id" if "image_id" not in obj else "response"
            out.problems.add("missing_field", f"{path}: row {row}: no {missing!r}")
            continue
        out.pairs.append((obj["image_id"], obj["response"]))
        out.labels.append(f"{path}: row {row}")
        out.question_ids.append(obj.get("question_id"))
    return out


def match_answers(
    given: Responses, questions: Sequence[Question], *, check_unknown: bool = True
) -> tuple[list[Any], dict[int, str]]:
    """The response to each question (``_MISSING`` where none), and question index -> where
    it came from, for ``eval objhal --answers``.

    An answer with a ``question_id`` goes to the question with that id (when the questions
    have ids); one without, by image id, to the image's only question: an image asked
    about several times needs question ids (``ambiguous_id``). As ``eval pope score``
    does, a question answered twice keeps the first answer (``duplicate_id``) and an
    answer to no question is counted (``unknown_id``); ``check_unknown=False`` when the
    questions were cut by ``--limit``."""
    by_qid = {q.question_id: i for i, q in enumerate(questions) if q.question_id is not None}
    by_image: dict[str, list[int]] = {}
    for i, q in enumerate(questions):
        by_image.setdefault(normalize_image_id(q.image_id), []).append(i)
    responses: list[Any] = [_MISSING] * len(questions)
    where: dict[int, str] = {}
    qids = given.question_ids or [None] * len(given.pairs)
    for (image_id, response), qid, label in zip(given.pairs, qids, given.labels, strict=True):
        if qid is not None and by_qid:
            found = [by_qid[str(qid)]] if str(qid) in by_qid else []
            what = f"question_id {qid!r}"
        else:
            found = by_image.get(normalize_image_id(image_id), [])
            what = f"image id {image_id!r}"
        if not found:
            if check_unknown:
                given.problems.add("unknown_id", f"{label}: {what} is not in the questions")
            continue
        if len(found) > 1:
            given.problems.add(
                "ambiguous_id",
                f"{label}: {what} has {len(found)} questions; give each answer its question_id",
            )
            continue
        i = found[0]
        if responses[i] is not _MISSING:
            given.problems.add("duplicate_id", f"{label}: {what} already answered on {where[i]}")
            continue
        responses[i], where[i] = response, label
    return responses, where


def run_chair(
    responses: Responses,
    annotations: Sequence[str | Path],
    *,
    synonyms: str | Path | None = None,
    extractor: ObjectExtractor | None = None,
    client: ChatClient | None = None,
    progress: bool = False,
    ground_truth: GroundTruth | None = None,
) -> ChairResult:
    """CHAIR for (image_id, response) pairs; with ``client``, objects are listed by the LLM first.

    ``ground_truth`` (from :func:`load_ground_truth` with the same extractor) skips loading
    ``annotations`` again."""
    pairs, problems = responses.pairs, responses.problems
    extractor = extractor or coco_extractor(synonyms)
    if ground_truth is None:
        ground_truth = load_ground_truth(annotations, extractor)
    mentions = None
    if client is not None:
        from rlhfv.eval.llm_objects import llm_mentions

        # only what score_chair can score: a judge failure then always leaves a response
        # unscored (exit status 1), never one skipped anyway as unknown_image_id
        scorable = [r for i, r in pairs if ground_truth.get(normalize_image_id(i)) is not None]
        found = llm_mentions(scorable, client, extractor, problems, progress=progress)
        mentions = found.__getitem__
    result = score_chair(
        pairs,
        ground_truth,
        extractor,
        mentions=mentions,
        problems=problems,
        where=responses.labels.__getitem__,
        progress=progress,
    )
    if not result.records:
        raise InputError("no response could be scored: " + "; ".join(problems.lines() or ["no responses"]))
    return result


def run_object_halbench(
    questions: str | Path,
    annotations: Sequence[str | Path],
    *,
    out_dir: str | Path,
    model: str | Any | None = None,
    processor: Any = None,
    answers: str | Path | None = None,
    synonyms: str | Path | None = None,
    generation: dict[str, Any] | None = None,
    batch_size: int = 8,
    device: str | None = None,
    dtype: str = "auto",
    client: ChatClient | None = None,
    limit: int | None = None,
) -> ChairResult:
    """Generate (or read) answers, score them, write answers.jsonl, result.json, report.html.

    ``model`` is a name/path (loaded with AutoModelForImageTextToText) or a loaded model
    given together with ``processor``. Generated answers are appended to
    ``answers.partial.jsonl`` batch by batch; a run with the same model name and settings
    resumes from it (:func:`rlhfv.eval.generate.answer_with_model`), and it is removed once
    ``answers.jsonl`` is written.
    """
    from rlhfv.eval.generate import answer_with_model, generation_settings

    qs = load_questions(questions, limit=limit)
    settings = generation or generation_settings("reference")
    # everything that can be wrong with the input is found before a model is loaded
    extractor = coco_extractor(synonyms)
    ground_truth = load_ground_truth(annotations, extractor)
    if answers is None and model is not None:
        check_question_images(qs, questions)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if answers is not None:
        given = load_responses(answers)
        problems = given.problems
        responses, where = match_answers(given, qs, check_unknown=limit is None)
        for q, r in zip(qs, responses, strict=True):
            if r is _MISSING:
                problems.add("missing_answer", f"no answer for {_named(q)}")
    else:
        if model is None:
            raise InputError("give a model or an answers file")
        responses = answer_with_model(
            model,
            [q.image for q in qs],
            [q.question for q in qs],
            settings,
            batch_size,
            device,
            dtype,
            processor=processor,
            save_to=out / PARTIAL,
            rows=[_item_row(q) for q in qs],
        )
        problems, where = Problems(), {}
    rows = [_answer_row(q, None if r is _MISSING else r) for q, r in zip(qs, responses, strict=True)]
    write_answers(out / "answers.jsonl", rows)  # and remove answers.partial.jsonl
    scored, asked = Responses([], [], problems), []  # asked[i]: the question of scored pair i
    for n, (q, r) in enumerate(zip(qs, responses, strict=True)):
        if r is not _MISSING:
            scored.pairs.append((q.image_id, r))
            scored.labels.append(where.get(n, f"question {n + 1}"))
            asked.append(q)
    result = run_chair(scored, annotations, extractor=extractor, client=client, ground_truth=ground_truth)
    full = result.summary() | {
        "generation": settings if answers is None else None,
        "extraction": "llm" if client is not None else "rules",
        "per_response": result.per_response(),
    }
    (out / "result.json").write_text(json.dumps(full, indent=1), "utf-8")
    (out / "report.html").write_text(render_report(result, asked, extractor), "utf-8")
    return result


# generated answers so far, one JSON line per answer, appended after every batch
PARTIAL = partial_path("answers.jsonl").name


def _named(q: Question) -> str:
    return f"question_id {q.question_id!r}" if q.question_id is not None else f"image id {q.image_id!r}"


def _item_row(q: Question) -> dict[str, Any]:
    """What identifies a question in the answer files: its ids and text."""
    ids = {"question_id": q.question_id} if q.question_id is not None else {}
    return ids | {"image_id": q.image_id, "question": q.question}


def _answer_row(q: Question, response: Any) -> dict[str, Any]:
    return _item_row(q) | {"response": response}


# ---------------------------------------------------------------- HTML report

_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table.m td{padding:2px 12px}.item{display:flex;gap:16px;border-top:1px solid #ddd;padding:12px 0}
.item img{width:224px;height:auto;flex:none}.hal{background:#ffb3b3}.ok{background:#c8f0c8}
.q{color:#555;font-style:italic}.objs{font-size:90%;color:#444}
"""


def _thumbnail(image: Any) -> str:
    from rlhfv.eval.generate import load_image

    try:
        im = load_image(image)
    except InputError:
        return ""
    im.thumbnail((448, 448))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def highlight(response: str, record: ChairRecord, extractor: ObjectExtractor) -> str:
    """The response as HTML: escaped, with hallucinated mentions in ``<mark class="hal">``
    and correct ones in ``<mark class="ok">``."""
    parts, pos = [], 0
    hallucinated = set(record.hallucinated)
    for m in extractor.mentions(response):
        if m.cls not in hallucinated and m.cls not in record.ground_truth:
            continue
        kind = "hal" if m.cls in hallucinated else "ok"
        parts.append(html.escape(response[pos : m.start]))
        title = html.escape(m.cls, quote=True)
        parts.append(f'<mark class="{kind}" title="{title}">{html.escape(response[m.start : m.end])}</mark>')
        pos = m.end
    parts.append(html.escape(response[pos:]))
    return "".join(parts)


def render_report(result: ChairResult, questions: Sequence[Question], extractor: ObjectExtractor) -> str:
    """A self-contained HTML page: the aggregates, then each image with its scored answer.

    ``questions[i]``: the question answered by the i-th response given to the scorer (a
    record's ``index``), so each answer is shown with its own question even when several
    questions ask about one image."""
    esc = html.escape
    rows = "".join(
        f"<tr><td>{esc(k)}</td><td>{'n/a' if v is None else (f'{v:.4f}' if isinstance(v, float) else esc(str(v)))}</td></tr>"
        for k, v in result.summary().items()
        if k != "problems"
    )
    problems = "".join(f"<li>{esc(line)}</li>" for line in problem_lines(result.problems))
    items = []
    for r in result.records:
        q = questions[r.index] if r.index is not None and r.index < len(questions) else None
        src = _thumbnail(q.image) if q is not None else ""
        img = f'<img src="{src}" alt="image {esc(r.image_id)}">' if src else "<div>(no image)</div>"
        qid = f", question_id {esc(q.question_id)}" if q is not None and q.question_id is not None else ""
        items.append(
            f'<div class="item">{img}<div><div>image {esc(r.image_id)}{qid}</div>'
            f'<p class="q">{esc(q.question if q else "")}</p><p>{highlight(r.response, r, extractor)}</p>'
            f'<p class="objs">hallucinated: <b>{esc(", ".join(r.hallucinated) or "none")}</b><br>'
            f"ground truth: {esc(', '.join(sorted(r.ground_truth)))}</p></div></div>"
        )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>Object HalBench report</title>"
        f"<style>{_CSS}</style></head><body><h1>Object HalBench</h1><table class='m'>{rows}</table>"
        + (f"<h2>Skipped</h2><ul>{problems}</ul>" if problems else "")
        + "".join(items)
        + "</body></html>"
    )
