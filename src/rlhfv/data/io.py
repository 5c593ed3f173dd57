"""Streaming readers and writers of :class:`Correction` records.

Formats (``read_corrections`` sniffs which one a path holds):

* **JSONL** (``.jsonl``): one object per line with ``question``, ``original`` and
  ``corrected`` (``rejected`` / ``chosen`` accepted as aliases), ``image`` (a path,
  relative to the file's folder or absolute, or a ``data:image/...;base64,`` URI) or
  ``image_base64``, and optional ``id``, ``annotator``, ``segments`` (list of
  :class:`ChangedSegment` dicts, integer offsets; an integral float such as ``2.0`` is
  taken as that integer), ``source`` (object). UTF-8, a leading BOM allowed; a line that
  is not UTF-8 is a bad row. A file (``.json`` or ``.jsonl``) holding one JSON array of
  such objects (LLaVA-style) is read too, whole, its rows numbered 1..n by element.
* **Parquet** (rlhfv's own layout): the same fields as columns, ``image`` binary,
  ``segments`` and ``source`` as JSON strings. Read in record batches.
* **RLHF-V-Dataset** layout (as published): ``ds_name``, ``image`` (struct with
  ``bytes``, or raw bytes), ``text`` (JSON string with ``question``, ``chosen``,
  ``rejected``), ``origin_dataset``, ``origin_split``, ``idx``, ``image_path``.
* **RLAIF-V-Dataset** layout (as published, one or many parquet shards): ``ds_name``,
  ``image``, ``question``, ``chosen``, ``rejected``, ``origin_dataset``,
  ``origin_split``, ``idx``, ``image_path``.

Exports: :func:`to_hf_dataset` (a ``datasets.Dataset`` built from a generator, never
all records in memory) and :func:`to_trl_dataset` (TRL's preference format: ``images``,
``prompt``, ``chosen``, ``rejected``).

Row numbers in errors: JSONL rows are 1-based line numbers, parquet rows 1-based within each file.
Bad rows raise :class:`InputError`, or go to ``on_error(err)`` and are skipped when an
``on_error`` callback is given; a file-level problem (no such file, missing columns)
always raises.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

from rlhfv.data.encode import check_segments
from rlhfv.data.schema import ChangedSegment, Correction
from rlhfv.errors import InputError

OnError = Callable[[InputError], None] | None
FORMATS: tuple[str, ...] = ("jsonl", "parquet", "rlhf-v", "rlaif-v")
PARQUET_BATCH_ROWS = 256

RLHFV_COLUMNS = ("ds_name", "image", "text", "origin_dataset", "origin_split", "idx", "image_path")
RLAIFV_COLUMNS = (
    "ds_name",
    "image",
    "question",
    "chosen",
    "rejected",
    "origin_dataset",
    "origin_split",
    "idx",
    "image_path",
)
NATIVE_COLUMNS = ("id", "image", "question", "original", "corrected", "annotator", "segments", "source")


# ---- validation ------------------------------------------------------------------------


def _lone_surrogate(text: str) -> int | None:
    """Index of the first lone surrogate (``"\\ud83d"`` from a JSON escape of half an emoji) in
    ``text``: no UTF-8 encoding exists for it, so no tokenizer or writer takes it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return err.start
    return None


def check_correction(c: Correction, *, path: str | None = None, row: int | None = None) -> Correction:
    """Raise :class:`InputError` unless ``c`` is a usable preference pair.

    Checks: question is a string; both answers are non-empty strings; they differ in more
    than whitespace; no text holds a lone surrogate (half a UTF-16 pair, not text); the
    annotator's segments, when given, are a complete diff of the answers
    (:func:`~rlhfv.data.encode.check_segments`); the image is non-empty bytes or a path to
    an existing file.
    """
    if not isinstance(c.question, str):
        raise InputError(
            "question is not a string", path=path, row=row, field="question", reason="not_a_string"
        )
    for field, value in (("original", c.original), ("corrected", c.corrected)):
        if not isinstance(value, str):
            raise InputError(
                f"answer is {type(value).__name__}, not a string",
                path=path,
                row=row,
                field=field,
                reason="not_a_string",
            )
        if not value.strip():
            raise InputError("answer is empty", path=path, row=row, field=field, reason="empty_answer")
    for field, value in (
        ("question", c.question),
        ("original", c.original),
        ("corrected", c.corrected),
        ("annotator", c.annotator),
        ("id", c.id),
    ):
        at = _lone_surrogate(value) if isinstance(value, str) else None
        if at is not None:
            raise InputError(
                f"holds a lone surrogate {value[at]!r} at character {at} (half of a UTF-16 pair, "
                "not text; was an emoji cut in two?)",
                path=path,
                row=row,
                field=field,
                reason="lone_surrogate",
            )
    if c.original == c.corrected:
        raise InputError(
            "corrected answer is identical to the original (nothing to learn from)",
            path=path,
            row=row,
            field="corrected",
            reason="identical_answers",
        )
    if c.original.split() == c.corrected.split():
        raise InputError(
            "corrected answer differs from the original only in whitespace (nothing to learn from)",
            path=path,
            row=row,
            field="corrected",
            reason="whitespace_only",
        )
    if c.segments is not None:
        check_segments(c.segments, c.original, c.corrected, path=path, row=row)
    if isinstance(c.image, bytes | bytearray):
        if not c.image:
            raise InputError(
                "image bytes are empty", path=path, row=row, field="image", reason="missing_image"
            )
    elif not isinstance(c.image, str) or not c.image:
        raise InputError("no image", path=path, row=row, field="image", reason="missing_image")
    elif not os.path.isfile(c.image):
        raise InputError(
            f"image file not found: {c.image}", path=path, row=row, field="image", reason="missing_image"
        )
    return c


