"""Annotations -> :class:`rlhfv.data.schema.Correction` records, and writing them out."""

from __future__ import annotations

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


def corrections_for_export(current: list[CurrentCorrection], store: Path) -> list[Correction]:
    """Records to export. Answers marked correct (``corrected == original``) carry no
    preference signal and are not valid records for the data layer: they are left out
    (``rlhfv annotate stats`` counts them)."""
    return [to_correction(c, store) for c in current if not c.is_correct]


def write_corrections(records: list[Correction], out: Path, embed_images: bool = False) -> Path:
    """Write ``records`` with the data layer's writers: parquet for ``*.parquet`` (images
    embedded), else JSONL (images as paths, or base64 with ``embed_images``). Atomic: a
    crash leaves the old file or the new one, never half of one."""
    from rlhfv.data.io import write_jsonl, write_parquet

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp{out.suffix}")
    if out.suffix == ".parquet":
        write_parquet(records, tmp)
    else:
        write_jsonl(records, tmp, embed_images=embed_images)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, out)
    return out
