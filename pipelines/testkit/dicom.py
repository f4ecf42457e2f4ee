"""DICOM series as a scanner export writes them (one 2D file per slice), for the tests and the corpora.

Written with SimpleITK's GDCM writer, which leaves the C library's locale at ``"C"``: measured
here, Python's preferred text encoding turned from UTF-8 into ASCII after one series, so every
later ``open()`` without an explicit encoding in the same process failed on the first non-ASCII
byte (torch's inductor reads its kernel templates that way). The writer puts the locale back.
Reading a series (``data_prep``, inference) leaves the locale alone.
"""

from __future__ import annotations

import locale
from pathlib import Path


def write_dicom_series(folder: Path, image, series_uid: str, name: str = "slice{z:03d}.dcm") -> None:
    """Write the 3D SimpleITK ``image`` (int16) into ``folder``, one file per slice along its third axis.

    Each file carries the tags a reader orders and places slices by: series and instance UIDs,
    instance number, image position and orientation (from the image's origin, spacing and
    direction), slice thickness, modality MR.
    """
    import SimpleITK as sitk

    saved = locale.setlocale(locale.LC_ALL)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        d = image.GetDirection()
        orientation = (d[0], d[3], d[6], d[1], d[4], d[7])  # the directions of the image's rows and columns
        for z in range(image.GetDepth()):
            plane = image[:, :, z]
            tags = {
                "0008|0060": "MR",
                "0020|000e": series_uid,
                "0020|000d": series_uid + ".0",
                "0008|0018": f"{series_uid}.{z + 1}",
                "0020|0013": str(z + 1),
                "0020|0032": "\\".join(f"{v:.4f}" for v in image.TransformIndexToPhysicalPoint((0, 0, z))),
                "0020|0037": "\\".join(f"{v:g}" for v in orientation),
                "0018|0050": f"{image.GetSpacing()[2]:.4f}",
            }
            for key, value in tags.items():
                plane.SetMetaData(key, value)
            writer.SetFileName(str(folder / name.format(z=z)))
            writer.Execute(plane)
    finally:
        if locale.setlocale(locale.LC_ALL) != saved:
            locale.setlocale(locale.LC_ALL, saved)
