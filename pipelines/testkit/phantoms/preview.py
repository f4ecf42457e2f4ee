"""``python -m pipelines.testkit.phantoms.preview --out docs/img/phantoms.png``: slices of each phantom with label contours.

The phantoms are generated into a temporary folder and read back with the readers the real
datasets need (nibabel for NIfTI, SimpleITK for MetaImage), so the figure shows the files.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from pathlib import Path

import numpy as np

from pipelines.testkit.phantoms import generate

ACDC_COLOURS = {1: "#ffd400", 2: "#ff3b30", 3: "#00e5ff"}  # RV, myocardium, LV
ORGAN_COLOUR = "#ff3b30"


def _acdc_panels(root: Path):
    import nibabel as nib

    folder = next((root / "training").iterdir())
    info = dict(line.split(":", 1) for line in (folder / "Info.cfg").read_text().splitlines())
    info = {k.strip(): v.strip() for k, v in info.items()}
    panels = []
    for key in ("ED", "ES"):
        stem = folder / f"{folder.name}_frame{int(info[key]):02d}"
        image = np.asarray(nib.load(f"{stem}.nii.gz").dataobj, dtype=float)
        label = np.asarray(nib.load(f"{stem}_gt.nii.gz").dataobj)
        present = np.flatnonzero((label == 3).any(axis=(0, 1)))
        picks = [present[0], present[len(present) // 2], present[-1]] if key == "ED" else [present[len(present) // 2]]
        if key == "ED" and present[0] > 0:
            picks = [present[0] - 1] + picks
        ys, xs = np.nonzero(label.any(axis=2))
        box = (slice(max(ys.min() - 30, 0), ys.max() + 30), slice(max(xs.min() - 30, 0), xs.max() + 30))
        for k in picks:
            where = "above the base" if not (label[..., k] == 3).any() else f"slice {k}"
            panels.append((f"ACDC {key}, {where}", image[..., k][box].T, label[..., k][box].T, ACDC_COLOURS))
    return panels[:5]


def _promise_panels(root: Path):
    import SimpleITK as sitk

    mhd = next(root.rglob("Case00.mhd"))
    image = sitk.GetArrayFromImage(sitk.ReadImage(str(mhd))).astype(float)
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(mhd.with_name("Case00_segmentation.mhd"))))
    present = np.flatnonzero(label.any(axis=(1, 2)))
    n = image.shape[1]
    crop = (slice(n // 5, n - n // 5), slice(n // 5, n - n // 5))
    picks = [present[0], present[len(present) // 2], present[-1], min(present[-1] + 3, image.shape[0] - 1)]
    return [(f"PROMISE12 z={k}", image[k][crop], label[k][crop], {1: ORGAN_COLOUR}) for k in picks]


def _vertebral_panels(root: Path):
    import nibabel as nib

    image = np.asarray(nib.load(root / "Img_01.nii").dataobj, dtype=float)
    labels_path = root / "Img_01_Labels.nii"
    header = nib.load(labels_path).header.copy()
    header.set_data_offset(352)  # the label files store vox_offset 0; their voxels start at 352
    label = np.asarray(nib.arrayproxy.ArrayProxy(str(labels_path), header))
    present = np.flatnonzero(label.any(axis=(1, 2)))
    picks = [present[0] - 2, present[0] + 2, present[len(present) // 2], present[-1] - 1]
    # Axis 1 runs posterior to anterior, axis 2 inferior to superior: show head up, anterior right.
    return [(f"Vertebral sagittal x={k}", image[k].T[::-1], label[k].T[::-1], {1: ORGAN_COLOUR}) for k in picks]


def render_figure(out: Path, seed: int = 0, small: bool = False) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        rows = [
            _acdc_panels(generate("acdc", work / "acdc", cases=1, seed=seed, small=small)),
            _promise_panels(generate("promise12", work / "promise12", cases=1, seed=seed, small=small)),
            _vertebral_panels(generate("vertebral", work / "vertebral", cases=1, seed=seed, small=small)),
        ]
    columns = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), columns, figsize=(2.6 * columns, 2.8 * len(rows)), squeeze=False)
    for r, panels in enumerate(rows):
        high = np.percentile(np.concatenate([p[1].ravel() for p in panels]), 99.5)
        for c in range(columns):
            ax = axes[r][c]
            ax.axis("off")
            if c >= len(panels):
                continue
            title, image, label, colours = panels[c]
            ax.imshow(image, cmap="gray", vmin=0, vmax=high, interpolation="nearest")
            for value, colour in colours.items():
                if (label == value).any():
                    ax.contour(label == value, levels=[0.5], colors=[colour], linewidths=0.7)
            ax.set_title(title, fontsize=8)
    fig.suptitle("Phantoms in the real layouts (contours: labels; ACDC yellow RV, red myocardium, cyan LV)", fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=72)
    plt.close(fig)
    # A 256-colour palette keeps the PNG small enough to commit (grey images need no more).
    from PIL import Image

    Image.open(buffer).convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE).save(out, optimize=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.testkit.phantoms.preview", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/img/phantoms.png"), help="PNG to write")
    parser.add_argument("--seed", type=int, default=0, help="phantom seed (default 0)")
    parser.add_argument("--small", action="store_true", help="preview the --small phantoms instead of real sizes")
    args = parser.parse_args(argv)
    print(render_figure(args.out, args.seed, args.small))
    return 0


if __name__ == "__main__":
    sys.exit(main())