def _emit(make: Callable[[], Correction], on_error: OnError, path: str, row: int) -> Correction | None:
    """Build and check one record; route a bad one to ``on_error`` (or raise)."""
    try:
        return check_correction(make(), path=path, row=row)
    except InputError as err:
        if err.path is None:
            err = InputError(err.message, path=path, row=row, field=err.field, reason=err.reason)
        if on_error is None:
            raise err from None
        on_error(err)
        return None


# ---- images ----------------------------------------------------------------------------


def image_extension(data: bytes) -> str:
    """File extension for encoded image bytes, from their magic number."""
    if data[:3] == b"\xff\xd8\xff":
        return ".jpg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return ".png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return ".gif"
    return ".img"


def _decode_b64(text: Any, *, path: str, row: int, field: str) -> bytes:
    if not isinstance(text, str):
        raise InputError(
            f"must be a base64 string, got {type(text).__name__}",
            path=path,
            row=row,
            field=field,
            reason="not_a_string",
        )
    from rlhfv.data.images import base64_image

    try:
        return base64_image(text)
    except ValueError as err:
        raise InputError(
            f"invalid base64 image ({err})", path=path, row=row, field=field, reason="unreadable_image"
        ) from None


def _resolve_image_path(value: str, base: Path) -> str:
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


# ---- JSONL -----------------------------------------------------------------------------


def _segments_from(value: Any, *, path: str, row: int) -> list[ChangedSegment] | None:
    """Segments of a row (a list, or its JSON string), each checked by :meth:`ChangedSegment.from_dict`
    (integer offsets; an integral float such as ``2.0`` is taken as that integer)."""
    usage = "must be a list of {kind, original_start, original_end, corrected_start, corrected_end}"

    def bad(message: str) -> InputError:
        return InputError(message, path=path, row=row, field="segments", reason="bad_segments")

    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else None
        except json.JSONDecodeError as err:
            raise bad(f"malformed JSON ({err.msg}); {usage}") from None
    if value is None:
        return None
    if not isinstance(value, list):
        raise bad(f"{usage}, got {type(value).__name__}")
    segments = []
    for k, d in enumerate(value, start=1):
        try:
            segments.append(ChangedSegment.from_dict(d))
        except ValueError as err:
            raise bad(f"segment {k}: {err}") from None
    return segments


def _pick(obj: dict[str, Any], *names: str, path: str, row: int) -> Any:
    for name in names:
        if name in obj:
            return obj[name]
    raise InputError("missing", path=path, row=row, field=names[0], reason="missing_field")


def _from_json_object(obj: Any, base: Path, *, path: str, row: int) -> Correction:
    if not isinstance(obj, dict):
        raise InputError("record is not a JSON object", path=path, row=row, reason="malformed_json")
    if obj.get("image_base64"):
        image: str | bytes = _decode_b64(obj["image_base64"], path=path, row=row, field="image_base64")
    else:
        value = _pick(obj, "image", path=path, row=row)
        if not isinstance(value, str) or not value:
            raise InputError(
                "image must be a path or a data URI",
                path=path,
                row=row,
                field="image",
                reason="missing_image",
            )
        image = (
            _decode_b64(value, path=path, row=row, field="image")
            if value.startswith("data:")
            else _resolve_image_path(value, base)
        )
    source = obj.get("source") or {}
    return Correction(
        image=image,
        question=_pick(obj, "question", "prompt", path=path, row=row),
        original=_pick(obj, "original", "rejected", path=path, row=row),
        corrected=_pick(obj, "corrected", "chosen", path=path, row=row),
        annotator=obj.get("annotator"),
        segments=_segments_from(obj.get("segments"), path=path, row=row),
        source=source if isinstance(source, dict) else {"value": source},
        id=None if obj.get("id") is None else str(obj["id"]),
    )


