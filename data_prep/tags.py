"""Image tags (``--tags CSV``): which classes are present or absent, per case or per slice.

Columns ``case,class,present`` and optionally ``slice`` (index along the slice axis, from 0;
empty = the whole case). ``present`` is 1/0, yes/no, true/false or present/absent. A case tagged
absent has the class on none of its slices; "present" for a whole case says nothing about a
given slice. Without a tag, a class painted on a slice (label map, point, box) counts as present
there, and nothing counts as absent: absence must be stated. A tag contradicting an annotation
(a class painted on a slice tagged absent) is an input error.
"""

from __future__ import annotations

from dataclasses import dataclass

from data_prep.errors import InputError
from data_prep.tables import Table
from data_prep.user_classes import ClassVocabulary

TRUE = ("1", "yes", "true", "present", "y")
FALSE = ("0", "no", "false", "absent", "n")


@dataclass(frozen=True)
class Tag:
    cls: int
    present: bool
    slice: int | None
    where: str
    path: str


def read_tags(path, vocab: ClassVocabulary, volumes: set[str]) -> dict[str, list[Tag]]:
    """Tags per case; two rows saying opposite things about one slice and class are an input error."""
    table = Table(path, "tags", ("case", "class", "present"))
    found: dict[str, list[Tag]] = {}
    seen: dict[tuple, Tag] = {}
    for row, line in table.rows:
        case = table.case(row, line, volumes)
        cls = table.cls(row, line, vocab)
        if cls == 0:
            raise table.error(line, "tags are for target classes, not background")
        text = row.get("present", "").lower()
        if text not in TRUE + FALSE:
            raise table.error(line, f"present {text!r} is not 1/0, yes/no, true/false or present/absent")
        tag = Tag(cls, text in TRUE, table.optional_int(row, line, "slice"), f"line {line}", str(table.path))
        key = (case, cls, tag.slice)
        if key in seen and seen[key].present != tag.present:
            raise table.error(line, f"contradicts {seen[key].where} for case {case}, class {row.get('class')}")
        seen[key] = tag
        found.setdefault(case, []).append(tag)
    return found


def slice_tags(tags: list[Tag], n_slices: int, n_classes: int) -> list[list[int | None]]:
    """Per slice and class: 1 present, 0 absent, None unknown (from the tags alone)."""
    known: list[list[int | None]] = [[None] * n_classes for _ in range(n_slices)]
    for tag in tags:
        if tag.slice is not None and not 0 <= tag.slice < n_slices:
            raise InputError(tag.path, f"{tag.where}: slice {tag.slice} outside the case's {n_slices} slices")
    for tag in tags:  # whole-case absence first, then slice tags (more specific) on top
        if tag.slice is None and not tag.present:
            for row in known:
                row[tag.cls - 1] = 0
    for tag in tags:
        if tag.slice is not None:
            known[tag.slice][tag.cls - 1] = int(tag.present)
    return known


def check_painted(tags: list[Tag], painted: list[set[int]], volume: str) -> None:
    """A class painted on a slice tagged absent (for that slice or the whole case) is an input error."""
    for tag in tags:
        if tag.present:
            continue
        slices = range(len(painted)) if tag.slice is None else [tag.slice]
        for k in slices:
            if tag.cls in painted[k]:
                raise InputError(tag.path, f"{tag.where}: class {tag.cls} is tagged absent on slice {k} of {volume} "
                                 "but an annotation paints it there")
