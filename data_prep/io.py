"""Read 3D volumes with validation and write deterministic NIfTI files.

Every reader returns a :class:`Volume` whose array is in the file's voxel index order
``(i, j, k)`` (what nibabel, ITK-SNAP and 3D Slicer call i, j, k), with the spacing of each array
axis in mm and a 4x4 affine from voxel index to RAS+ mm. ITK readers return ``(k, j, i)`` arrays,
so they are transposed here once: axis numbers (``--slice-axis``) then mean the same thing for
NIfTI, MetaImage, NRRD and DICOM input.

Any problem with a file becomes an :class:`~data_prep.errors.InputError` naming it.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import os
import struct
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from data_prep.errors import InputError, one_line

NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = (".mhd", ".mha", ".nrrd", ".nhdr")
#: gzip level for label outputs: 1 is several times faster than 6 and only a little larger.
GZIP_LEVEL = 1
#: Normalised float32 MR intensities have noisy low mantissa bits: gzip saves ~10% of their size
#: for most of the preparation time, so float images are written uncompressed (.nii).
COMPRESS_FLOAT_IMAGES = False
#: NIfTI-1 single files keep their data after the 348-byte header and 4 extension bytes.
NIFTI1_SINGLE_FILE_OFFSET = 352
NIFTI1_HEADER_SIZE = 348
#: ITK's spacing and direction are LPS; NIfTI affines are RAS.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


@dataclass
class Volume:
    """A 3D array in file index order with its geometry."""

    array: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray
    path: Path


def volume_format(path: Path) -> str:
    """'nifti', 'itk' or 'dicom' (a folder of DICOM files), from the name."""
    name = path.name.lower()
    if path.is_dir():
        return "dicom"
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(ITK_SUFFIXES):
        return "itk"
    raise InputError(path, "unknown volume format (expected .nii, .nii.gz, .mhd, .mha, .nrrd, .nhdr or a DICOM folder)")


def read_volume(path: str | Path, role: str = "image") -> Volume:
    """Read and validate one 3D volume; ``role`` ('image' or 'label') selects the checks.

    Images become float32 and must be finite; labels must hold whole numbers. Both must be 3D
    (a trailing axis of length 1 is dropped) with positive finite spacing.
    """
    path = Path(path)
    _check_readable(path, role)
    kind = volume_format(path)
    try:
        with _native_stderr_captured() as native:
            if kind == "nifti":
                array, spacing, affine = _read_nifti(path)
            elif kind == "itk":
                array, spacing, affine = _read_itk(path)
            else:
                array, spacing, affine = _read_dicom_series(path)
    except InputError:
        raise
    except Exception as err:  # third-party readers raise many types for a bad file
        said = "; ".join(line for line in native if line not in str(err))
        # The line starts with the path already; inside the reason its name is enough.
        text = str(err).replace(str(path), one_line(path.name))
        reason = (_one_line_text(text) or type(err).__name__) + (f"; {_one_line_text(said)}" if said else "")
        raise InputError(path, f"unreadable or truncated {role} file ({reason})") from None
    array = _as_3d(array, path)
    _check_spacing(spacing, path)
    if role == "image":
        array = _checked_image(array, path)
    else:
        array = _checked_label(array, path)
    return Volume(array=array, spacing=tuple(float(s) for s in spacing), affine=affine, path=path)


def _check_readable(path: Path, role: str) -> None:
    """Missing files, link loops, folders named like files, empty and unreadable files: each its own message."""
    if not path.exists():
        if path.is_symlink():
            try:
                os.stat(path)
            except OSError as err:
                if err.errno == errno.ELOOP:
                    raise InputError(path, f"{role} file is a symbolic link loop") from None
            raise InputError(path, f"{role} file is a broken symbolic link (to {os.readlink(path)})")
        raise InputError(path, f"{role} file missing")
    if path.is_dir():
        if path.name.lower().endswith(NIFTI_SUFFIXES + ITK_SUFFIXES):
            raise InputError(path, f"is a folder; the {role} must be a file")
        try:
            os.listdir(path)
        except OSError as err:
            raise InputError(path, f"cannot read the {role} folder ({err.strerror})") from None
        return
    try:
        with open(path, "rb") as handle:
            first = handle.read(1)
    except OSError as err:
        raise InputError(path, f"cannot read the {role} file ({err.strerror})") from None
    if not first:
        raise InputError(path, f"{role} file is empty (0 bytes)")


def _read_nifti(path: Path):
    import nibabel as nib
    from nibabel.imageglobals import LoggingOutputSuppressor

    raw = _nifti1_header(path)
    bad_magic = _magic_problem(raw)
    if raw is not None and bad_magic is None:
        _check_pixdim(raw, path)
    try:
        with LoggingOutputSuppressor():  # nibabel logs header fixes to stderr; bad ones were refused above
            img = nib.load(str(path))
    except Exception:
        if bad_magic:
            raise InputError(path, bad_magic) from None
        raise
    header = img.header
    shape = tuple(int(n) for n in header.get_data_shape())
    if shape and min(shape) < 1:
        raise InputError(path, f"is empty: shape {shape} has a zero-length axis")
    _check_claimed_size(path, shape, header.get_data_dtype().itemsize, int(header.get_data_offset()))
    array = np.asanyarray(_nifti_dataobj(img, path))
    # The header zooms are the voxel size; ACDC's sform is a unit diag(-1,-1,1) while its qform
    # holds the real spacing, and nibabel's ``affine`` prefers the sform: so prefer the qform.
    spacing = tuple(float(z) for z in header.get_zooms()[:3])
    if int(header["qform_code"]) > 0:
        affine = header.get_qform()
    elif int(header["sform_code"]) > 0:
        affine = header.get_sform()
    else:
        affine = np.diag(list(spacing[:3]) + [1.0] * (4 - len(spacing[:3])))
    return array, spacing, np.asarray(affine, dtype=np.float64)


GZIP_MAX_RATIO = 1100
"""Deflate never expands data more than about 1032-fold, so a .gz file cannot hold more than this times its size."""


def _check_claimed_size(path: Path, shape: tuple[int, ...], itemsize: int, offset: int) -> None:
    """Refuse a header whose voxel count the file cannot hold, before anything is allocated.

    A tampered header can claim 100000^3 voxels in a file of a few kilobytes; reading it would try
    to allocate petabytes. Uncompressed: the file must hold offset + voxels x itemsize bytes.
    Gzip: the voxels cannot exceed :data:`GZIP_MAX_RATIO` times the compressed size.
    """
    if not path.name.lower().endswith((".nii", ".nii.gz")):  # an .hdr keeps its voxels in the .img beside it
        return
    claimed = int(np.prod(shape, dtype=object)) * int(itemsize)
    size = path.stat().st_size
    if path.name.lower().endswith(".gz"):
        possible = size * GZIP_MAX_RATIO
    else:
        possible = max(0, size - max(offset, 0))
    if claimed > possible:
        raise InputError(path, f"header claims {shape} voxels ({claimed / 2**30:.3g} GiB of data) but the file "
                               f"({size} bytes) cannot hold them: a damaged or tampered header")


def _nifti_dataobj(img, path: Path):
    """The data proxy, reading single files whose header says vox_offset 0 at byte 352.

    The vertebral-body label files store vox_offset 0 although their data follows the header;
    nibabel would silently read the header bytes as voxels.
    """
    from nibabel.arrayproxy import ArrayProxy

    header = img.header
    if header.get_data_offset() < NIFTI1_SINGLE_FILE_OFFSET and header.sizeof_hdr == 348:
        slope, inter = header.get_slope_inter()
        spec = (
            header.get_data_shape(),
            header.get_data_dtype(),
            NIFTI1_SINGLE_FILE_OFFSET,
            1.0 if slope is None else slope,
            0.0 if inter is None else inter,
        )
        return ArrayProxy(str(path), spec)
    return img.dataobj


def _nifti1_header(path: Path) -> tuple[str, bytes] | None:
    """(byte order, the 348 header bytes) of a NIfTI-1 file, or None when it does not start like one."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            header = handle.read(NIFTI1_HEADER_SIZE)
    except (OSError, EOFError):
        return None  # not a gzip file, truncated...: nibabel's own error says which
    if len(header) < NIFTI1_HEADER_SIZE:
        return None
    for order in "<>":
        if struct.unpack(f"{order}i", header[:4])[0] == NIFTI1_HEADER_SIZE:
            return order, header
    return None  # NIfTI-2, or no NIfTI at all: left to nibabel


