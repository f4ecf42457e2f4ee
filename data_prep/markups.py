"""3D Slicer markups files (``*.mrk.json``): control points -> world points in RAS mm.

The file follows Slicer's published JSON schema (``markups-schema-v1.0.x.json``): a top-level
``"@schema"`` URL and a ``"markups"`` array; each markup has a ``"type"`` (only ``"Fiducial"``,
a point list, is read here), a ``"coordinateSystem"`` (``"LPS"``, the schema's default and what
Slicer writes, or ``"RAS"``), optional ``"coordinateUnits"`` (``"mm"`` or ``"um"``) and
``"controlPoints"``, each with ``"label"``, ``"description"``, ``"position"`` [x, y, z] and
``"positionStatus"`` (points whose status is ``"undefined"`` have no position and are skipped).

The class of a point comes from its label (default) or its description, through the run's
class vocabulary (:mod:`data_prep.user_classes`): ``"LV-1"`` is the class named ``lv``.
World coordinates are those of the image as ``data_prep`` reads it (for NIfTI the qform when
set, as ITK and 3D Slicer do for most files).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_prep.errors import InputError
from data_prep.user_classes import ClassVocabulary

SPACES = ("LPS", "RAS")
UNITS = {"mm": 1.0, "um": 1e-3}


@dataclass(frozen=True)
class WorldPoint:
    """One point: its class, position (RAS mm, or voxel indices when ``voxel``) and where it came from."""

    cls: int
    position: tuple[float, float, float]
    where: str
    path: str
    voxel: bool = False


def read_markups(path: Path, vocab: ClassVocabulary, class_from: str = "label") -> list[WorldPoint]:
    """Every defined control point of every point list in the file, in RAS mm."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, "markups file missing") from None
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(path, f"cannot read the markups file ({err})") from None
    except json.JSONDecodeError as err:
        raise InputError(path, f"not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("markups"), list) or "@schema" not in data:
        raise InputError(path, "not a 3D Slicer markups file (needs \"@schema\" and a \"markups\" list)")
    points = []
    for number, markup in enumerate(data["markups"], start=1):
        if not isinstance(markup, dict) or "type" not in markup:
            raise InputError(path, f"markup {number} has no \"type\": not a 3D Slicer markups file")
        if markup["type"] != "Fiducial":
            raise InputError(path, f"markup {number} is a {markup['type']!r}; only point lists (\"Fiducial\") are read")
        space = markup.get("coordinateSystem", "LPS")
        if space not in SPACES:
            raise InputError(path, f"markup {number}: coordinate system {space!r} is not LPS or RAS")
        units = markup.get("coordinateUnits", "mm")
        units = units[0] if isinstance(units, list) and units else units
        if units not in UNITS:
            raise InputError(path, f"markup {number}: coordinate units {units!r} are not mm or um")
        flip = np.array([-1.0, -1.0, 1.0]) if space == "LPS" else np.ones(3)
        for index, point in enumerate(markup.get("controlPoints") or [], start=1):
            if not isinstance(point, dict):
                raise InputError(path, f"markup {number}, control point {index} is not an object")
            if point.get("positionStatus", "defined") == "undefined":
                continue
            label = str(point.get("label", ""))
            where = f"point {label!r}" if label else f"control point {index}"
            position = point.get("position")
            if (not isinstance(position, list) or len(position) != 3
                    or not all(isinstance(v, (int, float)) and np.isfinite(v) for v in position)):
                raise InputError(path, f"{where}: position {position!r} is not three numbers")
            name = str(point.get(class_from, "") or "")
            cls = vocab.name_to_class(name)
            if cls is None or cls == 255:
                raise InputError(path, f"{where}: class {name!r} (from its {class_from}) is not declared; "
                                 "map it with --annotation-classes")
            ras = flip * np.asarray(position, dtype=np.float64) * UNITS[units]
            points.append(WorldPoint(cls, tuple(float(v) for v in ras), where, str(path)))
    return points
