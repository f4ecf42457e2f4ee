"""What the user's annotation files mean: file values and class names -> prepared classes.

Every annotation ends up as a prepared class index ``0..K`` (0 = background, annotated) or
:data:`~data_prep.weak_labels.UNANNOTATED` (255). The user speaks in *raw label values* (the
values of the full masks, the ones ``--targets`` lists), in the words ``background`` and ``none``
(not annotated), and in names of their own:

- ``--weak-values`` maps the values of a label-map file: ``0=background,1=1,2=2,3=3,4=none`` (the
  public ACDC scribbles), ``0=none,1=background,2=3`` (ITK-SNAP: 0 is unpainted). Default
  ``0=none`` and every other file value stands for the raw label value it equals. A value the
  map does not declare is an input error naming the file.
- ``--annotation-classes`` maps names used by point labels, descriptions and the ``class``
  column of the CSV files: ``lv=3,myo=2,rv=1,bg=background``. The raw values themselves, the
  dataset's short class names (``lv``, ``myo``, ``rv`` for ACDC), ``--class-names`` and
  ``background`` are always understood; names are compared case-insensitively.

A raw value that is declared (``--label-values``) but not a target is background, as in the
full masks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from data_prep.errors import InputError
from data_prep.weak_labels import UNANNOTATED

BACKGROUND_WORDS = ("background", "bg")
NONE_WORDS = ("none", "unannotated")
#: Slicer's default labels are "<node name>-<n>": the trailing counter is not part of the class.
COUNTER = re.compile(r"[-_ ]*\d+$")


@dataclass(frozen=True)
class ClassVocabulary:
    """Raw label values and names -> prepared classes for one run."""

    class_map: tuple[tuple[int, ...], ...]
    label_values: frozenset[int]
    names: tuple[tuple[str, str], ...] = ()  # (lower-case name, token: a raw value, 'background' or 'none')

    def raw_to_class(self, raw: int) -> int | None:
        """The class of a raw label value (0 for a declared non-target value); None if undeclared."""
        for cls, raws in enumerate(self.class_map, start=1):
            if raw in raws:
                return cls
        return 0 if raw in self.label_values or raw == 0 else None

    def token_to_class(self, token: str) -> int | None:
        """``'3'`` / ``'background'`` / ``'none'`` -> class index, 0, or UNANNOTATED; None if unknown."""
        text = token.strip().lower()
        if text in BACKGROUND_WORDS:
            return 0
        if text in NONE_WORDS:
            return UNANNOTATED
        if re.fullmatch(r"[+-]?\d+", text):
            return self.raw_to_class(int(text))
        return None

    def name_to_class(self, name: str) -> int | None:
        """A class from a point label or CSV cell: a mapped name, a raw value, a class name or 'background'.

        ``"LV-3"`` (Slicer's ``%N-%d`` label) is tried as itself, then without its counter.
        """
        text = name.strip().lower()
        for candidate in dict.fromkeys((text, COUNTER.sub("", text))):
            if not candidate:
                continue
            for known, token in self.names:
                if known == candidate:
                    return self.token_to_class(token)
            found = self.token_to_class(candidate)
            if found is not None:
                return found
        return None


def vocabulary(class_map, label_values, class_names, short_names, mapping: str | None) -> ClassVocabulary:
    """The run's vocabulary: the user's ``--annotation-classes`` first, then the class names."""
    names: list[tuple[str, str]] = []
    for text in _items(mapping, "--annotation-classes"):
        key, token = text
        names.append((key.lower(), token))
    for cls, raws in enumerate(class_map):
        for name in (class_names[cls], short_names[cls]):
            if name:
                names.append((name.strip().lower(), str(raws[0])))
    result = ClassVocabulary(tuple(class_map), frozenset(label_values), tuple(names))
    for key, token in names:
        if result.token_to_class(token) is None:
            raise InputError(None, f"--annotation-classes {key}={token}: {token} is not a declared label value, "
                             "'background' or 'none'")
    return result


def parse_value_map(text: str | None) -> tuple[tuple[int, str], ...] | None:
    """``'0=background,1=1,4=none'`` -> ((0, 'background'), (1, '1'), (4, 'none')); None for the default."""
    if text is None:
        return None
    pairs = []
    for key, token in _items(text, "--weak-values"):
        try:
            value = int(key)
        except ValueError:
            raise InputError(None, f"--weak-values {text!r}: file value {key!r} is not an integer") from None
        pairs.append((value, token))
    values = [v for v, _ in pairs]
    if len(values) != len(set(values)):
        raise InputError(None, f"--weak-values {text!r}: a file value is declared twice")
    return tuple(pairs)


def value_lookup(pairs: tuple[tuple[int, str], ...] | None, vocab: ClassVocabulary) -> dict[int, int] | None:
    """File value -> class or UNANNOTATED for a declared map (None: the default rule, see :func:`map_values`)."""
    if pairs is None:
        return None
    lookup = {}
    for value, token in pairs:
        cls = vocab.token_to_class(token)
        if cls is None:
            raise InputError(None, f"--weak-values {value}={token}: {token} is not a declared label value, "
                             "'background' or 'none'")
        lookup[value] = cls
    return lookup


def map_values(array: np.ndarray, lookup: dict[int, int] | None, vocab: ClassVocabulary, path) -> np.ndarray:
    """A label-map file's values -> uint8 classes (255 unannotated); an undeclared value names the file."""
    present = _values(array)
    if lookup is None:  # the default: 0 = none, any other value = the raw label value it equals
        lookup = {0: UNANNOTATED}
        for value in present:
            if value != 0:
                cls = vocab.raw_to_class(value)
                if cls is not None:
                    lookup[value] = cls
        rule = "0 = none and the raw label values " + ", ".join(str(v) for v in sorted(vocab.label_values - {0}))
    else:
        rule = "--weak-values " + ", ".join(str(v) for v in sorted(lookup))
    unknown = [v for v in present if v not in lookup]
    if unknown:
        shown = ", ".join(str(v) for v in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
        raise InputError(path, f"annotation values {{{shown}}} not declared (declared: {rule}); map them with --weak-values")
    if min(present) >= 0 and max(present) < 65536:  # a lookup table: one pass over the volume
        table = np.full(max(present) + 1, UNANNOTATED, dtype=np.uint8)
        for value in present:
            table[value] = lookup[value]
        return table[array]
    out = np.full(array.shape, UNANNOTATED, dtype=np.uint8)
    for value in present:
        cls = lookup[value]
        if cls != UNANNOTATED:
            out[array == value] = cls
    return out


def _values(array: np.ndarray) -> list[int]:
    """The distinct values of an integer array (a count of small unsigned values is faster than sorting)."""
    if array.dtype.kind == "u" and array.dtype.itemsize <= 2:
        return [int(v) for v in np.flatnonzero(np.bincount(array.ravel()))]
    return [int(v) for v in np.unique(array)]


def _items(text: str | None, option: str) -> list[tuple[str, str]]:
    if not text:
        return []
    items = []
    for part in text.split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise InputError(None, f"{option} {text!r}: expected KEY=VALUE pairs separated by commas")
        items.append((key.strip(), value.strip()))
    return items
