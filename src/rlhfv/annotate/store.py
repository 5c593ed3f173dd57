"""The image store and the import of model generations.

Images are copied into one directory under a content-addressed name
(``<sha256>.<ext>``), after Pillow has checked that they are images of an allowed
format. The server only ever opens names matching that pattern, resolved inside the
store, so no request can reach another file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import select

from rlhfv.annotate.db import Assignment, Database, Task, text_problem
from rlhfv.errors import InputError

IMAGE_FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif"}
MEDIA_TYPES = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp", "gif": "image/gif"}
_NAME = re.compile(r"^[0-9a-f]{64}\.(jpg|png|webp|gif)$")
MAX_IMAGE_BYTES = 50 * 2**20
MAX_TEXT_CHARS = 20_000


def store_image(store: Path, data: bytes, *, image: str | Path | None = None) -> str:
    """Validate ``data`` as an image and copy it into ``store``; its store name
    (``image``: the file the bytes came from, named in the error)."""
    from rlhfv.data.images import UNREADABLE_IMAGE, decode_image, unreadable_image_message

    if len(data) > MAX_IMAGE_BYTES:
        raise ValueError(f"image is larger than {MAX_IMAGE_BYTES // 2**20} MiB")
    try:
        # every pixel, as the annotator's browser and `rlhfv data prepare` will decode them
        with decode_image(data) as im:
            fmt = im.format
    except UNREADABLE_IMAGE as err:
        raise ValueError(unreadable_image_message(err, image)) from err
    if fmt not in IMAGE_FORMATS:
        raise ValueError(f"image format {fmt} is not one of {', '.join(IMAGE_FORMATS)}")
    name = f"{hashlib.sha256(data).hexdigest()}.{IMAGE_FORMATS[fmt]}"
    store.mkdir(parents=True, exist_ok=True)
    target = store / name
    if not target.exists():
        tmp = store / f".{name}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    return name


def image_file(store: Path, name: str) -> Path | None:
    """The file for a store name, or None when the name is not a store name or escapes it."""
    if not _NAME.match(name):
        return None
    root = store.resolve()
    path = (root / name).resolve()
    if path.parent != root or not path.is_file():
        return None
    return path


def _image_bytes(value: Any, base: Path, where: dict) -> tuple[bytes, Path | None]:
    """Image bytes from a path (relative to the input file), a ``data:image/...;base64,`` URI,
    raw bytes or ``{bytes, path}``, and the file they were read from (None for bytes)."""
    if isinstance(value, dict):
        data = value.get("bytes")
        if data:
            if not isinstance(data, (bytes, bytearray)):  # JSON has no bytes: a string is not the image
                raise InputError(
                    f"image bytes must be binary, not {type(data).__name__}: "
                    "in JSONL give a path or a data:image/...;base64,... URI",
                    field="image",
                    reason="bad_image",
                    **where,
                )
            return bytes(data), None
        value = value.get("path")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value), None
    if not isinstance(value, str) or not value:
        raise InputError("image must be a path or image bytes", field="image", reason="bad_image", **where)
    if value.startswith("data:"):  # JSONL has no bytes: embedded images come as data URIs, as in rlhfv data
        from rlhfv.data.images import base64_image

        try:
            return base64_image(value), None
        except ValueError as err:
            raise InputError(
                f"invalid base64 in the data URI ({err})", field="image", reason="bad_image", **where
            ) from None
    from rlhfv.data.images import is_image_file

    path = Path(value).expanduser()
    path = path if path.is_absolute() else base / path
    if not is_image_file(str(path)):  # also False for bare base64, which no file name can hold
        if len(value) > 255:  # no file name is this long; don't echo the whole value
            message = "image is neither a file path nor a data:image/...;base64,... URI"
        else:
            message = f"image file not found: {path}"
        raise InputError(message, field="image", reason="missing_image", **where)
    if path.stat().st_size > MAX_IMAGE_BYTES:
        raise InputError("image file too large", field="image", reason="bad_image", **where)
    return path.read_bytes(), path


def read_generations(path: Path) -> Iterator[tuple[int, dict]]:
    """Rows of a JSONL or parquet file of model generations, numbered from 1."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise InputError("no such file", path=str(path), reason="missing_file")
    if suffix in (".jsonl", ".json"):
        from rlhfv.data.io import json_line, jsonl_lines

        with open(path, "rb") as f:
            for row_no, line in jsonl_lines(f):
                row = json_line(line, str(path), row_no)
                if not isinstance(row, dict):
                    raise InputError(
                        "a row must be a JSON object", path=str(path), row=row_no, reason="malformed_json"
                    )
                yield row_no, row
    elif suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        row_no = 0
        try:
            batches = pq.ParquetFile(path).iter_batches(batch_size=256)
            for batch in batches:
                for row in batch.to_pylist():
                    row_no += 1
                    yield row_no, row
        except (pa.ArrowException, OSError) as err:
            message = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise InputError(
                f"not a readable parquet file ({message})", path=str(path), reason="bad_parquet"
            ) from err
    else:
        raise InputError("expected a .jsonl or .parquet file", path=str(path), reason="bad_format")


