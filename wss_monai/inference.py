"""Segment raw scans (no label needed) with a trained model, and write each result in the scan's own geometry.

A scan is a NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``, ``.nhdr``) or MetaImage (``.mha``,
``.mhd``) file, or a folder holding one DICOM series. For each scan:

1. read it with MONAI's ``LoadImage`` (nibabel for NIfTI, ITK for the rest): an array in file
   index order (i, j, k) and its affine to RAS mm;
2. repeat the preprocessing the model was trained with, read from the model card saved beside
   the checkpoint (``models/preprocessing.json``, :data:`~wss_monai.tracking.record.MODEL_CARD`),
   never from a dataset folder: intensity percentiles to [0, 1], the in-plane plan to the
   network's slice size, slices along the training slice axis (:mod:`wss_monai.geometry`, the
   code data_prep prepared the training data with);
3. segment the slices in batches, then map the labels back with the plan's inverse
   (:func:`~wss_monai.geometry.invert_plan`, nearest neighbour) to the scan's grid;
4. write ``<output_dir>/<scan name>_seg.nii.gz`` (uint8; a DICOM series is named after its
   folder) with the scan's shape and affine: a NIfTI scan lends its whole header (qform, sform,
   codes), so the segmentation overlays it in 3D Slicer; with ``probabilities`` also
   ``<scan name>_prob.nii.gz`` (float32, one channel per class on a 4th axis).

Why not MONAI's ``Invertd``: the training slices were made by data_prep with
:func:`~wss_monai.geometry.apply_plan` (pixel-centre resampling, optional centred pad/crop), not
by MONAI transforms that record themselves; the inverse of that plan is
:func:`~wss_monai.geometry.invert_plan`, tested to round-trip (tests/test_geometry.py).

A scan that cannot be read, is not 3D, or whose name cannot be a file name is reported with one
line and skipped; the others are written. :meth:`ScanSegmenter.run` returns the records and
the run ends with exit code 2 if any scan was skipped.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wss_monai.engine.errors import fail
from wss_monai.geometry import apply_plan, inplane_axes, invert_plan, normalise_intensity, plan_inplane, stack_slices

__all__ = ["ScanSegmenter", "find_scans", "read_model_card", "load_model", "read_scan", "scan_name", "SCAN_SUFFIXES"]

logger = logging.getLogger("wss_monai.inference")

NIFTI_SUFFIXES = (".nii.gz", ".nii")
SCAN_SUFFIXES = (*NIFTI_SUFFIXES, ".nrrd", ".nhdr", ".mha", ".mhd")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
BUNDLE = "wss_segmentation"


class ScanError(ValueError):
    """A scan that cannot be segmented (unreadable, not 3D, bad name); the message names it."""


# ------------------------------------------------------------------------------------------------
# the model and its card


def read_model_card(ckpt_path: str | os.PathLike | None, bundle: str = BUNDLE) -> dict[str, Any]:
    """The model card beside ``ckpt_path`` (``preprocessing.json``), checked; bad input ends the run (exit 2)."""
    if ckpt_path is None or str(ckpt_path).strip() == "":
        fail("ckpt_path is required: pass --ckpt_path RUN/models/model.pt (a training run's best checkpoint).")
    ckpt = Path(str(ckpt_path)).expanduser()
    if not ckpt.is_file():
        fail(f"{ckpt}: no such checkpoint (train first, or pass --ckpt_path RUN/models/model.pt).")
    card_path = ckpt.parent / "preprocessing.json"
    try:
        card = json.loads(card_path.read_text())
    except FileNotFoundError:
        fail(f"{card_path}: missing; this checkpoint was not written by the {bundle} bundle (its model card holds the preprocessing).")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        fail(f"{card_path}: cannot read it as JSON ({err}).")
    if not isinstance(card, dict) or card.get("bundle") != bundle:
        fail(f"{card_path}: a model of the bundle {card.get('bundle') if isinstance(card, dict) else None!r}, not {bundle!r}.")
    pre = card.get("preprocessing")
    if not isinstance(pre, dict) or not isinstance(pre.get("size"), list) or len(pre["size"]) != 2 or pre.get("slice_axis") not in (0, 1, 2):
        fail(f"{card_path}: 'preprocessing' must give slice_axis (0, 1 or 2) and size [H, W]; got {pre!r}.")
    n = card.get("num_classes")
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        fail(f"{card_path}: 'num_classes' must be a whole number >= 2, got {n!r}.")
    return card


def load_model(network: torch.nn.Module, ckpt_path: str | os.PathLike, card: Mapping[str, Any], device: Any = None) -> torch.nn.Module:
    """``network`` with the checkpoint's weights (``weights_only=True``), after checking the class count against the card."""
    from wss_monai.engine.weights import fit_weights, read_weights

    expected = int(card["num_classes"])
    fit_weights(network, read_weights(ckpt_path), ckpt_path,
                hint=f"network_def is built for {expected} classes from the model card; use the checkpoint beside it.")
    with torch.no_grad():
        probe = torch.zeros(1, int(card.get("in_channels", 1)), *[int(s) for s in card["preprocessing"]["size"]])
        out = network.eval()(probe)
    if out.shape[1] != expected:
        fail(f"{ckpt_path}: the network gives {out.shape[1]} classes, its model card says {expected}.")
    return network.to(device) if device is not None else network