def read_jsonl(path: str | os.PathLike, *, on_error: OnError = None) -> Iterator[Correction]:
    """Stream corrections from a JSONL file (one record per line; blank lines skipped), or
    from a file holding one JSON array of records (see :func:`is_json_array`)."""
    return (c for _, c in _jsonl_rows(path, on_error))


_BOM = b"\xef\xbb\xbf"


def is_json_array(path: str | os.PathLike) -> bool:
    """Whether a JSON(L) file holds one top-level JSON array (LLaVA-style ``.json``) rather than lines."""
    with _open_binary(Path(path)) as f:
        return f.read(4096).removeprefix(_BOM).lstrip().startswith(b"[")


def _jsonl_rows(path: str | os.PathLike, on_error: OnError) -> Iterator[tuple[int, Correction]]:
    path = Path(path)
    base = path.parent.resolve()
    name = str(path)
    if is_json_array(path):
        yield from _json_array_rows(path, base, name, on_error)
        return
    # bytes, decoded line by line: a line that is not UTF-8 is one bad row, not a dead file
    with _open_binary(path) as f:
        if f.read(4) == b"PAR1":
            raise InputError(
                "is a parquet file, not JSONL; leave out --format jsonl or name its parquet layout",
                path=name,
                reason="unknown_format",
            )
        f.seek(0)
        for lineno, line in jsonl_lines(f):
            c = _emit(partial(_json_line, line, base, name, lineno), on_error, name, lineno)
            if c is not None:
                yield lineno, c


