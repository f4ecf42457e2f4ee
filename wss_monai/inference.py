"""Predict whole volumes of a prepared dataset and write them as NIfTI label maps, in two geometries.

For each volume of the chosen split (``dataset.json`` ``"volumes"``), the network segments the
slices of the prepared volume (``volumes/<name>_image.nii``) and the argmax maps are written

- on the prepared grid: ``<out>/prepared/<name>_pred.nii.gz``, the slices stacked along the slice
  axis with the prepared volume's affine (it overlays ``volumes/<name>_image.nii``);
- in the original geometry: ``<out>/original/<name>_pred.nii.gz``, mapped back to the raw volume's
  grid with :func:`data_prep.slicing.restore_volume` (nearest neighbour) and written with the raw
  image's own header (NIfTI raw data: same qform, sform and shape, quirks included) or its affine
  (MetaImage, NRRD, DICOM raw data): it overlays the raw image in 3D Slicer or ITK-SNAP.

The raw dataset is found at ``raw_root`` (default: the ``src`` recorded in ``prep.json``, tried
against the working folder and the prepared dataset's folder). Without it, only the
prepared-grid files are written, with a warning. ``<out>/predictions.json`` lists every file.

Example (what ``bundles/*/configs/inference.json`` runs)::

    predictor = VolumePredictor(network, "prepared/acdc-lv", "runs/x/inference", split="test")
    predictor.run()
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["VolumePredictor", "find_raw_root", "save_nifti_like_raw"]

logger = logging.getLogger("wss_monai.inference")


def find_raw_root(dataset_dir: str | os.PathLike, volumes: Sequence[dict], raw_root: str | os.PathLike | None = None) -> Path | None:
    """The folder the raw volumes' ``raw_image`` paths are relative to, or None if it cannot be found.

    ``raw_root`` if given (it must exist); else ``prep.json``'s ``src``: as is when absolute,
    otherwise against the working folder, the prepared dataset's parent and the dataset itself. A
    candidate counts when it holds the first volume's raw image.
    """
    from wss_monai.engine.errors import fail

    probe = next((v.get("raw_image") for v in volumes if v.get("raw_image")), None)
    if raw_root is not None and str(raw_root).strip() != "":
        root = Path(str(raw_root)).expanduser()
        if not root.is_dir():
            fail(f"{root}: raw_root does not exist or is not a folder.")
        if probe and not (root / probe).exists():
            fail(f"{root}: raw_root does not hold the raw volumes ({probe} is missing).")
        return root.resolve()
    dataset_dir = Path(dataset_dir)
    try:
        src = json.loads((dataset_dir / "prep.json").read_text()).get("src")
    except (OSError, json.JSONDecodeError):
        src = None
    if not src or not probe:
        return None
    src_path = Path(str(src)).expanduser()
    candidates = [src_path] if src_path.is_absolute() else [Path.cwd() / src_path, dataset_dir.parent / src_path, dataset_dir / src_path]
    for candidate in candidates:
        if (candidate / probe).exists():
            return candidate.resolve()
    return None


def _atomic_save(image, path: Path) -> None:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix
    tmp = path.with_name(f".{path.name[: -len(suffix)]}.tmp{suffix}")
    nib.save(image, str(tmp))
    os.replace(tmp, path)


def save_nifti_like_raw(labels: np.ndarray, raw_path: str | os.PathLike, out_path: str | os.PathLike) -> Path:
    """Write ``labels`` (the raw grid, file index order) as uint8 NIfTI that overlays ``raw_path``.

    A NIfTI raw image lends its header (qform, sform, codes, units): the output has exactly its
    geometry. Other formats (read with :func:`data_prep.io.read_volume`) give their RAS affine.
    """
    import nibabel as nib

    raw_path, out_path = Path(raw_path), Path(out_path)
    labels = np.asarray(labels).astype(np.uint8)
    if raw_path.name.lower().endswith((".nii", ".nii.gz")):
        raw = nib.load(str(raw_path))
        header = raw.header.copy()
        if tuple(raw.shape[:3]) != labels.shape:
            raise ValueError(f"{raw_path}: raw shape {raw.shape} differs from the restored prediction {labels.shape}.")
        header.set_data_dtype(np.uint8)
        image = type(raw)(labels, None, header=header)  # affine None: the raw qform/sform stay as they are
        image.header.set_slope_inter(1.0, 0.0)
    else:
        from data_prep.io import read_volume

        volume = read_volume(raw_path, role="image")
        if tuple(volume.array.shape) != labels.shape:
            raise ValueError(f"{raw_path}: raw shape {volume.array.shape} differs from the restored prediction {labels.shape}.")
        image = nib.Nifti1Image(labels, volume.affine)
        image.header.set_qform(volume.affine, code=1)
        image.header.set_sform(volume.affine, code=1)
    _atomic_save(image, out_path)
    return out_path


class VolumePredictor:
    """Segment the volumes of a prepared dataset and write NIfTI predictions (module docstring).

    Args:
        network: the trained network (logits (B, C, H, W) for slices (B, 1, H, W)), in eval mode.
        dataset_dir: the prepared dataset.
        output_dir: where ``prepared/``, ``original/`` and ``predictions.json`` go.
        split: ``test``, ``validation``, ``training`` or ``all``.
        raw_root: the raw dataset (see :func:`find_raw_root`).
        device: where the network runs (default: the network's device).
        batch_size: slices per forward pass.
        amp: run the forward pass under autocast.
        original: also write the original-geometry files (needs the raw dataset).
    """

    def __init__(
        self,
        network: torch.nn.Module,
        dataset_dir: str | os.PathLike,
        output_dir: str | os.PathLike,
        split: str = "test",
        raw_root: str | os.PathLike | None = None,
        device: Any = None,
        batch_size: int = 16,
        amp: bool = False,
        original: bool = True,
    ) -> None:
        self.network = network
        self.dataset_dir = Path(dataset_dir)
        self.output_dir = Path(output_dir)
        self.split = split
        self.device = torch.device(device) if device is not None else next(network.parameters()).device
        self.batch_size = max(1, int(batch_size))
        self.amp = bool(amp)
        manifest = json.loads((self.dataset_dir / "dataset.json").read_text())
        volumes = manifest.get("volumes") or []
        self.volumes = [v for v in volumes if split == "all" or v.get("split") == split]
        self.raw_root = find_raw_root(self.dataset_dir, self.volumes, raw_root) if original else None
        if original and self.raw_root is None:
            warnings.warn(
                f"{self.dataset_dir}: the raw dataset recorded in prep.json was not found; writing predictions on the "
                "prepared grid only (pass --raw_root RAW for the original geometry).",
                stacklevel=2,
            )
            logger.warning("raw dataset not found: predictions on the prepared grid only (pass --raw_root)")

    @torch.no_grad()
    def predict_slices(self, slices: np.ndarray) -> np.ndarray:
        """Argmax labels (N, H, W) uint8 of image slices (N, H, W)."""
        self.network.eval()
        out = []
        for start in range(0, len(slices), self.batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(slices[start : start + self.batch_size], dtype=np.float32))[:, None]
            batch = batch.to(self.device)
            with torch.autocast(self.device.type, enabled=self.amp):
                logits = self.network(batch)
            out.append(logits.argmax(1).to(torch.uint8).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, *slices.shape[1:]), np.uint8)

    def predict_volume(self, info: dict) -> dict[str, Any]:
        """Predict one volume (its ``dataset.json`` ``"volumes"`` entry) and write its files."""
        import nibabel as nib

        from data_prep.slicing import restore_volume, stack_slices

        name = str(info["volume"])
        axis = int(info.get("slice_axis", 2))
        image = nib.load(str(self.dataset_dir / info["image"]))
        array = np.asarray(image.dataobj, dtype=np.float32)
        slices = np.moveaxis(array, axis, 0)
        labels = self.predict_slices(slices)
        record: dict[str, Any] = {"volume": name, "split": info.get("split"), "n_slices": int(labels.shape[0])}
        prepared = nib.Nifti1Image(stack_slices(list(labels), axis).astype(np.uint8), image.affine)
        prepared.header.set_qform(image.affine, code=1)
        prepared.header.set_sform(image.affine, code=1)
        path = self.output_dir / "prepared" / f"{name}_pred.nii.gz"
        _atomic_save(prepared, path)
        record["prepared"] = str(path)
        if self.raw_root is not None and info.get("raw_image") and info.get("plan"):
            raw_path = self.raw_root / info["raw_image"]
            restored = restore_volume(list(labels), info, order=0)
            out = save_nifti_like_raw(restored, raw_path, self.output_dir / "original" / f"{name}_pred.nii.gz")
            record["original"] = str(out)
            record["raw_image"] = str(raw_path)
        return record

    def run(self) -> list[dict[str, Any]]:
        """Predict every volume of the split; returns (and writes to ``predictions.json``) one record each."""
        if not self.volumes:
            raise ValueError(f"{self.dataset_dir / 'dataset.json'}: no volume in the split {self.split!r}.")
        records = [self.predict_volume(info) for info in self.volumes]
        self.output_dir.mkdir(parents=True, exist_ok=True)
        listing = {"dataset_dir": str(self.dataset_dir.resolve()), "split": self.split,
                   "raw_root": str(self.raw_root) if self.raw_root else None, "volumes": records}
        tmp = self.output_dir / ".predictions.json.tmp"
        tmp.write_text(json.dumps(listing, indent=2))
        os.replace(tmp, self.output_dir / "predictions.json")
        geometry = "prepared grid and original geometry" if self.raw_root else "prepared grid only"
        logger.info(f"inference: {len(records)} volumes of the {self.split} split written ({geometry}) to {self.output_dir}")
        return records
