"""Answer (image, question) pairs with any HF vision-language model, in batches.

Works with any model that ``AutoModelForImageTextToText`` + ``AutoProcessor`` load and
whose processor has a chat template: the question becomes one user turn holding the image
and the text, prompts are left-padded, and only the newly generated tokens are decoded.

>>> generation_settings("reference")
{'num_beams': 3, 'max_new_tokens': 1024, 'repetition_penalty': 1.1, 'do_sample': False}
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from rlhfv.data.images import is_image_file
from rlhfv.errors import InputError
from rlhfv.eval.problems import Problems, iter_jsonl

# Decoding settings by name; "reference" is the RLHF-V Object HalBench setting.
PRESETS: dict[str, dict[str, Any]] = {
    "reference": {"num_beams": 3, "max_new_tokens": 1024, "repetition_penalty": 1.1, "do_sample": False},
    "greedy": {"num_beams": 1, "max_new_tokens": 512, "repetition_penalty": 1.0, "do_sample": False},
}


def generation_settings(preset: str = "reference", **overrides: Any) -> dict[str, Any]:
    """A preset's ``generate`` keyword arguments with the non-None ``overrides`` applied."""
    if preset not in PRESETS:
        raise InputError(f"unknown generation preset {preset!r}; choose from {sorted(PRESETS)}")
    return {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}


def _shown(text: str) -> str:
    """Base64 data in a message: its first 40 characters, not hundreds of thousands."""
    return repr(text) if len(text) <= 40 else f"{text[:40]!r}..."


def _decode(source: Any, base_dir: str | Path | None = None):
    """A fully decoded PIL image (:func:`rlhfv.data.images.decode_image`) from a PIL image,
    raw bytes, a path or a base64 string (a ``Path`` is only ever a path), so a corrupt
    file fails here with its name rather than in the middle of generation."""
    from PIL import Image, UnidentifiedImageError

    from rlhfv.data.images import UNREADABLE_IMAGE, base64_image, decode_image

    if isinstance(source, Image.Image):
        return source
    if isinstance(source, (bytes, bytearray)):
        try:
            return decode_image(bytes(source))
        except UNREADABLE_IMAGE as err:
            raise InputError(f"image bytes cannot be decoded ({err})", reason="bad_image") from err
    text = str(source)
    path = Path(base_dir, text) if base_dir is not None else Path(text)
    if is_image_file(text, base_dir):
        try:
            return decode_image(path.read_bytes())
        except UNREADABLE_IMAGE as err:
            raise InputError(f"image file {path} cannot be decoded ({err})", reason="bad_image") from err
    if isinstance(source, Path):  # a path, never base64
        raise InputError(f"image file not found: {path}", reason="missing_image")
    try:
        raw = base64_image(text)
    except ValueError as err:
        if len(text) < 1024 and Path(text).suffix:  # reads as a file name, and is none
            raise InputError(f"image file not found: {path}", reason="missing_image") from err
        raise InputError(
            f"neither an existing file nor base64 image data: {_shown(text)} (invalid base64: {err})",
            reason="bad_image",
        ) from err
    try:
        return decode_image(raw)
    except UnidentifiedImageError as err:  # valid base64, but of no image format
        raise InputError(
            f"neither an existing file nor base64 image data: {_shown(text)}", reason="bad_image"
        ) from err
    except UNREADABLE_IMAGE as err:
        raise InputError(
            f"base64 image {_shown(text)} cannot be decoded ({err})", reason="bad_image"
        ) from err


def load_image(source: Any, *, base_dir: str | Path | None = None):
    """A PIL RGB image from a PIL image, raw bytes, a path, or a base64 string."""
    return _decode(source, base_dir).convert("RGB")


def image_problem(source: Any, base_dir: str | Path | None = None) -> str | None:
    """Why ``source`` (a path, relative to ``base_dir``, base64 data or bytes) is no usable
    image, or None. Decodes the whole image, so it finds truncated files too."""
    try:
        _decode(source, base_dir)
    except InputError as err:
        return err.message
    return None


def check_images(
    images: Sequence[tuple[str, Any]], path: str | Path | None = None, *, base_dir: str | Path | None = None
) -> None:
    """InputError naming ``path``, the first unusable image's place and why, and the count.

    ``images``: (where, source) pairs such as ("row 3", "img.jpg"), relative paths resolved
    against ``base_dir``; a source may be an InputError from a lookup that already failed.
    Each distinct path is decoded once (POPE asks several questions about one image). Run
    before a model is loaded: a bad image then costs no loading or generation time."""
    seen: dict[str, str | None] = {}
    bad = []
    for where, source in images:
        if isinstance(source, InputError):
            problem = source.message
        elif isinstance(source, (str, Path)):
            key = str(source)
            if key not in seen:
                seen[key] = image_problem(source, base_dir)
            problem = seen[key]
        else:
            problem = image_problem(source)
        if problem:
            bad.append((where, problem))
    if bad:
        where, problem = bad[0]
        raise InputError(
            f"{len(bad)} of {len(images)} images not found or unreadable, e.g. {where}: {problem}",
            path=None if path is None else str(path),
            field="image",
            reason="missing_image",
        )