def jsonl_lines(f: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """The non-blank lines of a binary JSONL file with their line numbers, lines ending in
    ``\n``, ``\r\n`` or ``\r`` as text mode reads them. Bytes, for :func:`json_line` to
    decode one by one: a line that is not UTF-8 is one bad row, not a dead file."""
    lineno = 0
    for chunk in f:  # split at \n only, so a \r\n pair never spans two chunks
        for line in chunk.splitlines():  # bytes split at \r\n, \n and \r alone
            lineno += 1
            if line.strip():
                yield lineno, line


def _json_array_rows(
    path: Path, base: Path, name: str, on_error: OnError
) -> Iterator[tuple[int, Correction]]:
    """Records of a JSON array file, rows numbered 1..n by element. The standard library
    cannot stream an array, so the file is read whole: convert a large one to JSONL."""
    data = path.read_bytes()
    try:
        items = json.loads(_decode(data, name, None))
    except json.JSONDecodeError as err:
        raise InputError(
            f"malformed JSON array ({err.msg} at line {err.lineno} column {err.colno})",
            path=name,
            reason="malformed_json",
        ) from None
    if not isinstance(items, list):
        raise InputError("expected a JSON array of records", path=name, reason="malformed_json")
    for row, obj in enumerate(items, start=1):
        c = _emit(partial(_from_json_object, obj, base, path=name, row=row), on_error, name, row)
        if c is not None:
            yield row, c


def _decode(data: bytes, name: str, row: int | None) -> str:
    try:
        return data.decode("utf-8-sig")  # a BOM (Windows editors write one) is not part of the JSON
    except UnicodeDecodeError as err:
        bad = err.object  # without the BOM, which err.start does not count
        line = bad.count(b"\n", 0, err.start) + 1
        where = "" if row is not None else f" on line {line}"
        raise InputError(
            f"not UTF-8 text (byte 0x{bad[err.start]:02x}{where}); save the file as UTF-8",
            path=name,
            row=row,
            reason="not_utf8",
        ) from None


def json_line(line: bytes, name: str, lineno: int) -> Any:
    """The JSON value of one line from :func:`jsonl_lines`; InputError if it is not UTF-8
    (reason ``not_utf8``) or not JSON (``malformed_json``)."""
    try:
        return json.loads(_decode(line, name, lineno))
    except json.JSONDecodeError as err:
        raise InputError(
            f"malformed JSON ({err.msg})", path=name, row=lineno, reason="malformed_json"
        ) from None


def _json_line(line: bytes, base: Path, name: str, lineno: int) -> Correction:
    return _from_json_object(json_line(line, name, lineno), base, path=name, row=lineno)


def _open_binary(path: Path):
    try:
        return path.open("rb")
    except OSError as err:
        raise InputError(
            f"cannot open: {err.strerror or err}", path=str(path), reason="unreadable_file"
        ) from None


def correction_to_json(
    c: Correction, *, base: Path | None = None, image_dir: Path | None = None, embed_images: bool = False
) -> dict[str, Any]:
    """One JSONL object for ``c``.

    Image bytes are embedded as ``image_base64`` when ``embed_images`` is true or no
    ``image_dir`` is given, else written to ``image_dir`` and referenced by path. Paths
    are written relative to ``base`` (the JSONL file's folder) when they lie under it.
    """
    obj: dict[str, Any] = {"id": c.id}
    if isinstance(c.image, bytes | bytearray):
        if embed_images or image_dir is None:
            obj["image_base64"] = base64.b64encode(bytes(c.image)).decode("ascii")
        else:
            image_dir.mkdir(parents=True, exist_ok=True)
            data = bytes(c.image)
            digest = hashlib.sha256(data).hexdigest()
            safe_id = c.id and all(ch.isalnum() or ch in "-_" for ch in c.id)
            ext = image_extension(data)
            target = image_dir / f"{c.id if safe_id else digest[:16]}{ext}"
            if target.exists() and target.read_bytes() != data:  # two records, one id
                target = image_dir / f"{target.stem}-{digest[:10]}{ext}"
            target.write_bytes(data)
            obj["image"] = _relative(target, base)
    elif embed_images:
        obj["image_base64"] = base64.b64encode(Path(c.image).read_bytes()).decode("ascii")
    else:
        obj["image"] = _relative(Path(c.image), base)
    obj.update(question=c.question, original=c.original, corrected=c.corrected, annotator=c.annotator)
    obj["segments"] = None if c.segments is None else [s.to_dict() for s in c.segments]
    obj["source"] = c.source
    return obj


def _relative(p: Path, base: Path | None) -> str:
    if base is None:
        return str(p)
    p, base = p.resolve(), base.resolve()
    try:
        return str(p.relative_to(base))
    except ValueError:
        return str(p)


def write_jsonl(
    corrections: Iterable[Correction],
    path: str | os.PathLike,
    *,
    image_dir: str | os.PathLike | None = None,
    embed_images: bool = False,
) -> int:
    """Write corrections to JSONL, one at a time; returns the number written.

    Image paths are written relative to the file's folder when possible. Image bytes go
    into ``image_dir`` (relative to the file's folder unless absolute) as files, or are
    embedded as base64 when ``embed_images`` or no ``image_dir`` is given.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = path.parent
    img_dir = (
        None
        if image_dir is None
        else (Path(image_dir) if Path(image_dir).is_absolute() else base / image_dir)
    )
    n = 0
    with _replacing(path) as tmp, tmp.open("w", encoding="utf-8") as f:
        for c in corrections:
            obj = correction_to_json(c, base=base, image_dir=img_dir, embed_images=embed_images)
            f.write(json.dumps(obj, ensure_ascii=False) + "\n")
            n += 1
    return n


@contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """A new file beside ``path`` to write, renamed over ``path`` (``os.replace``) when the
    block ends without an error and deleted when it fails. So a writer may read its own
    output file as it writes (``write_jsonl(read_jsonl(p), p)``), and an interrupted write
    leaves the old file whole. A symbolic link is followed: its target is replaced."""
    target = Path(os.path.realpath(path))
    tmp = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


# ---- Parquet (all layouts) -------------------------------------------------------------


def _parquet_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.parquet") if p.is_file())
        if not files:
            raise InputError("folder holds no .parquet files", path=str(path), reason="no_parquet_files")
        return files
    if not path.exists():
        raise InputError("no such file", path=str(path), reason="missing_file")
    return [path]


def _parquet_columns(file: Path) -> list[str]:
    import pyarrow.parquet as pq

    try:
        return list(pq.read_schema(file).names)
    except Exception as err:  # pyarrow raises several types for a non-parquet file
        raise InputError(
            f"not a readable parquet file ({err})", path=str(file), reason="unreadable_file"
        ) from None


def _require_columns(file: Path, needed: Iterable[str]) -> None:
    have = set(_parquet_columns(file))
    missing = [c for c in needed if c not in have]
    if missing:
        raise InputError(
            f"missing column(s) {', '.join(missing)} (has: {', '.join(sorted(have))})",
            path=str(file),
            field=missing[0],
            reason="missing_columns",
        )


def _iter_parquet_rows(file: Path, columns: list[str] | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(row_number, row_dict)`` in record batches, so only a batch is in memory; rows are
    numbered from 1 within the file, as JSONL lines are (what messages and ``data show`` print)."""
    import pyarrow.parquet as pq

    # pre_buffer (pyarrow's default) would read the whole file's column chunks at once
    pf = pq.ParquetFile(file, pre_buffer=False, buffer_size=1 << 20)
    cols = None if columns is None else [c for c in columns if c in pf.schema_arrow.names]
    row = 1
    for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=cols):
        for record in batch.to_pylist():
            yield row, record
            row += 1


