"""Annotations -> :class:`rlhfv.data.schema.Correction` records, and writing them out."""

from __future__ import annotations

import json
import os
from pathlib import Path

from rlhfv.annotate.service import CurrentCorrection
from rlhfv.data.schema import ChangedSegment, Correction


def to_correction(c: CurrentCorrection, store: Path) -> Correction:
    """One current submission as a record: the image as an absolute path into the store,
    the annotator's labelled segments as character spans on both answers."""
    record_id = c.external_id if c.n_annotations == 1 else f"{c.external_id}@{c.annotator}"
    return Correction(
        image=str((store / c.image_name).resolve()),
        question=c.question,
        original=c.answer,
        corrected=c.corrected,
        annotator=c.annotator,
        segments=[ChangedSegment.from_dict(d) for d in c.segments],
        source={
            **c.source,
            "task_id": c.task_id,
            "slot": c.slot,
            "double_annotated": c.n_annotations > 1,
            "review_status": c.status,
            "marked_correct": c.is_correct,
            "submitted_at": c.submitted_at,
        },
        id=record_id,
    )


def corrections_for_export(
    current: list[CurrentCorrection], store: Path, include_correct: bool = False
) -> list[Correction]:
    """Records to export. Answers marked correct have ``corrected == original`` and carry
    no preference signal, so they are left out unless ``include_correct``."""
    return [to_correction(c, store) for c in current if include_correct or not c.is_correct]


def correction_to_json(record: Correction) -> dict:
    # TODO(data layer): replace with rlhfv.data.io's writer once it lands
    return {
        "id": record.id,
        "image": record.image,
        "question": record.question,
        "original": record.original,
        "corrected": record.corrected,
        "annotator": record.annotator,
        "segments": None if record.segments is None else [s.to_dict() for s in record.segments],
        "source": record.source,
    }


def write_corrections(records: list[Correction], out: Path) -> Path:
    """Write ``records`` to ``out`` (JSONL), atomically: a crash leaves the old file or the new one."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(correction_to_json(record), ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out)
    return out
