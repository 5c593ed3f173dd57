"""Bad input is counted by kind and reported, never turned into a silent zero.

Every scorer takes a :class:`Problems` and adds one entry per item it could not score
(``response_not_string``, ``unknown_image_id``, ``no_rating``, ``endpoint_unreachable``
...); results carry ``problems.as_dict()`` and the CLI prints :meth:`Problems.lines`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rlhfv.errors import InputError

MAX_EXAMPLES = 3


class Problems:
    """Counts of unscorable items by kind, with the first few messages of each kind."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}

    def add(self, kind: str, message: str) -> None:
        self.counts[kind] += 1
        examples = self.examples.setdefault(kind, [])
        if len(examples) < MAX_EXAMPLES:
            examples.append(message)

    def __len__(self) -> int:
        return sum(self.counts.values())

    def __bool__(self) -> bool:
        return bool(self.counts)

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return {k: {"count": n, "examples": self.examples[k]} for k, n in sorted(self.counts.items())}

    def lines(self) -> list[str]:
        """One line per kind: ``3 x unknown_image_id (e.g. row 4: ...)``."""
        return problem_lines(self.as_dict())

    def raise_first(self, path: str | Path) -> None:
        """InputError naming ``path`` with the first kind's line, if any problem was counted.

        For input files, where a bad line means the file is wrong (unlike answers, which
        are counted and reported)."""
        if self:
            raise InputError(self.lines()[0], path=str(path))


def problem_lines(problems: dict[str, dict[str, Any]]) -> list[str]:
    """Lines for a ``Problems.as_dict()`` (as stored in results)."""
    return [f"{v['count']} x {k} (e.g. {v['examples'][0]})" for k, v in problems.items()]


def read_json(path: str | Path) -> Any:
    """A JSON file, or InputError naming the file."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as err:
        raise InputError(f"cannot read file: {err.strerror}", path=str(path), reason="unreadable") from err
    except json.JSONDecodeError as err:
        raise InputError(f"not valid JSON: {err.msg} at line {err.lineno}", path=str(path)) from err


def iter_jsonl(path: str | Path, problems: Problems) -> Iterator[tuple[int, dict[str, Any]]]:
    """(row number from 1, object) per line; blank lines skipped; bad lines counted."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise InputError(f"cannot read file: {err.strerror}", path=str(path), reason="unreadable") from err
    except UnicodeDecodeError as err:
        raise InputError("not UTF-8 text", path=str(path), reason="unreadable") from err
    for row, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            problems.add("invalid_json", f"{path}: row {row}: {err.msg}")
            continue
        if not isinstance(obj, dict):
            problems.add("invalid_json", f"{path}: row {row}: not a JSON object")
            continue
        yield row, obj


def iter_image_rows(path: str | Path) -> Iterator[tuple[int, Any, dict[str, Any]]]:
    """(row, image id, object) per row of a JSONL annotation file, the id from ``image_id`` or ``id``.

    A row with neither, or a line that is no JSON object, is an InputError: annotations are
    input files, not answers to count."""
    problems = Problems()
    for row, obj in iter_jsonl(path, problems):
        image_id = obj.get("image_id", obj.get("id"))
        if image_id is None:
            raise InputError("no id or image_id", path=str(path), row=row, field="id")
        yield row, image_id, obj
    problems.raise_first(path)


def list_field(obj: dict[str, Any], key: str, path: str | Path, row: int) -> list[Any]:
    """``obj[key]`` of an annotation row as a list, ``[]`` when absent or null.

    Anything else is an InputError naming the row and field: a string would otherwise be
    read character by character and give wrong ground truth without a word."""
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise InputError(
            f"expected a list, got {type(value).__name__}",
            path=str(path),
            row=row,
            field=key,
            reason="bad_annotation",
        )
    return value


def coco_records(
    data: dict[str, Any], section: str, path: str | Path
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(``"annotations[3]"``, record) for each item of a COCO file's section (absent: none).

    A section that is no list or an item that is no object is an InputError naming it."""
    items = data.get(section)
    if items is None:
        return
    if not isinstance(items, list):
        raise InputError("expected a list", path=str(path), field=section, reason="bad_annotation")
    for i, item in enumerate(items):
        where = f"{section}[{i}]"
        if not isinstance(item, dict):
            raise InputError("expected a JSON object", path=str(path), field=where, reason="bad_annotation")
        yield where, item


def coco_value(record: dict[str, Any], key: str, where: str, path: str | Path) -> Any:
    """``record[key]`` of a COCO record, or an InputError naming the file, record and field."""
    value = record.get(key)
    if value is None:
        said = "is null" if key in record else "is missing"
        raise InputError(said, path=str(path), field=f"{where}.{key}", reason="bad_annotation")
    return value


def read_records(path: str | Path, problems: Problems) -> list[tuple[int, dict[str, Any]]]:
    """Rows of a JSONL file, or of a JSON file holding a list of objects."""
    if str(path).endswith(".json"):
        data = read_json(path)
        if not isinstance(data, list):
            raise InputError("expected a JSON list of objects", path=str(path))
        out = []
        for row, obj in enumerate(data, start=1):
            if isinstance(obj, dict):
                out.append((row, obj))
            else:
                problems.add("invalid_json", f"{path}: item {row}: not a JSON object")
        return out
    return list(iter_jsonl(path, problems))
