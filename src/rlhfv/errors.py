"""The one exception type for a user's mistake.

The CLI turns it into a single line on stderr and exit status 2; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations


class InputError(Exception):
    """Bad input from the user: names the file, the row and the field where known.

    >>> str(InputError("answer is empty", path="a.jsonl", row=3, field="chosen"))
    'a.jsonl: row 3: field chosen: answer is empty'
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        row: int | None = None,
        field: str | None = None,
        reason: str | None = None,
    ) -> None:
        self.message = message
        self.path = path
        self.row = row
        self.field = field
        # a short stable key for counting skipped rows by reason ("empty_answer", ...)
        self.reason = reason or "invalid"
        super().__init__(str(self))

    def __str__(self) -> str:
        where = []
        if self.path is not None:
            where.append(str(self.path))
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.field is not None:
            where.append(f"field {self.field}")
        return ": ".join([*where, self.message])
