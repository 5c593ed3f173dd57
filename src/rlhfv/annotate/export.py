"""Annotations -> :class:`rlhfv.data.schema.Correction` records, and writing them out."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from rlhfv.annotate.service import CurrentCorrection
from rlhfv.data.io import check_correction
from rlhfv.data.schema import ChangedSegment, Correction
from rlhfv.errors import InputError

IMPORTED_CLASHES = "imported_fields"


def to_correction(c: CurrentCorrection, store: Path) -> Correction:
    """One current submission as a record: the image as an absolute path into the store,
    the annotator's labelled segments as character spans on both answers."""
    record_id = c.external_id if c.n_annotations == 1 else f"{c.external_id}@{c.annotator}"
    app = {
        "task_id": c.task_id,
        "slot": c.slot,
        "double_annotated": c.n_annotations > 1,
        "review_status": c.status,
        "marked_correct": c.is_correct,
        "submitted_at": c.submitted_at,
    }
    # the imported row's own fields of these names are kept, under IMPORTED_CLASHES
    clashes = {k: c.source[k] for k in (*app, IMPORTED_CLASHES) if k in c.source}
    return Correction(
        image=str((store / c.image_name).resolve()),
        question=c.question,
        original=c.answer,
        corrected=c.corrected,
        annotator=c.annotator,
        segments=[ChangedSegment.from_dict(d) for d in c.segments],
        source={**c.source, **app, **({IMPORTED_CLASHES: clashes} if clashes else {})},
        id=record_id,
    )


def corrections_for_export(
    current: list[CurrentCorrection], store: Path
) -> tuple[list[Correction], list[str]]:
    """Records to export, and a line for each one left out because the data layer's own
    check refuses it (``check_correction``: empty or unchanged answer, missing image):
    one such row would make readers refuse the whole file. Answers marked correct
    (``corrected == original``) carry no preference signal either: they are left out
    silently (``rlhfv annotate stats`` counts them)."""
    records, left_out = [], []
    for c in current:
        if c.is_correct:
            continue
        record = to_correction(c, store)
        try:
            records.append(check_correction(record))
        except InputError as err:
            left_out.append(f"left out {record.id}: {err}")
    return records, left_out


def write_corrections(records: list[Correction], out: Path, embed_images: bool = False) -> Path:
    """Write ``records`` with the data layer's writers: parquet for ``*.parquet`` (images
    embedded), else JSONL (images as paths, or base64 with ``embed_images``). Atomic: a
    crash leaves the old file or the new one, never half of one; a failed write removes
    its temporary file (an OSError becomes an InputError naming ``out``)."""
    from rlhfv.data.io import write_jsonl, write_parquet

    out = Path(out)
    if out.is_dir():
        raise InputError("is a directory: name a file", path=str(out), reason="bad_output")
    tmp = out.with_name(f".{out.stem}.tmp{out.suffix}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix == ".parquet":
            write_parquet(records, tmp)
        else:
            write_jsonl(records, tmp, embed_images=embed_images)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException as err:
        with contextlib.suppress(OSError):  # e.g. its folder could not be made
            tmp.unlink(missing_ok=True)
        if isinstance(err, OSError):
            reason = err.strerror or str(err)
            raise InputError(f"cannot write ({reason})", path=str(out), reason="bad_output") from err
        raise
    return out
