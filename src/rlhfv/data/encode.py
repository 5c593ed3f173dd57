"""Encode one :class:`Correction` for any Hugging Face vision-language processor.

The prompt is the question in a user turn with one image part, rendered by the
processor's own chat template (``add_generation_prompt=True``); the processor then runs
on image + prompt, so the image placeholder is expanded exactly as the model expects
(LLaVA's 576 ``<image>`` tokens, LLaVA-NeXT's resolution-dependent count, Qwen2-VL's
``<|image_pad|>`` grid, Idefics3's tiled ``<row_i_col_j>`` blocks...). Each answer is
rendered as the template's assistant turn (what follows the prompt, as TRL does: the
template's own spacing and end-of-turn token come with it), tokenised on its own with
character offsets, and ends with the tokenizer's eos token (appended when the turn does
not hold it). All of it is labelled: the model learns to stop.

The result is one prepared row (see docs/architecture.md): token ids for chosen and
rejected, the index of the first answer token, and a 0/1 "changed" mask per token.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rlhfv.data.diff import changed_segments
from rlhfv.data.schema import ChangedSegment, Correction
from rlhfv.data.weights import ALIGNMENTS, CHANGE_KINDS, changed_token_mask, reference_changed_masks
from rlhfv.errors import InputError


def image_bytes(correction: Correction, *, path: str | None = None, row: int | None = None) -> bytes:
    """The encoded image bytes of ``correction`` (read from its path when it has one)."""
    if isinstance(correction.image, bytes | bytearray):
        return bytes(correction.image)
    try:
        return Path(correction.image).read_bytes()
    except OSError as err:
        raise InputError(
            f"cannot read image {correction.image}: {err.strerror or err}",
            path=path,
            row=row,
            field="image",
            reason="missing_image",
        ) from None


def unreadable_image(
    err: Exception, *, image: str | None = None, path: str | None = None, row: int | None = None
) -> InputError:
    """The error for image bytes Pillow cannot decode (:func:`unreadable_image_message`)."""
    from rlhfv.data.images import unreadable_image_message

    return InputError(
        unreadable_image_message(err, image),
        path=path,
        row=row,
        field="image",
        reason="unreadable_image",
    )


def open_image(data: bytes, *, path: str | None = None, row: int | None = None, image: str | None = None):
    """Decode image bytes to an RGB ``PIL.Image``; undecodable bytes are an :class:`InputError`
    (``image``: the file they came from, for the message)."""
    from rlhfv.data.images import UNREADABLE_IMAGE, decode_image

    try:
        return decode_image(data).convert("RGB")
    except UNREADABLE_IMAGE as err:
        raise unreadable_image(err, image=image, path=path, row=row) from None


def image_token(processor) -> str | None:
    """The processor's image placeholder string (``"<image>"``, ``"<|image_pad|>"``...), if any."""
    return getattr(processor, "image_token", None) or getattr(
        getattr(processor, "tokenizer", None), "image_token", None
    )


def special_token_texts(processor) -> list[str]:
    """The strings the processor's tokenizer turns into special tokens wherever they occur in
    text (eos ``"</s>"``, ``"<|im_end|>"``, padding, the image placeholder...)."""
    tokenizer = processor.tokenizer
    texts = set(getattr(tokenizer, "all_special_tokens", None) or [])
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    texts.update(str(t) for t in added.values() if getattr(t, "special", False))
    texts.add(image_token(processor) or "")
    return sorted(t for t in texts if t.strip())


def _user_turn(processor, question: str) -> list[dict[str, Any]]:
    token = image_token(processor)
    for placeholder in {token, "<image>"} - {None}:
        question = question.replace(placeholder, "")
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question.strip()}]}]


def render_prompt(processor, question: str) -> str:
    """The question as a user turn with one image, through the processor's chat template.

    A placeholder already typed in the question (LLaVA-style ``"<image>\\n..."`` data) is
    removed first: the template adds the one image.
    """
    return processor.apply_chat_template(
        _user_turn(processor, question), add_generation_prompt=True, tokenize=False
    )


def completion_text(processor, question: str, answer: str) -> tuple[str, int]:
    """The assistant turn as the chat template writes it after the prompt, and where ``answer`` starts in it.

    As TRL does for conversational data: render prompt + assistant turn and keep what
    follows the rendered prompt, so the answer carries the template's own framing (a
    leading space, an end-of-turn token such as ``<|im_end|>``). A template that trims the
    message (Gemma's ``| trim``) keeps its framing too: the answer's outer whitespace is
    dropped as the template drops it, and the offset returned is where ``answer[0]`` would
    be (negative when leading whitespace was trimmed). Falls back to the bare answer when
    the template does not extend the prompt or rewrites the answer otherwise.
    """
    text, at, _, _ = _completion(processor, question, answer)
    return text, at