def _image_from_cell(cell: Any, image_path: Any, *, base: Path, path: str, row: int) -> str | bytes:
    """The image of a published-layout row: HF ``{"bytes", "path"}`` struct, raw bytes, or a path."""
    data = None
    inner_path = None
    if isinstance(cell, dict):
        data, inner_path = cell.get("bytes"), cell.get("path")
    elif isinstance(cell, bytes | bytearray):
        data = bytes(cell)
    elif isinstance(cell, str) and cell:
        inner_path = cell
    if data:
        return bytes(data)
    for candidate in (inner_path, image_path):
        if isinstance(candidate, str) and candidate:
            resolved = _resolve_image_path(candidate, base)
            if os.path.isfile(resolved):
                return resolved
    raise InputError(
        "no image bytes and no image file found" + (f" (image_path {image_path})" if image_path else ""),
        path=path,
        row=row,
        field="image",
        reason="missing_image",
    )


def _json_or_value(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _published_source(layout: str, rec: dict[str, Any]) -> dict[str, Any]:
    return {
        "layout": layout,
        "ds_name": rec.get("ds_name"),
        "origin_dataset": rec.get("origin_dataset"),
        "origin_split": _json_or_value(rec.get("origin_split")),
        "idx": rec.get("idx"),
        "image_path": rec.get("image_path"),
    }


def _rlhfv_row(rec: dict[str, Any], base: Path, name: str, row: int) -> Correction:
    raw = rec.get("text")
    try:
        text = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError as err:
        raise InputError(
            f"malformed JSON ({err.msg})", path=name, row=row, field="text", reason="malformed_json"
        ) from None
    if not isinstance(text, dict):
        raise InputError(
            "text is not a JSON object", path=name, row=row, field="text", reason="malformed_json"
        )
    for key in ("question", "chosen", "rejected"):
        if key not in text:
            raise InputError(
                f"text has no {key!r}", path=name, row=row, field=f"text.{key}", reason="missing_field"
            )
    return Correction(
        image=_image_from_cell(rec.get("image"), rec.get("image_path"), base=base, path=name, row=row),
        question=text["question"],
        original=text["rejected"],
        corrected=text["chosen"],
        source=_published_source("rlhf-v", rec),
        id=None if rec.get("idx") is None else str(rec["idx"]),
    )


def _rlaifv_row(rec: dict[str, Any], base: Path, name: str, row: int) -> Correction:
    return Correction(
        image=_image_from_cell(rec.get("image"), rec.get("image_path"), base=base, path=name, row=row),
        question=rec["question"],
        original=rec["rejected"],
        corrected=rec["chosen"],
        source=_published_source("rlaif-v", rec),
        id=None if rec.get("idx") is None else str(rec["idx"]),
    )


def _native_row(rec: dict[str, Any], base: Path, name: str, row: int) -> Correction:
    source = _json_or_value(rec.get("source")) or {}
    return Correction(
        image=_image_from_cell(rec.get("image"), rec.get("image_path"), base=base, path=name, row=row),
        question=rec["question"],
        original=rec["original"],
        corrected=rec["corrected"],
        annotator=rec.get("annotator"),
        segments=_segments_from(rec.get("segments"), path=name, row=row),
        source=source if isinstance(source, dict) else {"value": source},
        id=rec.get("id"),
    )


def _read_parquet_layout(
    path: str | os.PathLike, required: tuple[str, ...], convert: Callable[..., Correction], on_error: OnError
) -> Iterator[tuple[int, Correction]]:
    for file in _parquet_files(Path(path)):
        _require_columns(file, required)
        name, base = str(file), file.parent.resolve()
        for row, rec in _iter_parquet_rows(file):
            c = _emit(partial(convert, rec, base, name, row), on_error, name, row)
            if c is not None:
                yield row, c


def read_rlhfv_dataset(path: str | os.PathLike, *, on_error: OnError = None) -> Iterator[Correction]:
    """Stream the RLHF-V-Dataset layout (``text`` holds question/chosen/rejected as JSON)."""
    return (c for _, c in _read_parquet_layout(path, ("image", "text"), _rlhfv_row, on_error))


def read_rlaifv_dataset(path: str | os.PathLike, *, on_error: OnError = None) -> Iterator[Correction]:
    """Stream the RLAIF-V-Dataset layout (one parquet file or a folder of shards)."""
    return (
        c
        for _, c in _read_parquet_layout(
            path, ("image", "question", "chosen", "rejected"), _rlaifv_row, on_error
        )
    )


def read_parquet(path: str | os.PathLike, *, on_error: OnError = None) -> Iterator[Correction]:
    """Stream rlhfv's own parquet layout (columns ``NATIVE_COLUMNS``; one file or a folder)."""
    return (
        c
        for _, c in _read_parquet_layout(
            path, ("image", "question", "original", "corrected"), _native_row, on_error
        )
    )


def _image_bytes_of(c: Correction) -> bytes:
    return bytes(c.image) if isinstance(c.image, bytes | bytearray) else Path(c.image).read_bytes()


def _write_parquet_rows(rows: Iterable[dict[str, Any]], path: Path, schema, row_group_size: int) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    buffer: list[dict[str, Any]] = []
    with _replacing(path) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        for r in rows:
            buffer.append(r)
            if len(buffer) >= row_group_size:
                writer.write_table(pa.Table.from_pylist(buffer, schema=schema))
                n += len(buffer)
                buffer = []
        if buffer or n == 0:
            writer.write_table(pa.Table.from_pylist(buffer, schema=schema))
            n += len(buffer)
    return n


def _hf_image_type():
    import pyarrow as pa

    # how datasets.Image() is stored in parquet: a struct of bytes and path
    return pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def write_parquet(
    corrections: Iterable[Correction], path: str | os.PathLike, *, row_group_size: int = 256
) -> int:
    """Write rlhfv's own parquet layout (images embedded as bytes); returns rows written."""
    import pyarrow as pa

    schema = pa.schema(
        [
            ("id", pa.string()),
            ("image", pa.binary()),
            ("question", pa.string()),
            ("original", pa.string()),
            ("corrected", pa.string()),
            ("annotator", pa.string()),
            ("segments", pa.string()),
            ("source", pa.string()),
        ]
    )
    rows = (
        {
            "id": c.id,
            "image": _image_bytes_of(c),
            "question": c.question,
            "original": c.original,
            "corrected": c.corrected,
            "annotator": c.annotator,
            "segments": None if c.segments is None else json.dumps([s.to_dict() for s in c.segments]),
            "source": json.dumps(c.source, ensure_ascii=False, default=str),
        }
        for c in corrections
    )
    return _write_parquet_rows(rows, Path(path), schema, row_group_size)


def _published_row(c: Correction, k: int, ds_name: str) -> dict[str, Any]:
    src = c.source or {}
    split = src.get("origin_split")
    idx = src.get("idx")
    if idx is None:
        idx = int(c.id) if c.id is not None and str(c.id).isdigit() else k
    return {
        "ds_name": src.get("ds_name") or ds_name,
        "image": {"bytes": _image_bytes_of(c), "path": None},
        "origin_dataset": src.get("origin_dataset") or "rlhfv",
        "origin_split": split if isinstance(split, str) or split is None else json.dumps(split),
        "idx": int(idx),
        "image_path": src.get("image_path") or (None if isinstance(c.image, bytes) else Path(c.image).name),
    }


def write_rlhfv_dataset(
    corrections: Iterable[Correction], path: str | os.PathLike, *, row_group_size: int = 256
) -> int:
    """Write the RLHF-V-Dataset layout (``text`` = JSON question/chosen/rejected)."""
    import pyarrow as pa

    schema = pa.schema(
        [
            ("ds_name", pa.string()),
            ("image", _hf_image_type()),
            ("text", pa.string()),
            ("origin_dataset", pa.string()),
            ("origin_split", pa.string()),
            ("idx", pa.int64()),
            ("image_path", pa.string()),
        ]
    )
    rows = (
        {
            **_published_row(c, k, "RLHF-V"),
            "text": json.dumps(
                {"question": c.question, "chosen": c.corrected, "rejected": c.original}, ensure_ascii=False
            ),
        }
        for k, c in enumerate(corrections)
    )
    return _write_parquet_rows(rows, Path(path), schema, row_group_size)


def write_rlaifv_dataset(
    corrections: Iterable[Correction], path: str | os.PathLike, *, row_group_size: int = 256
) -> int:
    """Write the RLAIF-V-Dataset layout (one shard)."""
    import pyarrow as pa

    schema = pa.schema(
        [
            ("ds_name", pa.string()),
            ("image", _hf_image_type()),
            ("question", pa.string()),
            ("chosen", pa.string()),
            ("rejected", pa.string()),
            ("origin_dataset", pa.string()),
            ("origin_split", pa.string()),
            ("idx", pa.int64()),
            ("image_path", pa.string()),
        ]
    )
    rows = (
        {
            **_published_row(c, k, "RLAIF-V"),
            "question": c.question,
            "chosen": c.corrected,
            "rejected": c.original,
        }
        for k, c in enumerate(corrections)
    )
    return _write_parquet_rows(rows, Path(path), schema, row_group_size)


# ---- sniffing --------------------------------------------------------------------------


def sniff_format(path: str | os.PathLike) -> str:
    """Which of ``FORMATS`` a path holds: by extension, then by parquet columns."""
    p = Path(path)
    if not p.exists():
        raise InputError("no such file or folder", path=str(p), reason="missing_file")
    if p.is_file() and p.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    files = _parquet_files(p) if p.is_dir() or p.suffix.lower() == ".parquet" else None
    if files is None:
        raise InputError(
            "unknown format: expected .jsonl, .parquet or a folder of .parquet shards",
            path=str(p),
            reason="unknown_format",
        )
    columns = set(_parquet_columns(files[0]))
    if "text" in columns and "question" not in columns:
        return "rlhf-v"
    if {"chosen", "rejected"} <= columns:
        return "rlaif-v"
    if {"original", "corrected"} <= columns:
        return "parquet"
    raise InputError(
        "parquet columns match no known layout (need text, or question+chosen+rejected, or question+original+corrected;"
        f" has: {', '.join(sorted(columns))})",
        path=str(files[0]),
        reason="missing_columns",
    )


_ROW_READERS: dict[str, Callable[[Any, OnError], Iterator[tuple[int, Correction]]]] = {
    "jsonl": _jsonl_rows,
    "parquet": lambda p, e: _read_parquet_layout(
        p, ("image", "question", "original", "corrected"), _native_row, e
    ),
    "rlhf-v": lambda p, e: _read_parquet_layout(p, ("image", "text"), _rlhfv_row, e),
    "rlaif-v": lambda p, e: _read_parquet_layout(
        p, ("image", "question", "chosen", "rejected"), _rlaifv_row, e
    ),
}


def read_corrections_with_rows(
    path: str | os.PathLike, *, format: str | None = None, on_error: OnError = None
) -> Iterator[tuple[int, Correction]]:
    """Like :func:`read_corrections`, yielding ``(row, correction)`` with the row number errors use."""
    fmt = format or sniff_format(path)
    if fmt not in _ROW_READERS:
        raise InputError(
            f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}",
            path=str(path),
            reason="unknown_format",
        )
    return _ROW_READERS[fmt](path, on_error)