# ------------------------------------------------------------------------------------------------
# scans


def scan_name(path: Path) -> str:
    """The output stem of a scan: its file name without the extension, or a DICOM folder's name."""
    name = path.name
    for suffix in SCAN_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def find_scans(input_dir: str | os.PathLike | None = None, input_files: Sequence[str] | str | None = None) -> list[Path]:
    """The scans to segment: the files with a scan suffix and the DICOM series folders under ``input_dir``
    (top level: a folder counts when it holds no scan file), and/or the paths in ``input_files``."""
    paths: list[Path] = []
    if input_files:
        items = [input_files] if isinstance(input_files, (str, os.PathLike)) else list(input_files)
        paths += [Path(str(p)).expanduser() for p in items]
    if input_dir is not None and str(input_dir).strip():
        root = Path(str(input_dir)).expanduser()
        if not root.is_dir():
            fail(f"{root}: input_dir does not exist or is not a folder.")
        for entry in sorted(root.iterdir()):
            if entry.name.startswith("."):
                continue
            if entry.is_file() and entry.name.lower().endswith(SCAN_SUFFIXES) and not entry.name.lower().endswith(".raw"):
                paths.append(entry)
            elif entry.is_dir() and not entry.name.lower().endswith(SCAN_SUFFIXES):
                paths.append(entry)
    if not paths:
        fail("no scan to segment: pass --input_dir SCANS (NIfTI, NRRD, MetaImage files or DICOM series folders) or --input_files.")
    names = [scan_name(p) for p in paths]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        fail(f"two scans would write the same output name: {', '.join(twice)}; rename one.")
    return paths