def _completion(processor, question: str, answer: str) -> tuple[str, int, int, int]:
    """``(text, at, lo, hi)``: :func:`completion_text`, and the part ``answer[lo:hi]`` that the
    text holds verbatim, at ``text[at + lo : at + hi]``."""
    bare = (answer, 0, 0, len(answer))
    prompt = render_prompt(processor, question)
    turns = [
        *_user_turn(processor, question),
        {"role": "assistant", "content": [{"type": "text", "text": answer}]},
    ]
    try:
        full = processor.apply_chat_template(turns, tokenize=False)
    except Exception:  # a template that cannot render an assistant turn this way
        return bare
    if not full.startswith(prompt):
        return bare
    completion = full[len(prompt) :]
    at = completion.find(answer)
    if at >= 0:
        return completion, at, 0, len(answer)
    kept = answer.strip()  # a trimming template
    at = completion.find(kept) if kept else -1
    if at < 0:
        return bare
    lo = len(answer) - len(answer.lstrip())
    return completion, at - lo, lo, lo + len(kept)


def answer_tokens(
    processor, question: str, answer: str, *, offsets: bool = True
) -> tuple[list[int], list[tuple[int, int]] | None]:
    """Token ids of the assistant turn (ending with eos) and each token's span in ``answer``.

    Tokens of the template's framing around the answer get the empty span ``(0, 0)``;
    eos is appended unless the turn already contains it. ``offsets=False`` gives no spans
    (``None``): only the paper alignment needs them, and Python (slow) tokenizers have none.
    """
    tokenizer = processor.tokenizer
    text, at, lo, hi = _completion(processor, question, answer)
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=offsets)
    except NotImplementedError:  # older transformers' Python tokenizers refuse offsets
        enc = {}  # (newer ones ignore the request): either way, no offset_mapping
    if offsets and "offset_mapping" not in enc:
        raise no_offsets_error(processor)
    ids = list(enc["input_ids"])
    spans = None
    if offsets:
        spans = []
        for s, e in enc["offset_mapping"]:
            s, e = max(s, at + lo) - at, min(e, at + hi) - at
            spans.append((s, e) if s < e else (0, 0))
    if tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
        if spans is not None:
            spans.append((0, 0))
    return ids, spans


def processor_label(processor, name: str | None = None) -> str:
    """What to call ``processor`` in a message: the name it was loaded by, else its folder or class."""
    return str(
        name
        or getattr(processor, "name_or_path", None)
        or getattr(getattr(processor, "tokenizer", None), "name_or_path", None)
        or type(processor).__name__
    )


def has_offsets(tokenizer) -> bool:
    """Whether ``tokenizer`` maps tokens to character offsets (fast, Rust-backed tokenizers do)."""
    try:
        return "offset_mapping" in tokenizer("a", add_special_tokens=False, return_offsets_mapping=True)
    except NotImplementedError:
        return False


def no_offsets_error(processor, name: str | None = None) -> InputError:
    """The error for ``--alignment paper`` with a tokenizer that gives no character offsets."""
    return InputError(
        f"its tokenizer ({type(processor.tokenizer).__name__}) gives no character offsets, which "
        "--alignment paper needs to map changed spans onto tokens; use a fast tokenizer "
        "(a tokenizer.json in the processor folder) or --alignment reference",
        path=processor_label(processor, name),
        field="--processor",
        reason="no_offsets",
    )


def _prompt_text(processor, question: str) -> tuple[str, bool]:
    prompt = render_prompt(processor, question)
    bos = processor.tokenizer.bos_token
    # templates that write the bos token themselves must not get a second one
    return prompt, not (bos and prompt.startswith(bos))


def prompt_ids(
    processor, image, question: str, *, path: str | None = None, row: int | None = None
) -> list[int]:
    """Token ids of the rendered prompt with the image placeholder(s) expanded by the processor.

    An image the processor refuses (Qwen2-VL: an aspect ratio over 200) is an :class:`InputError`
    on the row's ``image`` field, reason ``bad_image``.
    """
    prompt, add_special = _prompt_text(processor, question)
    try:
        out = processor(images=[image], text=[prompt], add_special_tokens=add_special)
    except ValueError as err:
        if not _refuses_image(processor, image):
            raise  # the processor fails on any input: a setup problem, not this row's
        raise InputError(
            f"the processor refuses this {image.width}x{image.height} image ({err})",
            path=path,
            row=row,
            field="image",
            reason="bad_image",
        ) from None
    ids = out["input_ids"][0]
    return ids.tolist() if hasattr(ids, "tolist") else list(ids)