def read_corrections(
    path: str | os.PathLike, *, format: str | None = None, on_error: OnError = None
) -> Iterator[Correction]:
    """Stream corrections from ``path`` in any of ``FORMATS`` (sniffed when ``format`` is None)."""
    return (c for _, c in read_corrections_with_rows(path, format=format, on_error=on_error))


# ---- exports ---------------------------------------------------------------------------

Corrections = str | os.PathLike | Iterable[Correction]


class _Source:
    """A path or an iterable of corrections, handed to ``Dataset.from_generator``.

    One opaque object, not a list: ``datasets`` would treat a list in ``gen_kwargs`` as
    shards and split it.
    """

    def __init__(self, source: Corrections):
        self.path = str(Path(source).resolve()) if isinstance(source, str | os.PathLike) else None
        self.items = None if self.path is not None else source

    def __iter__(self) -> Iterator[Correction]:
        return iter(read_corrections(self.path)) if self.path is not None else iter(self.items)

    def generator_kwargs(self, features, cache_dir, **extra) -> dict[str, Any]:
        import uuid

        kwargs: dict[str, Any] = {
            "features": features,
            "cache_dir": cache_dir,
            "gen_kwargs": {"source": self, **extra},
        }
        # a path is fingerprinted by datasets from the arguments; an iterable cannot be
        # hashed, so it gets a fresh id (no cache reuse)
        kwargs["fingerprint"] = None if self.path is not None else uuid.uuid4().hex
        return kwargs

    def __reduce__(self):
        # datasets hashes gen_kwargs to name its cache: a path hashes with the size and
        # modification time of its files, so an edited file is read again
        if self.path is None:
            return (str, ("<iterable>",))
        p = Path(self.path)
        files = sorted(p.rglob("*")) if p.is_dir() else [p]
        signature = [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.is_file()]
        return (_Source, (self.path,), {"signature": signature})