def read_scan(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(array float32 in file index order (i, j, k), affine to RAS mm) of a scan; raises :class:`ScanError`."""
    from monai.transforms import LoadImage

    if not path.exists():
        raise ScanError(f"{path}: no such scan")
    if path.is_dir():
        reader = "ITKReader"
    elif path.name.lower().endswith(NIFTI_SUFFIXES):
        reader = "NibabelReader"
    elif path.name.lower().endswith(SCAN_SUFFIXES):
        reader = "ITKReader"
    else:
        raise ScanError(f"{path}: unknown scan format (expected .nii, .nii.gz, .nrrd, .nhdr, .mha, .mhd or a DICOM folder)")
    try:
        with warnings.catch_warnings():
            # MONAI notes on every DICOM-capable reader that its GPU decoder plugin is absent; the
            # CPU decoders it falls back to are the ones used here, so the notice is only noise
            warnings.filterwarnings("ignore", message=".*nvImageCodec.*")
            image = LoadImage(reader=reader, image_only=True, dtype=np.float32)(str(path))
    except Exception as err:  # the readers raise many types for a bad file
        while err.__cause__ is not None:
            err = err.__cause__
        reason = " ".join(str(err).split())[:200] or type(err).__name__
        raise ScanError(f"{path}: cannot read the scan ({reason})") from None
    array = np.asarray(image.detach().cpu().numpy() if hasattr(image, "detach") else image, dtype=np.float32)
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3 or min(array.shape) < 1:
        raise ScanError(f"{path}: is {array.ndim}D with shape {tuple(array.shape)}; the model segments 3D scans slice by slice")
    if not np.all(np.isfinite(array)):
        raise ScanError(f"{path}: has NaN or infinite intensities")
    affine = np.asarray(image.affine, dtype=np.float64)
    return array, affine


def _spacing(affine: np.ndarray) -> tuple[float, float, float]:
    return tuple(float(v) for v in np.linalg.norm(affine[:3, :3], axis=0))  # type: ignore[return-value]


def _save(array: np.ndarray, scan: Path, affine: np.ndarray, out: Path) -> None:
    """Write ``array`` as NIfTI with the scan's geometry (a NIfTI scan lends its header), atomically."""
    import nibabel as nib

    if scan.is_file() and scan.name.lower().endswith(NIFTI_SUFFIXES):
        raw = nib.load(str(scan))
        header = raw.header.copy()
        header.set_data_dtype(array.dtype)
        image = type(raw)(array, None, header=header)  # the scan's qform/sform exactly
        image.header.set_slope_inter(1.0, 0.0)
        if array.ndim == 4:
            image.header.set_intent("vector")
    else:
        image = nib.Nifti1Image(array, affine)
        image.header.set_qform(affine, code=1)
        image.header.set_sform(affine, code=1)
    tmp = out.with_name(f".{out.name[: -len('.nii.gz')]}.tmp.nii.gz")
    nib.save(image, str(tmp))
    os.replace(tmp, out)


# ------------------------------------------------------------------------------------------------


class ScanSegmenter:
    """Segment raw scans slice by slice and write the results in their geometry (module docstring).

    Args:
        network: the trained network (logits (B, C, H, W) for slices (B, 1, H, W)).
        card: the model card (:func:`read_model_card`): ``preprocessing`` and ``num_classes``.
        output_dir: where ``<scan name>_seg.nii.gz`` go (created; must not be a file).
        device: where the network runs (default: the network's device).
        batch_size: slices per forward pass.
        probabilities: also write the softmax probabilities (``<scan name>_prob.nii.gz``).
        amp: run the forward pass under autocast.
        progress: a progress bar over the scans (``"auto"``: when stderr is a terminal).
    """

    def __init__(
        self,
        network: torch.nn.Module,
        card: Mapping[str, Any],
        output_dir: str | os.PathLike | None,
        device: Any = None,
        batch_size: int = 32,
        probabilities: bool = False,
        amp: bool = False,
        progress: bool | str = "auto",
    ) -> None:
        from wss_monai.engine.errors import as_bool

        if output_dir is None or str(output_dir).strip() == "":
            fail("output_dir is required: pass --output_dir OUT (created if missing).")
        self.output_dir = Path(str(output_dir)).expanduser()
        if self.output_dir.exists() and not self.output_dir.is_dir():
            fail(f"{self.output_dir}: output_dir is a file; pass a folder.")
        self.network = network.eval()
        self.card = dict(card)
        self.pre = dict(card["preprocessing"])
        self.device = torch.device(device) if device is not None else next(network.parameters()).device
        if isinstance(batch_size, bool) or int(batch_size) < 1:
            fail(f"batch_size must be a whole number >= 1, got {batch_size!r}.")
        self.batch_size = int(batch_size)
        self.probabilities = as_bool(probabilities, "probabilities")
        self.amp = as_bool(amp, "amp")
        progress = as_bool(progress, "progress", keep=("auto",))
        self.progress = sys.stderr.isatty() if progress == "auto" else bool(progress)

    @torch.no_grad()
    def predict_slices(self, slices: np.ndarray) -> np.ndarray:
        """Softmax probabilities (N, C, H, W) float32 of image slices (N, H, W)."""
        out = []
        for start in range(0, len(slices), self.batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(slices[start : start + self.batch_size], dtype=np.float32))[:, None]
            with torch.autocast(self.device.type, enabled=self.amp):
                logits = self.network(batch.to(self.device))
            out.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
        return np.concatenate(out)

    def segment(self, array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(labels uint8 on the scan's grid, probabilities (C, *grid) float32) of one scan array."""
        axis = int(self.pre["slice_axis"])
        axes = inplane_axes(axis)
        spacing = _spacing(affine)
        plan = plan_inplane(
            shape=tuple(array.shape[a] for a in axes),
            spacing=tuple(spacing[a] for a in axes),
            size=tuple(int(s) for s in self.pre["size"]),
            mode=str(self.pre.get("resize", "stretch")),
            target_spacing=self.pre.get("inplane_spacing"),
        )
        percentiles = tuple(float(p) for p in self.pre.get("percentiles") or (0.5, 99.5))
        volume = apply_plan(normalise_intensity(array, percentiles), plan, axes, order=1)
        probs = self.predict_slices(np.moveaxis(volume, axis, 0))  # (N, C, H, W)
        labels = stack_slices(list(probs.argmax(1).astype(np.uint8)), axis)
        labels = invert_plan(labels, plan, axes, order=0)
        if not self.probabilities:
            return labels, np.zeros((0,), np.float32)
        channels = [invert_plan(stack_slices(list(probs[:, c]), axis), plan, axes, order=1) for c in range(probs.shape[1])]
        return labels, np.stack(channels).astype(np.float32)

    def run(self, scans: Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
        """Segment every scan; one record per scan (``scan``, ``segmentation`` or ``error``); exit 2 at the end if any failed."""
        from tqdm import tqdm

        scans = [Path(str(s)) for s in scans]
        records: list[dict[str, Any]] = []
        for scan in tqdm(scans, desc="segmenting", unit="scan", disable=not self.progress):
            record: dict[str, Any] = {"scan": str(scan)}
            try:
                name = scan_name(scan)
                if not SAFE_NAME.match(name) or name in (".", ".."):
                    raise ScanError(f"{scan}: the name {name!r} cannot become a file name (letters, digits, . _ + - only)")
                array, affine = read_scan(scan)
                labels, probs = self.segment(array, affine)
                out = self.output_dir / f"{name}_seg.nii.gz"
                self.output_dir.mkdir(parents=True, exist_ok=True)  # only once there is something to write
                _save(labels.astype(np.uint8), scan, affine, out)
                record["segmentation"] = str(out)
                if self.probabilities:
                    out_p = self.output_dir / f"{name}_prob.nii.gz"
                    _save(np.moveaxis(probs, 0, -1).astype(np.float32), scan, affine, out_p)
                    record["probabilities"] = str(out_p)
                record["shape"] = list(labels.shape)
            except ScanError as err:
                message = " ".join(str(err).split())
                print(f"error: {message}; skipped", file=sys.stderr, flush=True)
                record["error"] = message
            records.append(record)
        done = sum("segmentation" in r for r in records)
        logger.info(f"inference: {done} of {len(records)} scans segmented into {self.output_dir}")
        failed = [r for r in records if "error" in r]
        if failed:
            from wss_monai.engine.errors import BundleInputError

            raise BundleInputError(f"{len(failed)} of {len(records)} scans could not be segmented (listed above); the others are in {self.output_dir}.")
        return records