def _magic_problem(raw: tuple[str, bytes] | None) -> str | None:
    if raw is None or raw[1][344:348] in (b"n+1\x00", b"ni1\x00"):
        return None
    shown = raw[1][344:348].rstrip(b"\x00").decode("latin-1")
    return f"bad NIfTI-1 magic number {shown!r} (expected 'n+1'): damaged header or not a NIfTI file"


def _check_pixdim(raw: tuple[str, bytes], path: Path) -> None:
    """Refuse a zero or non-finite voxel size in the header (nibabel would silently read it as 1 mm)."""
    order, header = raw
    ndim = max(0, min(int(struct.unpack(f"{order}h", header[40:42])[0]), 3))
    sizes = struct.unpack(f"{order}8f", header[76:108])[1 : 1 + ndim]
    if any(not np.isfinite(v) or v == 0 for v in sizes):
        raise InputError(path, f"has invalid voxel spacing {tuple(float(v) for v in sizes)} in its header")


def _read_itk(path: Path):
    import SimpleITK as sitk

    _check_metaimage_data_file(path)
    image = sitk.ReadImage(str(path))
    return _from_sitk(image, path)


def _check_metaimage_data_file(path: Path) -> None:
    """A ``.mhd`` header names its voxel file (``ElementDataFile``): say so when that file is missing."""
    if not path.name.lower().endswith(".mhd"):
        return
    try:
        text = path.read_text(encoding="latin-1")
    except OSError:
        return
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == "ElementDataFile":
            name = value.strip()
            if name and name.upper() not in ("LOCAL", "LIST") and " " not in name and "%" not in name:
                data = path.parent / name
                if not data.exists():
                    raise InputError(data, f"data file missing (named by ElementDataFile in {path.name})")
            return


