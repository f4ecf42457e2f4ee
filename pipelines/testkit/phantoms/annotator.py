"""Annotator-like annotations for the ACDC phantom: what a radiology group actually hands over.

``python -m pipelines.testkit.phantoms acdc --annotator N`` writes the ACDC phantom with full masks
(``_gt`` files) for the last ``N`` patients only, and for every ED/ES frame of every patient:

- ``patientXXX_frameYY_scribble.nii.gz``: thin irregular strokes (1 pixel wide random walks that
  wander inside a structure) on about half of the slices, one per structure present (RV,
  myocardium, LV) and one in the background around the heart, in the public ACDC scribble
  convention: 0 background, 1 RV, 2 myocardium, 3 LV, 4 unannotated
  (``--weak-values 0=background,1=1,2=2,3=3,4=none``);
- ``patientXXX_frameYY.mrk.json``: a few clicks per structure as a 3D Slicer point list (schema
  v1.0.3), labelled ``RV-n``, ``MYO-n``, ``LV-n``, ``BG-n``; odd patients in LPS, even in RAS;

and at the root ``tags.csv`` (``case,slice,class,present`` for every slice and structure: the
spreadsheet of which slices contain what) and ``size_estimates.csv`` (``case,class,slice,size,
unit,tolerance``: the LV area of the scribbled slices in mm², estimated within about 5%).
Strokes and clicks are drawn from the masks, so they are always inside the right structure.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from pipelines.testkit.phantoms.writers import save_nifti

UNANNOTATED_VALUE = 4
NAMES = {1: "rv", 2: "myo", 3: "lv"}
SCHEMA = "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/Schema/markups-schema-v1.0.3.json#"
TAGS = "tags.csv"
ESTIMATES = "size_estimates.csv"
FRAGMENT = "_annotator_rows.json"


def random_walk(region: np.ndarray, rng: np.random.Generator, steps: int) -> np.ndarray:
    """A 1-pixel-wide, 8-connected irregular stroke inside ``region`` (2D bool), up to ``steps`` long."""
    stroke = np.zeros_like(region, dtype=bool)
    coords = np.argwhere(region)
    if len(coords) == 0:
        return stroke
    position = coords[rng.integers(len(coords))].astype(float)
    angle = rng.uniform(0, 2 * np.pi)
    stroke[tuple(position.astype(int))] = True
    for _ in range(steps):
        for _attempt in range(8):
            candidate = np.round(position + (np.cos(angle), np.sin(angle))).astype(int)
            inside = all(0 <= candidate[a] < region.shape[a] for a in range(2)) and region[tuple(candidate)]
            if inside:
                break
            angle = rng.uniform(0, 2 * np.pi)
        else:
            break
        position = candidate.astype(float)
        stroke[tuple(candidate)] = True
        angle += rng.normal(0, 0.35)
    return stroke


def scribbles(label: np.ndarray, rng: np.random.Generator, fraction: float = 0.5) -> np.ndarray:
    """The scribble file's array (ACDC convention, 4 = unannotated) for one (X, Y, Z) label volume."""
    out = np.full(label.shape, UNANNOTATED_VALUE, dtype=np.uint8)
    n_slices = label.shape[2]
    chosen = rng.random(n_slices) < fraction
    chosen[rng.integers(n_slices)] = True
    for k in np.flatnonzero(chosen):
        plane = label[:, :, k]
        for cls in (1, 2, 3):
            inner = ndimage.binary_erosion(plane == cls)
            if inner.sum() >= 6:
                length = int(max(6, 1.2 * np.sqrt(inner.sum())))
                out[:, :, k][random_walk(inner, rng, length)] = cls
        heart = plane > 0
        if heart.any():
            distance = ndimage.distance_transform_edt(~heart)
            ring = (distance > 3) & (distance < 12)
        else:
            ring = np.zeros_like(heart)
            ring[plane.shape[0] // 3 : 2 * plane.shape[0] // 3, plane.shape[1] // 3 : 2 * plane.shape[1] // 3] = True
        out[:, :, k][random_walk(ring, rng, int(plane.shape[0] * 0.8))] = 0
    return out


def clicks(label: np.ndarray, affine: np.ndarray, rng: np.random.Generator, lps: bool) -> list[dict]:
    """Slicer control points: up to two clicks per structure deep inside it, and one in the background."""
    points = []
    counters = {}
    flip = np.array([-1.0, -1.0, 1.0]) if lps else np.ones(3)
    n_slices = label.shape[2]
    for cls in (3, 2, 1, 0):
        candidates = [k for k in range(n_slices) if np.count_nonzero(label[:, :, k] == cls) >= 20]
        if cls == 0:
            candidates = [k for k in candidates if (label[:, :, k] > 0).any()]
        for k in rng.permutation(candidates)[: 1 if cls == 0 else 2]:
            plane = label[:, :, int(k)] == cls
            if cls == 0:
                plane &= ndimage.distance_transform_edt(label[:, :, int(k)] == 0) < 15
            depth = ndimage.distance_transform_edt(plane)
            deep = np.argwhere(depth >= max(1.0, depth.max() * 0.7))
            i, j = deep[rng.integers(len(deep))]
            ras = (affine @ np.array([i, j, int(k), 1.0]))[:3]
            name = "BG" if cls == 0 else NAMES[cls].upper()
            counters[name] = counters.get(name, 0) + 1
            points.append({
                "id": str(len(points) + 1), "label": f"{name}-{counters[name]}", "description": "",
                "associatedNodeID": "", "position": [round(float(v), 4) for v in flip * ras],
                "orientation": [-1.0, -0.0, -0.0, -0.0, -1.0, -0.0, 0.0, 0.0, 1.0] if lps
                else [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                "selected": True, "locked": False, "visibility": True, "positionStatus": "defined",
            })
    return points


def markups_json(points: list[dict], lps: bool) -> str:
    """A point list exactly as 3D Slicer saves it (markups schema v1.0.3)."""
    document = {
        "@schema": SCHEMA,
        "markups": [{
            "type": "Fiducial", "coordinateSystem": "LPS" if lps else "RAS", "coordinateUnits": "mm",
            "locked": False, "fixedNumberOfControlPoints": False, "labelFormat": "%N-%d",
            "lastUsedControlPointNumber": len(points), "controlPoints": points, "measurements": [],
            "display": {"visibility": True, "opacity": 1.0, "color": [0.4, 1.0, 1.0],
                        "selectedColor": [1.0, 0.5000076295109484, 0.5000076295109484], "activeColor": [0.4, 1.0, 0.0],
                        "propertiesLabelVisibility": False, "pointLabelsVisibility": True, "textScale": 3.0,
                        "glyphType": "Sphere3D", "glyphScale": 3.0, "glyphSize": 5.0, "useGlyphScale": True,
                        "sliceProjection": False, "sliceProjectionUseFiducialColor": True,
                        "sliceProjectionOutlinedBehindSlicePlane": False, "sliceProjectionColor": [1.0, 1.0, 1.0],
                        "sliceProjectionOpacity": 0.6, "lineThickness": 0.2, "lineColorFadingStart": 1.0,
                        "lineColorFadingEnd": 10.0, "lineColorFadingSaturation": 1.0, "lineColorFadingHueOffset": 0.0,
                        "handlesInteractive": False, "snapMode": "toVisibleSurface"},
        }],
    }
    return json.dumps(document, indent=4) + "\n"


def annotate_frame(folder: Path, volume: str, label: np.ndarray, image: nib.Nifti1Image, rng: np.random.Generator,
                   lps: bool, spacing: tuple[float, float, float]) -> dict:
    """Write one frame's scribbles and clicks; return its rows of the tags and size-estimate tables."""
    scribble = scribbles(label, rng)
    header = image.header.copy()
    header.set_data_dtype(np.uint8)
    annotation = nib.Nifti1Image(scribble, image.affine, header)
    annotation.set_qform(image.get_qform(), code=1)
    annotation.set_sform(image.get_sform(), code=1)
    save_nifti(annotation, folder / f"{volume}_scribble.nii.gz")
    affine = image.get_qform()
    (folder / f"{volume}.mrk.json").write_text(markups_json(clicks(label, affine, rng, lps), lps), encoding="utf-8")
    tags, estimates = [], []
    pixel_mm2 = spacing[0] * spacing[1]
    for k in range(label.shape[2]):
        present = {int(c) for c in np.unique(label[:, :, k])}
        for cls, name in NAMES.items():
            tags.append([volume, k, name, int(cls in present)])
        if (scribble[:, :, k] != UNANNOTATED_VALUE).any():
            area = np.count_nonzero(label[:, :, k] == 3) * pixel_mm2
            estimates.append([volume, "lv", k, round(float(area * rng.normal(1.0, 0.03)), 1), "mm2", 0.15])
    return {"tags": tags, "estimates": estimates}


def write_rows(folder: Path, rows: dict) -> None:
    """Keep a case's table rows beside it until :func:`merge_tables` collects them."""
    (folder / FRAGMENT).write_text(json.dumps(rows), encoding="utf-8")


def merge_tables(root: Path) -> None:
    """Collect every case's rows into ``tags.csv`` and ``size_estimates.csv`` at the root (sorted, deterministic)."""
    tags, estimates = [], []
    for fragment in sorted(root.rglob(FRAGMENT)):
        rows = json.loads(fragment.read_text(encoding="utf-8"))
        tags += rows["tags"]
        estimates += rows["estimates"]
        fragment.unlink()
    for name, header, rows in ((TAGS, ["case", "slice", "class", "present"], tags),
                               (ESTIMATES, ["case", "class", "slice", "size", "unit", "tolerance"], estimates)):
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(sorted(rows, key=lambda r: (r[0], r[2] if name == ESTIMATES else r[1], str(r[1:]))))
        (root / name).write_text(buffer.getvalue(), encoding="utf-8")
