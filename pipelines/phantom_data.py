"""The pipelines' data when none is given: an ACDC-layout phantom, generated and prepared like real data.

``python -m pipelines.regimes`` (without ``--prepared``), the demo and the training benchmark
train on it: :func:`prepare_phantom` writes the phantom with the test kit
(``python -m pipelines.testkit.phantoms acdc``) and prepares it with ``python -m data_prep acdc``,
cropped to the field of view around the heart.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["DEFAULT_FOV_MM", "prepare_phantom"]

DEFAULT_FOV_MM = 144.0
"""Field of view (mm) the phantom is cropped to around the heart: 3 mm pixels at 48 x 48, 1.5 mm at 96."""


def prepare_phantom(out_dir: str | os.PathLike, *, cases: int = 24, size: int = 64, seed: int = 0,
                    inplane: int | None = None, frames: int | None = 10, fov_mm: float | None = DEFAULT_FOV_MM,
                    prepare_args: Sequence[str] = (), log: Callable[[str], None] | None = print) -> Path:
    """Generate an ACDC-layout phantom in ``out_dir/raw_acdc`` and prepare it into ``out_dir/prepared_acdc``.

    Args:
        cases: phantom patients (3/4 training, 1/4 validation, split by patient).
        size: prepared slice size (pixels, square).
        seed: seed of the phantom and of the preparation (split, random weak labels).
        inplane: raw in-plane size in voxels (None: the real ACDC sizes, 154-256 voxels of
            1.3-1.8 mm; a small value writes faster, noisier files since the noise is not averaged
            by the resampling to ``size``).
        frames: cine frames per patient (only ED and ES are used; fewer frames write faster).
        fov_mm: field of view kept around the image centre, where the heart is (``--resize
            pad-crop`` with pixels of ``fov_mm / size`` mm); None: the papers' plain resize of the
            whole image (``stretch``), where the LV is small at low ``size``.
        prepare_args: extra ``python -m data_prep acdc`` options.
        log: called with one line at the end (None: quiet).

    An existing prepared folder is reused as is. Returns the prepared folder.
    """
    from data_prep.cli import main as data_prep_main
    from pipelines.testkit.phantoms.cli import main as phantom_main

    out = Path(out_dir)
    raw, prepared = out / "raw_acdc", out / "prepared_acdc"
    if (prepared / "dataset.json").is_file():
        if log:
            log(f"reusing the prepared dataset {prepared}")
        return prepared
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    start = time.perf_counter()
    sizes = (["--inplane", str(inplane)] if inplane else []) + (["--frames", str(frames)] if frames else [])
    geometry = ["--resize", "pad-crop", "--inplane-spacing", f"{float(fov_mm) / size:g}"] if fov_mm else []
    steps = [  # (command, its main, argv)
        ("pipelines.testkit.phantoms", phantom_main,
         ["acdc", "--out", str(raw), "--cases", str(cases), "--seed", str(seed), "--overwrite", *sizes]),
        ("data_prep", data_prep_main,
         ["acdc", "--src", str(raw), "--out", str(prepared), "--size", str(size), "--seed", str(seed), "--overwrite",
          *geometry, *prepare_args]),
    ]
    with open(logs / "prepare.log", "w") as handle:
        for command, command_main, argv in steps:
            with contextlib.redirect_stdout(handle), contextlib.redirect_stderr(handle):
                code = command_main(argv)
            if code:
                raise RuntimeError(f"python -m {command} {' '.join(argv)} exited with {code} (see {logs / 'prepare.log'})")
    if log:
        where = f"the central {fov_mm:g} mm" if fov_mm else "the whole image"
        log(f"phantom: {cases} ACDC-layout patients, {where} prepared at {size} x {size}, in "
            f"{time.perf_counter() - start:.0f} s: {prepared}")
    return prepared
