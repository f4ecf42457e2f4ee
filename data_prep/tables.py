"""Reading the user's CSV files (points, boxes, tags, size estimates): rows checked line by line.

Every problem names the file and the line: a missing column, a number that is not one, a case
that is not among the cases found, a class that is not declared.
"""

from __future__ import annotations

import csv
from pathlib import Path

from data_prep.errors import InputError
from data_prep.user_classes import ClassVocabulary


class Table:
    """The rows of one CSV file with 1-based line numbers (the header is line 1)."""

    def __init__(self, path: Path, what: str, required: tuple[str, ...]):
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(self.path, f"{what} CSV not found")
        try:
            with self.path.open(newline="", encoding="utf-8-sig") as handle:
                reader = csv.DictReader(handle)
                self.columns = [c.strip().lower() for c in (reader.fieldnames or [])]
                self.rows = [({(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}, n)
                             for n, row in enumerate(reader, start=2)]
        except (OSError, UnicodeDecodeError, csv.Error) as err:
            raise InputError(self.path, f"cannot read the {what} CSV ({err})") from None
        missing = [c for c in required if c not in self.columns]
        if missing:
            raise InputError(self.path, f"{what} CSV lacks column(s) {', '.join(missing)} (has: {', '.join(self.columns)})")

    def error(self, line: int, problem: str) -> InputError:
        return InputError(self.path, f"line {line}: {problem}")

    def case(self, row: dict, line: int, volumes: set[str]) -> str:
        name = row.get("case", "")
        if name not in volumes:
            shown = ", ".join(sorted(volumes)[:5]) + (" ..." if len(volumes) > 5 else "")
            raise self.error(line, f"case {name!r} is not among the cases found ({shown})")
        return name

    def cls(self, row: dict, line: int, vocab: ClassVocabulary, column: str = "class") -> int:
        name = row.get(column, "")
        found = vocab.name_to_class(name)
        if found is None or found == 255:
            raise self.error(line, f"class {name!r} is not declared: give a raw label value, 'background', "
                             "a class name, or map it with --annotation-classes")
        return found

    def number(self, row: dict, line: int, column: str, integer: bool = False) -> float:
        text = row.get(column, "")
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            raise self.error(line, f"{column} {text!r} is not {'an integer' if integer else 'a number'}") from None
        if not integer and value != value or value in (float("inf"), float("-inf")):
            raise self.error(line, f"{column} {text!r} is not a finite number")
        return value

    def optional_int(self, row: dict, line: int, column: str) -> int | None:
        return None if not row.get(column, "") else int(self.number(row, line, column, integer=True))