def _read_dicom_series(path: Path):
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(str(path))
    if not series:
        raise InputError(path, "folder holds no DICOM series")
    if len(series) > 1:
        raise InputError(path, f"folder holds {len(series)} DICOM series; give one series per folder")
    files = reader.GetGDCMSeriesFileNames(str(path), series[0])
    if len(files) < 2:
        raise InputError(path, "DICOM series has a single file; expected one file per slice of a 3D volume")
    reader.SetFileNames(files)
    return _from_sitk(reader.Execute(), path)


def _from_sitk(image, path: Path):
    """(array in i, j, k order, spacing, RAS affine) from a SimpleITK image."""
    import SimpleITK as sitk

    array = sitk.GetArrayFromImage(image)
    dim = image.GetDimension()
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(path, f"has {image.GetNumberOfComponentsPerPixel()} components per voxel; expected 1")
    array = np.transpose(array, tuple(range(array.ndim - 1, -1, -1)))
    spacing = tuple(float(s) for s in image.GetSpacing())
    if dim != 3:
        return array, spacing + (1.0,) * max(0, 3 - dim), np.eye(4)
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = LPS_TO_RAS @ direction @ np.diag(spacing)
    affine[:3, 3] = LPS_TO_RAS @ np.asarray(image.GetOrigin(), dtype=np.float64)
    return array, spacing, affine


def _as_3d(array: np.ndarray, path: Path) -> np.ndarray:
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise InputError(path, f"is {array.ndim}D with shape {tuple(array.shape)}; expected a 3D volume")
    if min(array.shape) < 1:
        raise InputError(path, f"is empty (shape {tuple(array.shape)})")
    return array


def _check_spacing(spacing, path: Path) -> None:
    values = np.asarray(spacing[:3], dtype=np.float64)
    if values.size < 3 or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise InputError(path, f"has invalid voxel spacing {tuple(float(v) for v in values)}")


def _checked_image(array: np.ndarray, path: Path) -> np.ndarray:
    array = np.asarray(array, dtype=np.float32)
    bad = ~np.isfinite(array)
    if bad.any():
        raise InputError(path, f"has {int(bad.sum())} NaN or infinite intensities")
    return array


def _checked_label(array: np.ndarray, path: Path) -> np.ndarray:
    if not np.issubdtype(array.dtype, np.integer):
        array = np.asarray(array)
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise InputError(path, "label file holds non-integer values")
        array = array.astype(np.int64)
    return np.asarray(array)


#: Spacing tolerance, relative: headers written by different tools round the voxel size differently.
SPACING_RTOL = 1e-3
#: Tolerance on the direction cosines (unitless; 1e-3 is 0.06 degrees): float32 qforms and text
#: headers differ by ~1e-7, a flipped or swapped axis by 1 or 2.
DIRECTION_ATOL = 1e-3
#: Origin tolerance, as a fraction of the smallest voxel size.
ORIGIN_TOL = 0.1