def _hf_rows(source: _Source) -> Iterator[dict[str, Any]]:
    for c in source:
        yield {
            "id": c.id,
            "image": {"bytes": _image_bytes_of(c), "path": None},
            "question": c.question,
            "original": c.original,
            "corrected": c.corrected,
            "annotator": c.annotator,
            "segments": None if c.segments is None else [s.to_dict() for s in c.segments],
            "source": json.dumps(c.source, ensure_ascii=False, default=str),
        }


def to_hf_dataset(corrections: Corrections, *, cache_dir: str | None = None):
    """Corrections (a path in any readable format, or an iterable) as a ``datasets.Dataset``.

    Built by a generator and written to disk in batches, never all in memory. Columns:
    ``id``, ``image`` (``datasets.Image``), ``question``, ``original``, ``corrected``,
    ``annotator``, ``segments`` (list of segment structs or null), ``source`` (JSON string).
    """
    import datasets

    seg = {
        "kind": datasets.Value("string"),
        "original_start": datasets.Value("int64"),
        "original_end": datasets.Value("int64"),
        "corrected_start": datasets.Value("int64"),
        "corrected_end": datasets.Value("int64"),
        "category": datasets.Value("string"),
    }
    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "image": datasets.Image(),
            "question": datasets.Value("string"),
            "original": datasets.Value("string"),
            "corrected": datasets.Value("string"),
            "annotator": datasets.Value("string"),
            "segments": [seg],
            "source": datasets.Value("string"),
        }
    )
    return datasets.Dataset.from_generator(
        _hf_rows, **_Source(corrections).generator_kwargs(features, cache_dir)
    )


