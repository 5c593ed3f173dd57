"""A simulated annotator that corrects answers the way RLHF-V's annotators do.

It reads an answer against the scene's ground truth and rewrites only the wrong segments,
leaving every other character untouched:

- a wrong colour, count or position: that slot is rewritten from the ground truth (and a
  noun or verb whose grammatical number no longer agrees) - categories ``attribute``,
  ``number``, ``position``;
- an object that is not in the scene: its sentence's object slots are rewritten to
  describe a ground-truth object the answer has not mentioned (category ``object``), or,
  when every object is already mentioned, the sentence is deleted;
- a sentence outside the grammar that names an absent object is deleted (``object``);
- a sentence about an object an earlier sentence already described claims a second one,
  and is treated like an absent object.

Each change is a :class:`~rlhfv.data.schema.ChangedSegment` with its category, as the
annotation app records them, inside a :class:`~rlhfv.data.schema.Correction`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rlhfv.data.schema import ChangedSegment, Correction
from rlhfv.scenes.language import SLOT_CATEGORY, TEMPLATES, Claim, parse_answer, render_slot
from rlhfv.scenes.world import Scene, SceneObject

ANNOTATOR_NAME = "scene-world-simulated"


@dataclass(frozen=True)
class _Edit:
    start: int
    end: int
    text: str
    category: str


def _slot_names(template_index: int) -> dict[str, str]:
    """Group name in the parse (N, C, O, P, BE, V) -> slot as written in the template."""
    names = {}
    for m in re.finditer(r"\{(N|C|O|P|BE|V:\w+)\}", TEMPLATES[template_index]):
        slot = m.group(1)
        names["V" if slot.startswith("V:") else slot] = slot
    return names


def _match_case(new: str, old: str) -> str:
    return new[0].upper() + new[1:] if old[:1].isupper() else new


def _rewrite_claim(answer: str, claim: Claim, truth: SceneObject, category: str | None) -> list[_Edit]:
    """Edits making ``claim`` state ``truth``; ``category`` overrides the per-slot one."""
    edits = []
    for group, slot in _slot_names(claim.template).items():
        start, end = claim.spans[group]
        old = answer[start:end]
        new = render_slot(slot, truth, count_style=old if group == "N" else None)
        if new.lower() != " ".join(old.lower().split()):
            edits.append(_Edit(start, end, _match_case(new, old), category or SLOT_CATEGORY[group]))
    return edits


def delete_sentence(answer: str, start: int, end: int) -> _Edit:
    """The edit deleting the sentence ``answer[start:end]`` (category ``object``)."""
    # take the following whitespace with it (or the preceding one at the end of the answer)
    stop = end
    while stop < len(answer) and answer[stop].isspace():
        stop += 1
    if stop == len(answer):
        stop = end
        while start > 0 and answer[start - 1].isspace():
            start -= 1
    return _Edit(start, stop, "", "object")


def correction_edits(answer: str, scene: Scene) -> list[_Edit]:
    """The annotator's edits to ``answer`` given the ground truth ``scene`` (sorted, disjoint)."""
    sentences = parse_answer(answer)
    mentioned = {c.cls for s in sentences for c in s.claims}
    unmentioned = [o for o in scene.objects if o.cls not in mentioned]
    edits: list[_Edit] = []
    described: set[str] = set()
    for sentence in sentences:
        for claim in sentence.claims:
            # a second sentence about an object already described claims an extra one
            truth = scene.get(claim.cls) if claim.cls not in described else None
            described.add(claim.cls)
            if truth is not None:
                if claim.template is not None:
                    edits.extend(_rewrite_claim(answer, claim, truth, None))
            elif claim.template is not None and unmentioned:
                edits.extend(_rewrite_claim(answer, claim, unmentioned.pop(0), "object"))
            else:
                edits.append(delete_sentence(answer, sentence.start, sentence.end))
                break  # the whole sentence is gone
    return sorted_edits(edits)


def sorted_edits(edits: list[_Edit]) -> list[_Edit]:
    """``edits`` in order, overlapping deletions merged into one."""
    merged: list[_Edit] = []
    for e in sorted(edits, key=lambda e: e.start):
        # two deleted sentences at the end may both claim the space between them
        if merged and e.start < merged[-1].end:
            merged[-1] = _Edit(merged[-1].start, max(e.end, merged[-1].end), "", "object")
        else:
            merged.append(e)
    return merged


def apply_edits(answer: str, edits: list[_Edit]) -> tuple[str, list[ChangedSegment]]:
    """The corrected text and one ChangedSegment per edit (spans on both sides)."""
    out, segments, pos, shift = [], [], 0, 0
    for e in edits:
        out.append(answer[pos : e.start])
        out.append(e.text)
        c0 = e.start + shift
        kind = "delete" if not e.text else "insert" if e.start == e.end else "replace"
        segments.append(ChangedSegment(kind, e.start, e.end, c0, c0 + len(e.text), e.category))
        shift += len(e.text) - (e.end - e.start)
        pos = e.end
    out.append(answer[pos:])
    return "".join(out), segments


def annotate(
    answer: str,
    scene: Scene,
    *,
    image: str | bytes,
    question: str,
    id: str | None = None,
    source: dict | None = None,
) -> Correction:
    """The annotator's :class:`Correction` of ``answer`` (``corrected == original`` when all is right)."""
    corrected, segments = apply_edits(answer, correction_edits(answer, scene))
    return Correction(
        image=image,
        question=question,
        original=answer,
        corrected=corrected,
        annotator=ANNOTATOR_NAME,
        segments=segments,
        source={"world": "scenes", "scene": scene.to_dict(), **(source or {})},
        id=id,
    )
