"""Raw layouts -> a list of :class:`Case` (one image/label pair each), one small module per source.

Like nnU-Net v2's dataset conversion scripts, each source module only knows where its files are
and what its label values mean; everything after (reading, resampling, weak labels, bounds,
splits, writing) is shared in :mod:`data_prep.prepare`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from data_prep.errors import InputError


@dataclass(frozen=True)
class Case:
    """One 3D image with its full label map (``label`` None: a weak-only case, annotated by the user).

    ``patient`` groups the volumes that must stay in one split (ACDC: the ED and ES frames of a
    patient); ``volume`` is unique and safe as a file name; ``group`` is the stratum for a
    stratified split (ACDC pathology) or ``None``; ``info`` holds extra facts worth recording.
    """

    patient: str
    volume: str
    image: Path
    label: Path | None
    group: str | None = None
    info: dict = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class SourceSpec:
    """What a source contributes besides its cases: label meanings and the papers' defaults.

    ``label_names`` maps each raw label value to (short name, long name); ``label_values`` is the
    declared set a label file may contain (anything else is an input error).
    """

    name: str
    label_names: dict[int, tuple[str, str]]
    label_values: frozenset[int]
    default_targets: str
    slice_axis: int
    val: str
    test: str
    weak: str
    notes: str = ""


def require_folder(src: str | Path) -> Path:
    """``src`` as a Path, or an InputError when it is missing or not a folder."""
    src = Path(src)
    if not src.exists():
        raise InputError(src, "source folder does not exist")
    if not src.is_dir():
        raise InputError(src, "source is not a folder")
    return src


def require_label(image: Path, label: Path, optional: bool = False) -> Path | None:
    """``label`` if it exists; otherwise an InputError naming the missing label file, or None when
    full masks are ``optional`` (the user gave weak annotations: the case is weak-only)."""
    if not label.exists() and not label.is_symlink():  # a broken link or loop: read_volume says which
        if optional:
            return None
        raise InputError(label, f"label file missing (expected beside image {image.name})")
    return label


def check_unique_volumes(cases: list[Case], src: Path) -> list[Case]:
    """Refuse two cases with the same volume id (e.g. the same zip unpacked twice under ``src``)."""
    seen: dict[str, Path] = {}
    for case in cases:
        if case.volume in seen:
            raise InputError(case.image, f"volume {case.volume} found twice (also {seen[case.volume]})")
        seen[case.volume] = case.image
    return cases


def paired_by_name(src: str | Path, glob: str, image_name: re.Pattern, label_name: Callable[[re.Match], str],
                   nothing_found: str, labels_optional: bool = False) -> list[Case]:
    """One case per image under ``src`` whose name matches ``image_name`` (group 1 = the case id),
    paired with the label file ``label_name(match)`` in the same folder (the PROMISE12 and
    vertebral layouts); ``nothing_found`` is the error when no image matches."""
    src = require_folder(src)
    images = sorted((p for p in src.rglob(glob) if image_name.fullmatch(p.name)), key=lambda p: (p.name, str(p)))
    if not images:
        raise InputError(src, nothing_found)
    cases = []
    for image in images:
        match = image_name.fullmatch(image.name)
        label = require_label(image, image.with_name(label_name(match)), labels_optional)
        cases.append(Case(patient=match.group(1), volume=match.group(1), image=image, label=label))
    return check_unique_volumes(cases, src)