def import_generations(
    db: Database, path: Path, store: Path, double_share: float = 0.0, batch_size: int = 256
) -> dict[str, int]:
    """Add each row (``image``, ``question``, ``answer``, optional ``id`` and other fields
    kept as source metadata) as a task; rows whose id is already present are skipped.

    The file is checked row by row; a bad row stops the import with an ``InputError``
    naming it, after the batches before it were committed (a rerun skips those).
    A task is double-annotated when ``sha256(id)`` mapped to [0, 1) is below
    ``double_share``: the same tasks on every run, independent of row order.
    """
    if not 0.0 <= double_share <= 1.0:
        raise InputError("must be in [0, 1]", field="--double-share", reason="bad_option")
    path = Path(path)
    try:
        Path(store).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        reason = "a file is in the way" if Path(store).is_file() else err.strerror or str(err)
        raise InputError(
            f"cannot create the image store ({reason})", path=str(store), reason="bad_store"
        ) from err
    counts = {"added": 0, "skipped": 0}
    batch: list[Task] = []
    for row_no, row in read_generations(path):
        batch.append(_task_from_row(row, path, row_no, store, double_share))
        if len(batch) >= batch_size:
            _add_tasks(db, batch, counts)
            batch = []
    _add_tasks(db, batch, counts)
    return counts


def _task_from_row(row: dict, path: Path, row_no: int, store: Path, double_share: float) -> Task:
    where = {"path": str(path), "row": row_no}
    for field in ("question", "answer"):
        value = row.get(field)
        if not isinstance(value, str) or not value.strip():
            raise InputError("must be a non-empty string", field=field, reason=f"empty_{field}", **where)
        if len(value) > MAX_TEXT_CHARS:
            raise InputError(
                f"longer than {MAX_TEXT_CHARS} characters", field=field, reason="too_long", **where
            )
        _check_text(value, field, where)
    data, image_path = _image_bytes(row.get("image", row.get("image_path")), path.parent, where)
    try:
        name = store_image(store, data, image=image_path)
    except ValueError as err:
        raise InputError(str(err), field="image", reason="bad_image", **where) from err
    except OSError as err:  # the store, not the row: disk full, no permission
        reason = err.strerror or str(err)
        raise InputError(
            f"cannot write to the image store ({reason})", path=str(store), reason="bad_store"
        ) from err
    ext_id = row.get("id")
    if ext_id is None:
        digest = hashlib.sha256(data + b"\0" + row["question"].encode() + b"\0" + row["answer"].encode())
        ext_id = digest.hexdigest()[:16]
    ext_id = str(ext_id)
    if not ext_id or len(ext_id) > 200:
        raise InputError("id must have 1-200 characters", field="id", reason="bad_id", **where)
    _check_text(ext_id, "id", where)
    source = {
        k: v
        for k, v in row.items()
        if k not in ("image", "image_path", "question", "answer", "id") and _is_json(v)
    }
    for k, v in source.items():  # exported as UTF-8 JSON (where a NUL is escaped, a surrogate is not)
        try:
            json.dumps({k: v}, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise InputError(
                "contains a lone UTF-16 surrogate (half an emoji)", field=str(k), reason="bad_text", **where
            ) from None
    share_point = int(hashlib.sha256(ext_id.encode()).hexdigest()[:8], 16) / 2**32
    return Task(
        external_id=ext_id,
        image_name=name,
        question=row["question"],
        answer=row["answer"],
        source_json=json.dumps(source),
        n_annotations=2 if share_point < double_share else 1,
    )


def _add_tasks(db: Database, tasks: list[Task], counts: dict[str, int]) -> None:
    """Insert the tasks whose id is new (first one wins within the batch) with their slots."""
    if not tasks:
        return
    with db.write() as s:
        ids = [t.external_id for t in tasks]
        present = set(s.scalars(select(Task.external_id).where(Task.external_id.in_(ids))))
        for task in tasks:
            if task.external_id in present:
                counts["skipped"] += 1
                continue
            present.add(task.external_id)
            s.add(task)
            s.flush()
            s.add_all([Assignment(task_id=task.id, slot=k, status="open") for k in range(task.n_annotations)])
            counts["added"] += 1


def _check_text(text: str, field: str, where: dict) -> None:
    """An InputError naming the row and field for text the database cannot store."""
    problem = text_problem(text)
    if problem:
        raise InputError(problem, field=field, reason="bad_text", **where)


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False