def _refuses_image(processor, image) -> bool:
    """Whether the processor's image processor alone raises ``ValueError`` on ``image``."""
    image_processor = getattr(processor, "image_processor", None)
    if image_processor is None:
        return False  # nothing to blame the image on: the processor itself fails
    try:
        image_processor(images=[image])
    except ValueError:
        return True
    return False


def image_size(
    data: bytes, *, path: str | None = None, row: int | None = None, image: str | None = None
) -> tuple[int, int]:
    """``(width, height)`` of encoded image bytes, after checking they decode (JPEGs at 1/8 scale)."""
    from rlhfv.data.images import UNREADABLE_IMAGE, decoded_size

    try:
        return decoded_size(data)
    except UNREADABLE_IMAGE as err:
        raise unreadable_image(err, image=image, path=path, row=row) from None


class PromptEncoder:
    """:func:`prompt_ids` with the image placeholder's expansion cached per image size.

    Running the processor's image pipeline for every row only to count image tokens is
    most of ``prepare``'s time. The expansion of the placeholder depends on the image's
    size, not its pixels (LLaVA: fixed; LLaVA-NeXT: its grid; Qwen2-VL: its resized
    patch grid; Idefics3: its tiles), so for each new size the processor runs in full
    and the expanded span is learnt; later prompts with an image of that size are
    tokenised as text and get the span spliced in. The first reuse for each size and
    every ``check_every``-th call are checked against the full processor; any mismatch
    turns the cache off for good (``self.enabled``), so results always equal
    :func:`prompt_ids`.
    """

    def __init__(self, processor, *, check_every: int = 64):
        self.processor = processor
        self.check_every = check_every
        self.enabled = True
        self.calls = 0
        self.full_runs = 0
        self._expansions: dict[tuple[int, int], tuple[list[int], list[int]]] = {}
        self._checked: set[tuple[int, int]] = set()
        tokenizer = processor.tokenizer
        token = image_token(processor)
        self._image_id = tokenizer.convert_tokens_to_ids(token) if token else None

    def __call__(
        self,
        data: bytes,
        question: str,
        *,
        path: str | None = None,
        row: int | None = None,
        image: str | None = None,
    ) -> list[int]:
        self.calls += 1
        size = image_size(data, path=path, row=row, image=image)
        prompt, add_special = _prompt_text(self.processor, question)
        cached = self._expansions.get(size) if self.enabled else None
        fast = self._splice(prompt, add_special, cached) if cached else None
        must_check = size not in self._checked or self.calls % self.check_every == 0
        if fast is not None and not must_check:
            return fast
        full = self._full(data, question, path, row, image)
        if fast is not None:
            self._checked.add(size)
            if fast != full:
                self.enabled = False  # this processor's expansion is not a function of size
        elif self.enabled and size not in self._expansions:
            learnt = self._learn(prompt, add_special, full)
            if learnt is None:
                self.enabled = False
            else:
                self._expansions[size] = learnt
        return full

    def _full(self, data, question, path, row, image=None) -> list[int]:  # noqa: ANN001
        self.full_runs += 1
        return prompt_ids(
            self.processor, open_image(data, path=path, row=row, image=image), question, path=path, row=row
        )

    def _raw(self, prompt: str, add_special: bool) -> list[int]:
        return list(self.processor.tokenizer(prompt, add_special_tokens=add_special)["input_ids"])

    def _learn(self, prompt: str, add_special: bool, full: list[int]) -> tuple[list[int], list[int]] | None:
        """``(raw span, expanded span)``: raw = A + R + B and full = A + E + B, R around the placeholder."""
        raw = self._raw(prompt, add_special)
        if self._image_id is None or raw.count(self._image_id) != 1:
            return None
        at = raw.index(self._image_id)
        after = len(raw) - at - 1
        if full[:at] != raw[:at] or (after and full[-after:] != raw[-after:]):
            return None
        return [self._image_id], full[at : len(full) - after]

    def _splice(
        self, prompt: str, add_special: bool, learnt: tuple[list[int], list[int]]
    ) -> list[int] | None:
        raw = self._raw(prompt, add_special)
        if raw.count(self._image_id) != 1:
            return None
        at = raw.index(self._image_id)
        return raw[:at] + learnt[1] + raw[at + 1 :]


