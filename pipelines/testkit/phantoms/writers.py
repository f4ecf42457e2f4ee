"""File writers that reproduce the real datasets' on-disk quirks byte for byte, deterministically.

NIfTI headers and voxels are laid out by nibabel; ``.nii.gz`` files are compressed here (see
:func:`save_nifti`) with a zero gzip timestamp, so the same voxels give the same bytes. MetaImage headers are written as text here, field by field in the
order the PROMISE12 files use, with fixed number formatting.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

#: Byte position of ``vox_offset`` (float32) in a NIfTI-1 header, and where a single-file
#: NIfTI-1's voxels start (348-byte header + 4-byte extension flag).
VOX_OFFSET_FIELD = 108
NIFTI1_DATA_START = 352
GZIP_WBITS = 31  # zlib's gzip wrapper: header with mtime 0, so equal voxels give equal bytes
CHUNK = 1 << 22


def save_nifti(image: nib.Nifti1Image, path: str | Path) -> Path:
    """Write ``image`` as ``.nii``, or as ``.nii.gz`` compressed for speed and with gzip mtime 0.

    Noisy MR voxels barely compress by string matching, so the gzip stream uses run-length
    matching only (``Z_RLE``): twice as fast as level 1 and no larger. Any gzip reader reads it.
    """
    path = Path(path)
    if path.suffix != ".gz":
        nib.save(image, str(path))
        return path
    data = memoryview(image.to_bytes())
    packer = zlib.compressobj(1, zlib.DEFLATED, GZIP_WBITS, 9, zlib.Z_RLE)
    with open(path, "wb") as handle:
        for start in range(0, len(data), CHUNK):
            handle.write(packer.compress(data[start : start + CHUNK]))
        handle.write(packer.flush())
    return path


def zero_vox_offset(path: str | Path) -> None:
    """Store ``vox_offset = 0`` in a single-file ``.nii`` while its voxels stay at byte 352.

    This is how the vertebral-body label files are written; NIfTI readers disagree about
    where such a file's data start (see the phantom tests), which the converter must handle.
    """
    path = Path(path)
    with open(path, "r+b") as handle:
        header = handle.read(NIFTI1_DATA_START)
        sizeof_hdr_le = struct.unpack("<i", header[:4])[0] == 348
        handle.seek(VOX_OFFSET_FIELD)
        handle.write(struct.pack("<f" if sizeof_hdr_le else ">f", 0.0))


def _numbers(values) -> str:
    return " ".join(f"{float(v):.12g}" for v in np.ravel(values))


METAIMAGE_TYPES = {np.dtype(np.int16): "MET_SHORT", np.dtype(np.int8): "MET_CHAR", np.dtype(np.uint8): "MET_UCHAR"}


def save_metaimage(
    mhd_path: str | Path,
    array_zyx: np.ndarray,
    spacing_xyz: tuple[float, float, float],
    offset_xyz: tuple[float, float, float],
    direction: np.ndarray,
) -> Path:
    """Write ``name.mhd`` + ``name.raw`` (uncompressed, little-endian) the way PROMISE12 ships them.

    ``array_zyx`` is indexed (slice, row, column) like SimpleITK's arrays; ``direction`` is the
    3x3 matrix whose columns are the world directions of the x, y and z voxel axes.
    """
    mhd_path = Path(mhd_path)
    raw_path = mhd_path.with_suffix(".raw")
    dtype = np.dtype(array_zyx.dtype)
    if dtype not in METAIMAGE_TYPES:
        raise ValueError(f"no MetaImage element type for {dtype}")
    nz, ny, nx = array_zyx.shape
    # MetaIO lists TransformMatrix row by row of the direction's transpose (axis by axis).
    lines = [
        "ObjectType = Image",
        "NDims = 3",
        "BinaryData = True",
        "BinaryDataByteOrderMSB = False",
        "CompressedData = False",
        f"TransformMatrix = {_numbers(np.asarray(direction, dtype=float).T)}",
        f"Offset = {_numbers(offset_xyz)}",
        "CenterOfRotation = 0 0 0",
        "AnatomicalOrientation = RAI",
        f"ElementSpacing = {_numbers(spacing_xyz)}",
        f"DimSize = {nx} {ny} {nz}",
        f"ElementType = {METAIMAGE_TYPES[dtype]}",
        f"ElementDataFile = {raw_path.name}",
    ]
    mhd_path.write_text("\n".join(lines) + "\n", encoding="ascii")
    np.ascontiguousarray(array_zyx, dtype=dtype.newbyteorder("<")).tofile(raw_path)
    return mhd_path