DTYPES = ("auto", "bfloat16", "float16", "float32")


def check_device(device: str | None) -> None:
    """InputError unless ``device`` (None: the default) is a torch device this machine has.

    Called before a model is loaded, so a bad ``--device`` costs no loading time."""
    if device is None:
        return
    import torch

    try:
        kind = torch.device(device).type
    except (RuntimeError, ValueError) as err:
        raise InputError(f"--device {device!r} is not a torch device ({err})", reason="bad_device") from err
    if kind == "cuda" and not torch.cuda.is_available():
        raise InputError("CUDA is not available on this machine; use --device cpu", reason="bad_device")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise InputError("MPS is not available on this machine; use --device cpu", reason="bad_device")
    if kind != "cpu":
        try:
            torch.empty(0, device=device)
        except (RuntimeError, AssertionError) as err:
            raise InputError(f"--device {device!r} cannot be used: {err}", reason="bad_device") from err


def load_model(name_or_path: str, *, device: str | None = None, dtype: str = "auto"):
    """(model, processor) via ``AutoModelForImageTextToText`` / ``AutoProcessor``, in eval mode."""
    import torch

    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}", reason="bad_dtype")
    check_device(device)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
    from rlhfv.data.pretrained import load_model_and_processor

    # one loader for every model rlhfv opens: a missing folder is named at once, no hub retries
    model, processor = load_model_and_processor(name_or_path, dtype=torch_dtype)
    return model.to(device).eval(), processor


def _prompt(processor: Any, question: str) -> str:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def generate_answers(
    model: Any,
    processor: Any,
    images: Sequence[Any],
    questions: Sequence[str],
    batch_size: int = 8,
    *,
    progress: bool = False,
    desc: str = "generate",
    on_batch: Callable[[int, list[str]], None] | None = None,
    **gen_kwargs: Any,
) -> list[str]:
    """One decoded answer per (image, question), generated ``batch_size`` at a time.

    ``images``: PIL images, paths, bytes or base64 strings. ``gen_kwargs`` go to
    ``model.generate`` (see :data:`PRESETS`). Beam search and greedy decoding are
    deterministic, so answers do not depend on ``batch_size`` beyond padding effects.
    ``on_batch(start, answers)`` is called after each batch with the index of its first
    question, so a caller can save answers as they come (an interrupted run keeps them).
    """
    import torch
    from tqdm import tqdm

    if len(images) != len(questions):
        raise ValueError(f"{len(images)} images but {len(questions)} questions")
    if batch_size < 1:
        raise InputError(f"batch size must be 1 or more, got {batch_size}", reason="bad_batch_size")
    tokenizer = getattr(processor, "tokenizer", processor)
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # generation continues from the right edge
    gen_kwargs = {"pad_token_id": tokenizer.pad_token_id, **gen_kwargs}
    answers: list[str] = []
    try:
        starts = range(0, len(questions), batch_size)
        for start in tqdm(starts, desc=desc, unit="batch", disable=not progress):
            batch_images = [[load_image(im)] for im in images[start : start + batch_size]]
            prompts = [_prompt(processor, q) for q in questions[start : start + batch_size]]
            inputs = processor(text=prompts, images=batch_images, return_tensors="pt", padding=True)
            inputs = {
                k: v.to(model.device, dtype=model.dtype if v.is_floating_point() else None)
                if isinstance(v, torch.Tensor)
                else v
                for k, v in inputs.items()
            }
            with torch.inference_mode():
                output = model.generate(**inputs, **gen_kwargs)
            new_tokens = output[:, inputs["input_ids"].shape[1] :]
            texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            batch = [t.strip() for t in texts]
            answers.extend(batch)
            if on_batch is not None:
                on_batch(start, batch)
    finally:
        tokenizer.padding_side = old_side
    return answers


def partial_path(answers_file: str | Path) -> Path:
    """Where answers are saved batch by batch until ``answers_file`` is written: beside it,
    with ``.partial.jsonl`` for its extension.

    >>> partial_path("runs/objhal/answers.jsonl").as_posix(), partial_path("mmhal.answers.json").name
    ('runs/objhal/answers.partial.jsonl', 'mmhal.answers.partial.jsonl')
    """
    return Path(answers_file).with_suffix(".partial.jsonl")