def check_same_grid(image: Volume, other: Volume, what: str = "label") -> None:
    """Refuse ``other`` (a label or annotation volume) unless it lies on ``image``'s voxel grid.

    Labels are used voxel by voxel, never resampled, so both files must describe the same voxels
    in world space: the same shape, spacing (:data:`SPACING_RTOL`), orientation
    (:data:`DIRECTION_ATOL` on the direction cosines) and origin (:data:`ORIGIN_TOL` of a voxel).
    A label written with its x axis reversed or its origin moved has the right shape and spacing
    but marks other anatomy; accepting it trains on misaligned masks without a word.

    The tolerances follow the idea of ITK's geometry check (coordinates within a fraction of the
    spacing) but not its default of 1e-6 of the spacing, which refuses files of the same grid
    written by different tools: NIfTI stores the origin and quaternion as float32 (~1e-5 mm at
    200 mm from the centre, direction ~1e-7), MetaImage and NRRD as text. These differences are
    a thousand times below 0.1 voxel. Half a voxel, the other obvious choice, would accept the
    classic corner-versus-centre origin mistake, which moves every label by half a voxel onto the
    neighbouring structure.
    """
    name = str(image.path)
    if image.array.shape != other.array.shape:
        raise InputError(other.path, f"{what} shape {other.array.shape} differs from image shape {image.array.shape} ({name})")
    if not np.allclose(image.spacing, other.spacing, rtol=SPACING_RTOL, atol=1e-5):
        raise InputError(other.path, f"{what} spacing {_fmt(other.spacing)} differs from image spacing "
                                     f"{_fmt(image.spacing)} ({name})")
    spacing = np.asarray(image.spacing, dtype=np.float64)
    directions = [np.asarray(v.affine, dtype=np.float64)[:3, :3] / spacing for v in (image, other)]
    if not np.allclose(directions[0], directions[1], atol=DIRECTION_ATOL):
        raise InputError(other.path, f"{what} orientation differs from the image's ({name}): axes "
                                     f"{_axes(directions[1])} vs {_axes(directions[0])} (RAS+ directions of i, j, k)")
    origins = [np.asarray(v.affine, dtype=np.float64)[:3, 3] for v in (image, other)]
    shift = float(np.linalg.norm(origins[1] - origins[0]))
    tolerance = ORIGIN_TOL * float(spacing.min())
    if shift > tolerance:
        raise InputError(other.path, f"{what} origin is {shift:.3g} mm away from the image's ({name}); "
                                     f"tolerance {tolerance:.3g} mm ({ORIGIN_TOL:g} voxel)")


def _axes(direction: np.ndarray) -> str:
    """The RAS+ direction each voxel axis points to, e.g. 'LPS' (ACDC) or 'RAS'."""
    names = []
    for column in direction.T:
        axis = int(np.argmax(np.abs(column)))
        names.append(("R", "A", "S")[axis] if column[axis] > 0 else ("L", "P", "I")[axis])
    return "".join(names)


def nifti_bytes(array: np.ndarray, affine: np.ndarray, compress: bool = True) -> bytes:
    """A NIfTI-1 file as bytes (gzip-compressed unless ``compress`` is False), identical for identical input.

    nibabel's own writer stores a file name in the gzip header; here the gzip stream has no
    name and mtime 0, so the bytes depend only on the array and the affine. Both qform and
    sform carry the affine (code 1), so viewers agree on the geometry.
    """
    import nibabel as nib

    image = nib.Nifti1Image(array, affine)
    image.header.set_qform(affine, code=1)
    image.header.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm")
    data = image.to_bytes()
    return gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0) if compress else data


def write_file(root: Path, relpath: str, data: bytes) -> str:
    """Write ``data`` to ``root/relpath`` and return its sha256 (computed before writing: no re-read).

    ``relpath`` must stay inside ``root`` (relative, no ``..``): ids from user data are sanitised
    before they become file names, and this refuses anything that slipped through.
    """
    parts = PurePosixPath(relpath).parts
    if not parts or PurePosixPath(relpath).is_absolute() or ".." in parts or "\\" in relpath:
        raise ValueError(f"refusing to write {relpath!r}: not a relative path inside the output folder")
    target = root / relpath
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    except OSError as err:
        raise InputError(target, f"cannot write the output ({err.strerror or err})") from None
    return hashlib.sha256(data).hexdigest()


def _one_line(err: BaseException) -> str:
    """A short one-line reason from an exception (ITK messages span many lines)."""
    return _one_line_text(str(err)) or type(err).__name__


def _one_line_text(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    text = lines[-1] if lines else ""
    return text if len(text) <= 160 else text[:157] + "..."


@contextlib.contextmanager
def _native_stderr_captured():
    """Collect what C++ readers (ITK, GDCM, MetaIO) print to file descriptor 2 while the block runs.

    They write warnings and reasons straight to the process's stderr, which would add lines to
    the one-line error. The yielded list receives those lines when the block ends; the caller
    adds them to its message when the read fails, and drops them otherwise.
    """
    lines: list[str] = []
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable file descriptor 2 (embedded interpreters)
        yield lines
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode("utf-8", errors="replace")
            lines.extend(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("WARNING: In "))


def _fmt(values) -> str:
    return "(" + ", ".join(f"{float(v):.4g}" for v in values) + ")"
