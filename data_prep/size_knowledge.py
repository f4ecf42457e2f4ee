"""Size knowledge without masks: bounds typed in mm², and sizes an annotator estimated.

- ``--common-bounds-mm2 LO,HI ...`` (one pair per target class): the common bounds in mm²,
  converted per slice to pixels of the prepared grid (``mm2 / (pixel width * pixel height)``),
  so one anatomical range serves scans of every resolution. It needs a real pixel size: an image
  whose header declares no spacing (see :func:`spacing_declared`) is an input error.
- ``--size-estimates CSV``: columns ``case,class,size,unit`` and optionally ``slice`` and
  ``tolerance``. With a slice, the estimate is that slice's area (``unit`` ``mm2``, or ``px`` of the
  prepared grid) and gives the ``individual`` bound; without, it is the whole case's volume
  (``mm3``, ``ml`` or ``px`` summed over the prepared slices) and gives ``volume3d``. The bound is
  ``(1 - tolerance, 1 + tolerance) x size`` (default: ``--individual-margins``). An estimate of 0
  states that the class is absent.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

from data_prep.errors import InputError
from data_prep.tables import Table
from data_prep.user_classes import ClassVocabulary

SLICE_UNITS = ("mm2", "px")
VOLUME_UNITS = {"mm3": 1.0, "ml": 1000.0, "px": None}


@dataclass(frozen=True)
class Estimate:
    cls: int
    size: float
    unit: str
    slice: int | None
    margins: tuple[float, float] | None
    where: str
    path: str

    def pixels(self, pixel_mm2: float, slice_mm: float) -> float:
        """The estimate in pixels of the prepared grid (summed over slices for a volume)."""
        if self.unit == "px":
            return self.size
        if self.slice is not None:
            return self.size / pixel_mm2
        return self.size * VOLUME_UNITS[self.unit] / (pixel_mm2 * slice_mm)


def read_estimates(path, vocab: ClassVocabulary, volumes: set[str]) -> dict[str, list[Estimate]]:
    table = Table(path, "size estimates", ("case", "class", "size", "unit"))
    found: dict[str, list[Estimate]] = {}
    for row, line in table.rows:
        case = table.case(row, line, volumes)
        cls = table.cls(row, line, vocab)
        if cls == 0:
            raise table.error(line, "size estimates are for target classes, not background")
        index = table.optional_int(row, line, "slice")
        unit = row.get("unit", "").lower()
        allowed = SLICE_UNITS if index is not None else tuple(VOLUME_UNITS)
        if unit not in allowed:
            raise table.error(line, f"unit {unit!r}: a {'slice' if index is not None else 'case'} estimate takes "
                              f"{', '.join(allowed)}")
        size = table.number(row, line, "size")
        if size < 0:
            raise table.error(line, f"size {size} is negative")
        margins = None
        if row.get("tolerance", ""):
            tolerance = table.number(row, line, "tolerance")
            if not 0 <= tolerance < 1:
                raise table.error(line, f"tolerance {tolerance} must be a fraction in [0, 1)")
            margins = (1 - tolerance, 1 + tolerance)
        found.setdefault(case, []).append(Estimate(cls, size, unit, index, margins, f"line {line}", str(table.path)))
    return found


def parse_mm2_bounds(values: list[str] | None, n_classes: int) -> tuple[tuple[float, float], ...] | None:
    if not values:
        return None
    pairs = []
    for text in values:
        try:
            low, high = (float(v) for v in text.split(","))
        except ValueError:
            raise InputError(None, f"--common-bounds-mm2 {text!r}: expected two numbers LO,HI") from None
        if not 0 <= low <= high:
            raise InputError(None, f"--common-bounds-mm2 {text!r}: expected 0 <= LO <= HI")
        pairs.append((low, high))
    if len(pairs) != n_classes:
        raise InputError(None, f"--common-bounds-mm2 gives {len(pairs)} pairs for {n_classes} target classes")
    return tuple(pairs)


def spacing_declared(path: Path) -> bool:
    """False when the file's header gives no voxel size (readers then assume 1 mm).

    NIfTI: the spatial unit is "unknown" and every pixdim is exactly 1 (an unset header).
    MetaImage: no ``ElementSpacing``/``ElementSize``. NRRD: no ``spacings`` or ``space directions``.
    DICOM folders are taken as declared (Pixel Spacing is mandatory for MR and CT).
    """
    path = Path(path)
    name = path.name.lower()
    try:
        if name.endswith((".nii", ".nii.gz")):
            opener = gzip.open if name.endswith(".gz") else open
            with opener(path, "rb") as handle:
                header = handle.read(348)
            order = "<" if struct.unpack("<i", header[:4])[0] == 348 else ">"
            pixdim = struct.unpack(f"{order}8f", header[76:108])[1:4]
            units = header[123] & 0x07
            return units != 0 or any(abs(p - 1.0) > 1e-9 for p in pixdim)
        if name.endswith((".mhd", ".mha", ".nhdr", ".nrrd")):
            with open(path, "rb") as handle:
                text = handle.read(8192).decode("latin-1").lower()
            keys = ("elementspacing", "elementsize") if name.endswith((".mhd", ".mha")) else ("spacings:", "space directions:")
            return any(key in text.replace(" =", "=") for key in keys)
    except (OSError, EOFError, struct.error):
        return True  # the image reader reports the unreadable file itself
    return True