def write_answers(path: str | Path, rows: Sequence[dict[str, Any]]) -> None:
    """All answers to ``path`` (JSONL when it ends in ``.jsonl``, else a JSON list), then
    remove the file :func:`answer_with_model` saved them to batch by batch."""
    with open(path, "w", encoding="utf-8") as f:
        if str(path).endswith(".jsonl"):
            f.writelines(json.dumps(row) + "\n" for row in rows)
        else:
            json.dump(list(rows), f, indent=1)
    partial_path(path).unlink(missing_ok=True)


# fields of a saved answer line besides the item's own (its ids and question)
_SAVED = ("response", "model", "generation")


def _row_key(row: dict[str, Any]) -> str:
    return json.dumps(row, sort_keys=True)


def saved_answers(
    path: str | Path, rows: Sequence[dict[str, Any]], made_with: dict[str, Any]
) -> dict[int, str]:
    """Item index -> answer saved in ``path`` (by :func:`answer_with_model`) for an item with
    the same row (ids and question), made with ``made_with`` (model name and settings);
    nothing when the file is missing or any saved line was made otherwise."""
    if not Path(path).is_file():
        return {}
    index: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        index.setdefault(_row_key(json.loads(json.dumps(row))), []).append(i)
    done: dict[int, str] = {}
    for _, obj in iter_jsonl(path, Problems()):  # a line cut off by a kill is skipped
        if any(obj.get(k) != v for k, v in made_with.items()):
            return {}
        if isinstance(obj.get("response"), str):
            item = {k: v for k, v in obj.items() if k not in _SAVED}
            for i in index.get(_row_key(item), []):
                done.setdefault(i, obj["response"])
    return done


def answer_with_model(
    model: str | Path | Any,
    images: Sequence[Any],
    questions: Sequence[str],
    generation: dict[str, Any],
    batch_size: int = 8,
    device: str | None = None,
    dtype: str = "auto",
    *,
    processor: Any = None,
    save_to: str | Path | None = None,
    rows: Sequence[dict[str, Any]] | None = None,
) -> list[str]:
    """Answer every (image, question) with a progress bar.

    ``model``: a name or path, loaded with :func:`load_model` only when something is left
    to answer, or a loaded model given with its ``processor``. With ``save_to`` (JSONL),
    each batch's answers are appended to it as soon as they are decoded, one line per
    answer: ``rows[i]`` (what identifies item i: its ids and question) with ``response``,
    ``model`` and ``generation``. So an interrupted or failed run keeps them, and a rerun
    with the same model name and settings reads back the answers to unchanged items and
    generates only the rest, saying so on stderr (a loaded model is never resumed: nothing
    says it is the same one; answers made otherwise are overwritten). The caller removes
    ``save_to`` once it has written all answers elsewhere (see :func:`partial_path`).
    """
    rows = rows if rows is not None else [{"question": q} for q in questions]
    if len(rows) != len(questions):
        raise ValueError(f"{len(rows)} rows but {len(questions)} questions")
    named = isinstance(model, (str, Path))
    # what saved answers must have been made with to be reused
    made_with = {"model": str(model), "generation": json.loads(json.dumps(generation))}
    done = saved_answers(save_to, rows, made_with) if save_to is not None and named else {}
    todo = [i for i in range(len(questions)) if i not in done]
    if done:
        print(
            f"rlhfv: resuming: {len(done)} of {len(questions)} answers read from {save_to}"
            " (delete it to generate them again)",
            file=sys.stderr,
        )
    new: list[str] = []
    if todo:
        if named:
            model, processor = load_model(str(model), device=device, dtype=dtype)
        with _appender(save_to, resume=bool(done)) as f:

            def save(start: int, texts: list[str]) -> None:
                if f is not None:
                    for i, text in zip(todo[start : start + len(texts)], texts, strict=True):
                        f.write(json.dumps(dict(rows[i]) | {"response": text} | made_with) + "\n")
                    f.flush()

            new = generate_answers(
                model,
                processor,
                [images[i] for i in todo],
                [questions[i] for i in todo],
                batch_size,
                progress=True,
                on_batch=save,
                **generation,
            )
    answers = done | dict(zip(todo, new, strict=True))
    return [answers[i] for i in range(len(questions))]


@contextlib.contextmanager
def _appender(path: str | Path | None, *, resume: bool) -> Iterator[TextIO | None]:
    """``path`` opened to append to (``resume``) or to overwrite; None for no path."""
    if path is None:
        yield None
        return
    # a line cut off by a kill is skipped when read back; the next one starts on its own line
    cut = resume and not Path(path).read_bytes().endswith(b"\n")
    with open(path, "a" if resume else "w", encoding="utf-8") as f:
        f.write("\n" if cut else "")
        yield f
