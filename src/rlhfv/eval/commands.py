"""`rlhfv eval chair | objhal | pope | amber | mmhal`."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from rlhfv.errors import InputError
from rlhfv.eval.problems import problem_lines

DEFAULT_BASE_URL = "https://api.openai.com/v1"
# hosts that always need a key; a local server (vLLM, llama.cpp) may not
KEYED_HOSTS = ("api.openai.com",)


def _int_at_least(minimum: int):
    """argparse type: an integer >= ``minimum`` (a bad value is a one-line usage error, exit 2)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum} or more, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def _positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (``model.generate`` divides or multiplies logits by
    a repetition penalty, so 0 or less is a traceback or nonsense, not a setting)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number above 0, got {text}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``rlhfv eval`` and its benchmark subcommands."""
    parser = subparsers.add_parser(
        "eval",
        help="measure hallucination (CHAIR, Object HalBench, POPE, AMBER, MMHal-Bench)",
        description="Measure hallucination offline; an LLM judge only where a benchmark needs one.",
    )
    sub = parser.add_subparsers(dest="eval_command", metavar="BENCHMARK", required=True)

    p = sub.add_parser(
        "chair",
        help="CHAIR scores of responses against COCO ground truth",
        description=(
            "Score existing responses (JSONL: image_id, response) with CHAIR against COCO instance and "
            "caption annotations: chair_s, chair_s_mentioned, chair_i, recall. Objects are found by rules, "
            "or listed by an LLM first with --llm-extract."
        ),
    )
    p.add_argument("--responses", required=True, help="JSONL with image_id and response")
    _annotation_args(p)
    _endpoint_args(p, optional=True)
    p.add_argument("--per-response", metavar="FILE", help="also write per-response mentions (JSONL)")
    p.add_argument("--json", action="store_true", help="print the result summary as JSON")
    p.set_defaults(func=_chair)

    p = sub.add_parser(
        "objhal",
        help="Object HalBench: generate answers, score with CHAIR, HTML report",
        description=(
            "Object HalBench: answer the question file's detailed-description questions with a model "
            "(or read --answers), score them with CHAIR and write answers.jsonl, result.json and "
            "report.html. Every image is checked before the model is loaded."
        ),
    )
    p.add_argument("--questions", required=True, help="JSONL: image (base64 or path), image_id, question")
    _annotation_args(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="HF vision-language model directory or name")
    src.add_argument("--answers", help="JSONL with image_id and response (skip generation)")
    _generation_args(p)
    _endpoint_args(p, optional=True)
    p.add_argument("--out", required=True, help="output directory (answers, result.json, report.html)")
    p.add_argument("--limit", type=_positive_int, help="only the first N questions (default: all of them)")
    p.add_argument("--json", action="store_true", help="print the result summary as JSON")
    p.set_defaults(func=_objhal)

    p = sub.add_parser(
        "pope",
        help="POPE: build question sets, or score answers",
        description="POPE yes/no object probing: build question sets from annotations, then score answers.",
    )
    pope = p.add_subparsers(dest="pope_command", metavar="STEP", required=True)
    b = pope.add_parser(
        "build",
        help="random/popular/adversarial questions from COCO-style annotations",
        description=(
            "Write balanced yes/no questions (JSONL) for images with at least --per-image objects; "
            "the splits differ only in how the absent objects of the 'no' questions are chosen."
        ),
    )
    b.add_argument("--annotations", required=True, nargs="+", help="JSONL or COCO instances file")
    b.add_argument("--synonyms", help="synonym table (reference format) to map category names")
    b.add_argument("--out", required=True, help="output JSONL (one question per line)")
    b.add_argument(
        "--split",
        choices=("random", "popular", "adversarial"),
        action="append",
        help="how negative objects are sampled; repeat for several (default: all three)",
    )
    b.add_argument(
        "--n-images",
        type=_positive_int,
        default=500,
        help="images sampled per split (default: %(default)s)",
    )
    b.add_argument(
        "--per-image",
        type=_positive_int,
        default=3,
        help="positive (and negative) questions per image (default: %(default)s)",
    )
    b.add_argument(
        "--seed",
        type=int,
        default=0,
        help="random seed of image and object sampling (default: %(default)s)",
    )
    b.set_defaults(func=_pope_build)
    s = pope.add_parser(
        "score",
        help="accuracy, precision, recall, F1, yes-ratio",
        description=(
            "Score yes/no answers (--answers, or generated with --model) per split and overall, "
            "with 'yes' as the positive class."
        ),
    )
    s.add_argument("--questions", required=True, help="JSONL from `pope build`")
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument("--answers", help="JSONL: question_id, answer (skip generation)")
    src.add_argument("--model", help="HF vision-language model to answer the questions, with --image-dir")
    s.add_argument("--image-dir", help="directory holding the images named in the questions")
    s.add_argument(
        "--save-answers",
        metavar="FILE",
        help="where the generated answers go (JSONL: question_id, answer; reusable as --answers), appended"
        " batch by batch to FILE-NAME.partial.jsonl beside it while generating, and resumed from there"
        " (default: QUESTIONS-NAME.answers.jsonl in the current directory)",
    )
    _generation_args(s, default_max_new_tokens=16, default_preset="greedy")
    s.add_argument("--json", action="store_true", help="print the result summary as JSON")
    s.set_defaults(func=_pope_score)

    p = sub.add_parser(
        "amber",
        help="AMBER generative (CHAIR, Cover, Hal, Cog) and discriminative metrics",
        description=(
            "Score answers (--answers, or generated with --model) against AMBER's annotation files: "
            "CHAIR, Cover, Hal, Cog for generative items; accuracy, precision, recall, F1 for "
            "discriminative ones."
        ),
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--answers", help="JSON list or JSONL: id, response")
    src.add_argument("--model", help="HF vision-language model to answer --queries")
    p.add_argument("--queries", help="AMBER query file (id, image, query), with --model")
    p.add_argument("--image-dir", help="AMBER images, with --model")
    p.add_argument(
        "--save-answers",
        metavar="FILE",
        help="where the generated answers go (JSON; reusable as --answers), appended batch by batch"
        " to FILE-NAME.partial.jsonl beside it while generating, and resumed from there"
        " (default: QUERIES-NAME.answers.json in the current directory)",
    )
    _generation_args(p)
    p.add_argument("--annotations", required=True, help="AMBER annotations.json")
    p.add_argument("--relation", required=True, help="AMBER relation.json (word associations)")
    p.add_argument("--safe-words", help="AMBER safe_words.txt")
    p.add_argument("--json", action="store_true", help="print the result summary as JSON")
    p.set_defaults(func=_amber)

    p = sub.add_parser(
        "mmhal",
        help="MMHal-Bench: judge answers 0-6 with an LLM",
        description=(
            "MMHal-Bench: an LLM judge (OpenAI-compatible endpoint) rates each answer 0-6; reports the "
            "mean score, the hallucination rate and the score per question type."
        ),
    )
    p.add_argument("--questions", required=True, help="MMHal-Bench question file (JSON list)")
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--answers", help="JSON/JSONL with model answers in question order (default: model_answer)"
    )
    src.add_argument("--model", help="HF vision-language model to answer the questions")
    p.add_argument("--image-dir", help="directory with the images (<image_id>.jpg or the image_src name)")
    p.add_argument(
        "--save-answers",
        metavar="FILE",
        help="where the generated answers go before judging (JSON; reusable as --answers), appended"
        " batch by batch to FILE-NAME.partial.jsonl beside it while generating, and resumed from there (default: beside --out,"
        " OUT-NAME.answers.json; without --out, QUESTIONS-NAME.answers.json in the current directory)",
    )
    _generation_args(p)
    _endpoint_args(p, optional=False)
    p.add_argument("--out", help="write per-question ratings and the summary (JSON)")
    p.add_argument("--json", action="store_true", help="print the result summary as JSON")
    p.set_defaults(func=_mmhal)


def _annotation_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--annotations",
        required=True,
        nargs="+",
        help="ground truth: JSONL (id, captions, instances) and/or COCO instances and captions files",
    )
    p.add_argument(
        "--synonyms", help="synonym table in the reference format (default: the project's COCO-80)"
    )


def _endpoint_args(p: argparse.ArgumentParser, *, optional: bool) -> None:
    g = p.add_argument_group("LLM endpoint (OpenAI-compatible)")
    if optional:
        g.add_argument("--llm-extract", action="store_true", help="list objects with an LLM first")
    g.add_argument("--base-url", default=DEFAULT_BASE_URL, help="endpoint base URL (default: %(default)s)")
    g.add_argument(
        "--judge-model",
        default="gpt-4o-mini" if optional else "gpt-4o",
        help="the judge's model name at the endpoint (default: %(default)s)",
    )
    g.add_argument(
        "--api-key-env",
        default="OPENAI_API_KEY",
        help="environment variable holding the key (default: %(default)s)",
    )
    g.add_argument(
        "--cache-dir",
        default=".rlhfv_cache/llm",
        help="replies cached here, so reruns are free (default: %(default)s)",
    )
    g.add_argument(
        "--max-retries",
        type=_non_negative_int,
        default=4,
        help="retries of a failed request, with backoff (default: %(default)s)",
    )
    g.add_argument(
        "--allow-partial",
        action="store_true",
        help="exit 0 when the endpoint failed for some items, which are left out of the aggregates"
        " (default: report them, warn and exit 1)",
    )


def _generation_args(
    p: argparse.ArgumentParser, default_max_new_tokens: int | None = None, default_preset: str = "reference"
) -> None:
    from rlhfv.eval.generate import DTYPES, PRESETS

    g = p.add_argument_group("generation")
    presets = "; ".join(
        f"{name}: {s['num_beams']} beam(s), up to {s['max_new_tokens']} new tokens, "
        f"repetition penalty {s['repetition_penalty']}"
        for name, s in sorted(PRESETS.items())
    )
    g.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=default_preset,
        help=f"decoding settings ({presets}) (default: %(default)s)",
    )
    g.add_argument("--num-beams", type=_positive_int, help="override the preset")
    g.add_argument(
        "--max-new-tokens",
        type=_positive_int,
        default=default_max_new_tokens,
        help="longest answer in tokens; overrides the preset (default: "
        + ("%(default)s)" if default_max_new_tokens is not None else "the preset's)"),
    )
    g.add_argument(
        "--repetition-penalty", type=_positive_float, help="override the preset (above 0; 1 is none)"
    )
    g.add_argument(
        "--batch-size",
        type=_positive_int,
        default=8,
        help="questions answered per generate call (default: %(default)s)",
    )
    g.add_argument("--device", default=None, help="cuda, cpu ... (default: cuda if available)")
    g.add_argument("--dtype", choices=DTYPES, default="auto", help="torch dtype for the model")


def check_output_file(path: str | None, option: str) -> None:
    """Before any work: ``path`` can be created as a file (its folder exists, it is no folder)."""
    if path is None:
        return
    target = Path(path)
    if target.is_dir():
        raise InputError(f"{option} {path}: is a directory; give a file name", reason="bad_output")
    parent = target.parent
    if not parent.exists():
        raise InputError(f"{option} {path}: directory {parent} does not exist", reason="bad_output")
    if not parent.is_dir():
        raise InputError(f"{option} {path}: {parent} is not a directory", reason="bad_output")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{option} {path}: cannot write to directory {parent}", reason="bad_output")


def check_output_dir(path: str | None, option: str, files: tuple[str, ...] = ()) -> None:
    """Before any work: ``path`` is a folder, or can be made one (``mkdir -p``), and the
    ``files`` to be written in it are not folders."""
    if path is None:
        return
    target = Path(path)
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        what = "is not a directory" if existing == target else f"{existing} is not a directory"
        raise InputError(f"{option} {path}: {what}", reason="bad_output")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{option} {path}: cannot write to directory {existing}", reason="bad_output")
    for name in files:
        if (target / name).is_dir():
            raise InputError(f"{option} {path}: {name} in it is a directory", reason="bad_output")


def check_api_key(args: argparse.Namespace) -> None:
    """Before any work: a hosted endpoint that always needs a key (OpenAI) has one.

    A local server (``--base-url http://localhost...``) may run without a key, so only
    known hosted endpoints are checked; other endpoints report a 401 per item."""
    host = urlparse(args.base_url).hostname or ""
    if host in KEYED_HOSTS and not os.environ.get(args.api_key_env):
        raise InputError(
            f"{args.base_url} needs an API key: set the environment variable {args.api_key_env}"
            " (or name another one with --api-key-env)",
            reason="missing_api_key",
        )


def _check_client_args(args: argparse.Namespace) -> None:
    """The judge's URL, key and cache folder, checked before any work."""
    from rlhfv.eval.judge import check_base_url

    check_base_url(args.base_url)
    check_api_key(args)
    check_output_dir(args.cache_dir, "--cache-dir")


def _client(args: argparse.Namespace):
    from rlhfv.eval.judge import ChatClient

    return ChatClient(
        args.base_url,
        args.judge_model,
        api_key_env=args.api_key_env,
        cache_dir=args.cache_dir,
        max_retries=args.max_retries,
    )


def _extraction_client(args: argparse.Namespace):
    """The judge client (closed on exit) when ``--llm-extract`` is given, else ``None``."""
    return _client(args) if args.llm_extract else contextlib.nullcontext()


def _print(summary: dict[str, Any], as_json: bool, problems: list[str]) -> None:
    for line in problems:
        print(f"rlhfv: warning: skipped {line}", file=sys.stderr)
    if as_json:
        print(json.dumps(summary))
        return
    for key, value in summary.items():
        if key == "problems":
            continue
        shown = "n/a" if value is None else (f"{value:.4f}" if isinstance(value, float) else value)
        print(f"{key:>22}: {shown}")


def _judge_status(
    n_failed: int, n_scored: int, noun: str, allow_partial: bool, rerun: str | None = None
) -> int:
    """Exit status once results are printed: 1 when the judge endpoint failed for any item,
    unless ``--allow-partial``; ``rerun`` says how to retry them (default: rerun).

    An outage during a run would otherwise shrink the sample without a word, and a mean
    over the few items scored before it (or that needed no call) looks like a result.
    Nothing scored at all is an InputError from the scorer (exit 2), as for other input."""
    if not n_failed:
        return 0
    print(
        f"rlhfv: warning: {n_failed} {noun}{'s' * (n_failed != 1)} not scored because the judge"
        f" endpoint failed; the aggregates cover only the {n_scored} scored"
        + (
            ""
            if allow_partial
            else f" (exit status 1; {rerun or 'rerun'} to retry them, or pass --allow-partial)"
        ),
        file=sys.stderr,
    )
    return 0 if allow_partial else 1


def _chair(args: argparse.Namespace) -> int:
    from rlhfv.eval.objhal import load_responses, run_chair

    check_output_file(args.per_response, "--per-response")
    if args.llm_extract:
        _check_client_args(args)
    with _extraction_client(args) as client:
        result = run_chair(
            load_responses(args.responses),
            args.annotations,
            synonyms=args.synonyms,
            client=client,
            progress=not args.json,
        )
    if args.per_response:
        with open(args.per_response, "w", encoding="utf-8") as f:
            for row in result.per_response():
                f.write(json.dumps(row) + "\n")
    _print(result.summary(), args.json, problem_lines(result.problems))
    return _judge_status(result.n_judge_failed, result.n_responses, "response", args.allow_partial)


def _check_device(args: argparse.Namespace) -> None:
    from rlhfv.eval.generate import check_device

    check_device(args.device)


def _model_answering(args: argparse.Namespace) -> dict[str, Any]:
    """The arguments every ``answer_*`` function takes to answer with ``--model``."""
    return dict(
        model=args.model,
        image_dir=args.image_dir,
        generation=_gen_kwargs(args),
        batch_size=args.batch_size,
        device=args.device,
        dtype=args.dtype,
    )


def _gen_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    from rlhfv.eval.generate import generation_settings

    return generation_settings(
        args.preset,
        num_beams=args.num_beams,
        max_new_tokens=args.max_new_tokens,
        repetition_penalty=args.repetition_penalty,
    )


def _objhal(args: argparse.Namespace) -> int:
    check_output_dir(args.out, "--out", files=("answers.jsonl", "result.json", "report.html"))
    if args.llm_extract:
        _check_client_args(args)
    if args.model:
        _check_device(args)
    with _extraction_client(args) as client:
        result = _run_objhal(args, client)
    _print(result.summary(), args.json, problem_lines(result.problems))
    if not args.json:
        print(f"report: {args.out}/report.html")
    return _judge_status(result.n_judge_failed, result.n_responses, "response", args.allow_partial)


def _run_objhal(args: argparse.Namespace, client: Any):
    from rlhfv.eval.objhal import run_object_halbench

    return run_object_halbench(
        args.questions,
        args.annotations,
        out_dir=args.out,
        model=args.model,
        answers=args.answers,
        synonyms=args.synonyms,
        generation=_gen_kwargs(args),
        batch_size=args.batch_size,
        device=args.device,
        dtype=args.dtype,
        client=client,
        limit=args.limit,
    )


def _pope_build(args: argparse.Namespace) -> int:
    from rlhfv.eval.pope import (
        NegativeSampler,
        build_pope_questions,
        eligible_images,
        load_object_annotations,
        write_questions,
    )

    check_output_file(args.out, "--out")
    objects = load_object_annotations(args.annotations, synonyms=args.synonyms)
    n_eligible = len(eligible_images(objects, args.per_image))
    if 0 < n_eligible < args.n_images:  # none at all is an error, raised below
        print(
            f"rlhfv: warning: --n-images {args.n_images} but only {n_eligible} images have"
            f" {args.per_image} or more annotated objects; using {n_eligible} per split",
            file=sys.stderr,
        )
    sampler = NegativeSampler(objects)
    questions = []
    for split in args.split or ["random", "popular", "adversarial"]:
        questions += build_pope_questions(
            objects, split, n_images=args.n_images, per_image=args.per_image, seed=args.seed, sampler=sampler
        )
    write_questions(questions, args.out)
    print(f"wrote {len(questions)} questions to {args.out}")
    return 0


def _pope_score(args: argparse.Namespace) -> int:
    from rlhfv.eval.generate import partial_path
    from rlhfv.eval.pope import answer_pope, read_answers, read_questions, score_pope

    saved = _answers_file(args, Path(args.questions).stem + ".answers.jsonl")
    if args.model:
        if not args.image_dir:
            raise InputError("--model needs --image-dir")
        _check_device(args)
    questions = read_questions(args.questions)
    if args.answers:
        given = read_answers(args.answers)
        answers, problems, where = given.answers, given.problems, given.rows.get
    else:
        answers = answer_pope(
            questions, **_model_answering(args), questions_path=args.questions, save_to=partial_path(saved)
        )
        rows = [{"question_id": qid, "answer": answer} for qid, answer in answers.items()]
        _keep_answers(saved, rows)
        problems, where = None, None
    result = score_pope(questions, answers, problems=problems, where=where)
    _print(result.summary(), args.json, problem_lines(result.problems))
    return 0


def _amber(args: argparse.Namespace) -> int:
    from rlhfv.eval.amber import answer_amber, load_amber, read_amber_answers, read_amber_queries, score_amber
    from rlhfv.eval.generate import partial_path

    if args.model:
        if not args.queries or not args.image_dir:
            raise InputError("--model needs --queries and --image-dir")
        _check_device(args)
    saved = _answers_file(args, Path(args.queries or "amber").stem + ".answers.json")
    bench = load_amber(args.annotations, args.relation, args.safe_words)
    if args.answers:
        answers = read_amber_answers(args.answers)
    else:
        queries = read_amber_queries(args.queries)
        answers = answer_amber(
            queries, **_model_answering(args), queries_path=args.queries, save_to=partial_path(saved)
        )
        _keep_answers(saved, [{"id": i, "response": r} for i, r in answers])
    result = score_amber(bench, answers)
    _print(result.summary(), args.json, problem_lines(result.problems))
    return 0


def _mmhal(args: argparse.Namespace) -> int:
    from rlhfv.eval.generate import partial_path
    from rlhfv.eval.mmhal import answer_mmhal, load_mmhal, question_row, read_mmhal_answers, score_mmhal

    check_output_file(args.out, "--out")
    beside = Path(args.out).with_suffix(".answers.json") if args.out else None
    saved = _answers_file(args, beside or Path(args.questions).stem + ".answers.json")
    _check_client_args(args)
    if args.model:
        if not args.image_dir:
            raise InputError("--model needs --image-dir")
        _check_device(args)
    questions = load_mmhal(args.questions)
    rerun = None
    if args.answers:
        answers = read_mmhal_answers(args.answers, len(questions))
    elif args.model:
        answers = answer_mmhal(
            questions, **_model_answering(args), questions_path=args.questions, save_to=partial_path(saved)
        )
        # on disk before judging: a judge failure must not cost the generation
        rows = [question_row(q) | {"model_answer": a} for q, a in zip(questions, answers, strict=True)]
        _keep_answers(saved, rows)
        rerun = f"rerun with --answers {saved} instead of --model"
    else:
        answers = [q.model_answer for q in questions]
    with _client(args) as client:
        try:
            result = score_mmhal(questions, answers, client, progress=not args.json)
        except InputError as err:
            if rerun is None:
                raise
            message = f"{err.message}; the generated answers are in {saved}: {rerun} to judge them again"
            raise InputError(message, path=err.path, row=err.row, field=err.field, reason=err.reason) from err
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(result.to_json(), f, indent=1)
    _print(result.summary(), args.json, problem_lines(result.problems))
    return _judge_status(result.n_judge_failed, result.n_rated, "answer", args.allow_partial, rerun)


def _answers_file(args: argparse.Namespace, default: str | Path) -> Path | None:
    """Where generated answers go (``--save-answers``, else ``default`` when ``--model``
    generates them), checked before any work; None when nothing is generated or saved."""
    path = args.save_answers or (default if args.model else None)
    check_output_file(None if path is None else str(path), "--save-answers")
    return None if path is None else Path(path)


def _keep_answers(path: Path, rows: list[dict[str, Any]]) -> None:
    """:func:`rlhfv.eval.generate.write_answers`, then say on stderr where they are."""
    from rlhfv.eval.generate import write_answers

    write_answers(path, rows)
    print(f"rlhfv: generated answers saved to {path} (reusable as --answers)", file=sys.stderr)