TRL_IMAGE_PLACEHOLDER = "<image>"


def trl_record(c: Correction, *, conversational: bool = True) -> dict[str, Any]:
    """One row of TRL's vision preference format for ``c`` (image as a PIL image).

    Conversational (default), as TRL documents for vision datasets: ``prompt`` is a user
    turn whose content is a ``{"type": "image"}`` entry followed by the question as a
    ``{"type": "text"}`` entry; ``chosen`` / ``rejected`` are assistant turns with one text
    entry. An ``"<image>"`` already typed in the question (LLaVA-style data) is removed: the
    image entry is the one placeholder, which the processor's chat template renders.

    Otherwise plain strings, LLaVA-style: TRL hands a plain prompt to the processor as it
    is, with no chat template and no placeholder of its own, so ``prompt`` is
    ``"<image>\\n"`` followed by the question, any ``"<image>"`` typed in it removed as
    above: exactly one placeholder, before the question. Processors with another
    placeholder (Qwen2-VL's ``<|image_pad|>``...) need the conversational format.
    """
    image = c.load_image()
    question = c.question.replace(TRL_IMAGE_PLACEHOLDER, "").strip()
    if conversational:
        return {
            "images": [image],
            "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}],
            "chosen": [{"role": "assistant", "content": [{"type": "text", "text": c.corrected}]}],
            "rejected": [{"role": "assistant", "content": [{"type": "text", "text": c.original}]}],
        }
    prompt = f"{TRL_IMAGE_PLACEHOLDER}\n{question}"
    return {"images": [image], "prompt": prompt, "chosen": c.corrected, "rejected": c.original}


def _trl_rows(source: _Source, conversational: bool) -> Iterator[dict[str, Any]]:
    for c in source:
        row = trl_record(c, conversational=conversational)
        row["images"] = [{"bytes": _image_bytes_of(c), "path": None}]
        yield row


def to_trl_dataset(corrections: Corrections, *, conversational: bool = True, cache_dir: str | None = None):
    """Corrections (a path or an iterable) as a ``datasets.Dataset`` in TRL's preference format.

    Columns ``images`` (list of ``datasets.Image``), ``prompt``, ``chosen``, ``rejected``
    (see :func:`trl_record`; in the dataset the image entry reads back as
    ``{"type": "image", "text": None}``); ready for ``trl.DPOTrainer`` (vanilla DPO, the
    ``gamma = 1`` baseline).
    """
    import datasets

    if conversational:
        part = {"type": datasets.Value("string"), "text": datasets.Value("string")}
        turn = [{"role": datasets.Value("string"), "content": [part]}]
        text: Any = {"prompt": turn, "chosen": turn, "rejected": turn}
    else:
        text = {k: datasets.Value("string") for k in ("prompt", "chosen", "rejected")}
    features = datasets.Features({"images": [datasets.Image()], **text})
    kwargs = _Source(corrections).generator_kwargs(features, cache_dir, conversational=conversational)
    return datasets.Dataset.from_generator(_trl_rows, **kwargs)