def _kind_of(seg: ChangedSegment) -> str:
    """The kind a segment's spans make: ``insert`` (original span empty), ``delete`` (corrected
    span empty), ``replace`` (both non-empty); ``""`` when both are empty."""
    o, c = seg.original_end > seg.original_start, seg.corrected_end > seg.corrected_start
    return "replace" if o and c else "delete" if o else "insert" if c else ""


def _clip(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def check_segments(
    segments: Iterable[ChangedSegment], original: str, corrected: str, *, path=None, row=None
) -> list[ChangedSegment]:
    """Annotator segments must be a complete diff of the two answers, else :class:`InputError`
    (field ``segments``, reason ``bad_segments``).

    Each segment lies inside both texts and has the kind its spans make (``replace``: both
    non-empty; ``insert``: original span empty; ``delete``: corrected span empty); in order
    of their offsets they do not overlap, and the text between them is the same on both
    sides. So :func:`~rlhfv.data.diff.apply_segments` turns ``original`` into ``corrected``
    and back, each segment at its own offsets. Offsets are Python string indices (code
    points): UTF-16 or byte offsets from another tool are off after any emoji or accent.
    """
    checked = list(segments)

    def bad(message: str) -> InputError:
        return InputError(message, path=path, row=row, field="segments", reason="bad_segments")

    for seg in checked:
        ok = (
            seg.kind in CHANGE_KINDS
            and 0 <= seg.original_start <= seg.original_end <= len(original)
            and 0 <= seg.corrected_start <= seg.corrected_end <= len(corrected)
        )
        if not ok:
            raise bad(f"segment {seg.to_dict()} does not fit the answers")
        if seg.kind != _kind_of(seg):
            raise bad(
                f"segment {seg.to_dict()} is a {seg.kind} but covers {_clip(seg.original_text(original))}"
                f" -> {_clip(seg.corrected_text(corrected))}"
            )
    o_prev = c_prev = 0
    for seg in sorted(checked, key=lambda s: (s.original_start, s.corrected_start)):
        if seg.original_start < o_prev or seg.corrected_start < c_prev:
            raise bad(f"segment {seg.to_dict()} overlaps the one before it")
        a, b = original[o_prev : seg.original_start], corrected[c_prev : seg.corrected_start]
        if a != b:
            raise bad(_stale(seg, a, b, original, corrected))
        o_prev, c_prev = seg.original_end, seg.corrected_end
    a, b = original[o_prev:], corrected[c_prev:]
    if a != b:
        raise bad(_stale(None, a, b, original, corrected))
    return checked


def _stale(seg: ChangedSegment | None, a: str, b: str, original: str, corrected: str) -> str:
    where = (
        f"before the {seg.kind} at original[{seg.original_start}:{seg.original_end}] -> "
        f"corrected[{seg.corrected_start}:{seg.corrected_end}] ({_clip(seg.original_text(original))} -> "
        f"{_clip(seg.corrected_text(corrected))})"
        if seg is not None
        else "after the last segment"
    )
    return (
        "segments do not turn the original answer into the corrected one: "
        f"{where} the original has {_clip(a)} where the corrected has {_clip(b)}; offsets are "
        "Python string indices (code points), not UTF-16 units or bytes, and every change needs a segment"
    )


def _first_special(text: Any, specials: Iterable[str]) -> tuple[int, str] | None:
    """``(at, token)``: the first of ``specials`` in ``text`` (a string) and where; None if none."""
    if not isinstance(text, str):
        return None
    found = [(text.find(t), t) for t in specials if t in text]
    return min(found) if found else None


def encode_correction(
    correction: Correction,
    processor,
    *,
    alignment: str = "paper",
    kinds: Iterable[str] = CHANGE_KINDS,
    max_length: int | None = None,
    path: str | None = None,
    row: int | None = None,
    prompt_encoder: PromptEncoder | None = None,
) -> dict[str, Any]:
    """One prepared row for ``correction``.

    Keys: ``id``, ``image`` (bytes), ``chosen_input_ids`` / ``rejected_input_ids``
    (prompt with expanded image tokens + answer + eos), ``chosen_labels_start`` /
    ``rejected_labels_start`` (first answer token), ``chosen_changed`` /
    ``rejected_changed`` (0/1 per token; always 0 before the labels start),
    ``num_segments`` (changed segments between the two answers).

    ``alignment="paper"`` marks answer tokens overlapping a changed segment of a counted
    kind (the annotator's segments when the record has them, else
    :func:`changed_segments`); ``"reference"`` marks what the RLHF-V reference code's
    token-id diff marks (``kinds`` is then ignored: it counts replacements only).
    ``prompt_encoder`` (a :class:`PromptEncoder` for ``processor``) makes a long run faster
    with identical results. Raises :class:`InputError` for an unreadable image or one the
    processor refuses, an answer containing the image placeholder (reason
    ``placeholder_in_answer``) or another special token's text such as ``"</s>"``
    (``special_token_in_answer``), a question containing a special token's text other than
    the image placeholder, which the prompt removes (``special_token_in_question``), a
    sequence over ``max_length``, or ``alignment="paper"`` with a tokenizer that gives no
    offsets.
    """
    if alignment not in ALIGNMENTS:
        raise ValueError(f"unknown alignment {alignment!r}; choose one of {ALIGNMENTS}")
    placeholder = image_token(processor)
    specials = special_token_texts(processor)
    for field, text in (("corrected", correction.corrected), ("original", correction.original)):
        if placeholder and isinstance(text, str) and placeholder in text:
            # it would become an image token the model tries to fill with image features
            raise InputError(
                f"answer contains the image placeholder {placeholder!r}",
                path=path,
                row=row,
                field=field,
                reason="placeholder_in_answer",
            )
        found = _first_special(text, specials)
        if found:
            at, token = found
            # the tokenizer reads it as that one special token (an end of turn, a
            # pad...), not as the characters the annotator wrote
            raise InputError(
                f"answer contains the tokenizer's special token {token!r} (at character {at}), which "
                "would be read as that token, not as text; remove it from the answer",
                path=path,
                row=row,
                field=field,
                reason="special_token_in_answer",
            )
    # a placeholder typed in the question is removed by the prompt (see render_prompt)
    found = _first_special(correction.question, [t for t in specials if t not in {placeholder, "<image>"}])
    if found:
        at, token = found
        raise InputError(
            f"question contains the tokenizer's special token {token!r} (at character {at}), which "
            "would be read as that token in the prompt, not as text; remove it from the question",
            path=path,
            row=row,
            field="question",
            reason="special_token_in_question",
        )
    data = image_bytes(correction, path=path, row=row)
    image = None if isinstance(correction.image, bytes | bytearray) else str(correction.image)
    if prompt_encoder is not None:
        prompt = prompt_encoder(data, correction.question, path=path, row=row, image=image)
    else:
        decoded = open_image(data, path=path, row=row, image=image)
        prompt = prompt_ids(processor, decoded, correction.question, path=path, row=row)
    start = len(prompt)
    if correction.segments is not None:
        segments = check_segments(
            correction.segments, correction.original, correction.corrected, path=path, row=row
        )
    else:
        segments = changed_segments(correction.original, correction.corrected)

    sides: dict[str, tuple[list[int], list[int]]] = {}
    for name, side, text, field in (
        ("chosen", "corrected", correction.corrected, "corrected"),
        ("rejected", "original", correction.original, "original"),
    ):
        answer_ids, spans = answer_tokens(processor, correction.question, text, offsets=alignment == "paper")
        ids = [*prompt, *answer_ids]
        if max_length is not None and len(ids) > max_length:
            raise InputError(
                f"{len(ids)} tokens with the prompt, over the limit of {max_length}",
                path=path,
                row=row,
                field=field,
                reason="too_long",
            )
        if alignment == "paper":
            changed = [0] * start + changed_token_mask(spans, text, segments, side, kinds)
        else:
            changed = []  # filled below from both sides
        sides[name] = (ids, changed)

    if alignment == "reference":
        rejected, chosen = reference_changed_masks(sides["rejected"][0], sides["chosen"][0])
        # the reference weights only positions that carry labels: the answer (and eos)
        sides["rejected"] = (sides["rejected"][0], [0] * start + rejected[start:])
        sides["chosen"] = (sides["chosen"][0], [0] * start + chosen[start:])

    return {
        "id": correction.id if correction.id is not None else (str(row) if row is not None else None),
        "image": data,
        "chosen_input_ids": sides["chosen"][0],
        "rejected_input_ids": sides["rejected"][0],
        "chosen_labels_start": start,
        "rejected_labels_start": start,
        "chosen_changed": sides["chosen"][1],
        "rejected_changed": sides["rejected"][1],
        "num_segments": len(segments),
    }
