"""Deliberately broken raw datasets, generated for the tests and the reliability report.

Each :class:`BadInput` writes one tiny raw dataset with one defect (a truncated file, a label on
another grid, a name that points outside ``--out``...) or one legal oddity (an all-background
label, a symbolic-link loop beside the data) and says what ``python -m data_prep`` must do with
it: exit code 2 with one line ``error: <file>: <problem>`` naming the file, or (legal input) exit
0 with a correct result. :func:`run_case` runs one case through the real command line in a
subprocess and :func:`judge` lists what went wrong, also checking that there is no traceback,
that nothing is left under or beside ``--out`` (no ``.<out>.partial-*`` folder) and that no
input file was changed or removed (data lost).

``tests/data_prep/test_reliability.py`` runs every case; ``python -m pipelines.benchmarks
reliability`` prints the summary. Add a case by writing a builder decorated with :func:`case`.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

#: The folder holding the ``data_prep`` package: the subprocess imports it from there.
PACKAGE_ROOT = Path(__file__).resolve().parents[1]
#: Volumes of the hand-made raw datasets: (x, y, slices), ACDC-like spacing.
SHAPE = (20, 22, 3)
SPACING = (1.5, 1.5, 10.0)
SIZE = ["--size", "32"]


class Skip(Exception):
    """The case cannot be set up on this machine (the reason says why); it is not counted as tried."""


@dataclasses.dataclass
class Setup:
    """What a builder made: the command line (after ``python -m data_prep``) and what must happen.

    ``names`` must appear in the error line (the offending file as the user gave it), and so
    must ``problem``. For legal input (``code`` 0), ``verify(out)`` returns the problems found in
    the prepared dataset (empty when correct).
    """

    argv: list[str]
    out: Path
    code: int = 2
    names: str | None = None
    problem: str = ""
    verify: Callable[[Path], list[str]] | None = None


@dataclasses.dataclass(frozen=True)
class BadInput:
    """One case of the corpus: ``build(work)`` writes it under the empty folder ``work``."""

    name: str
    summary: str
    build: Callable[[Path], Setup]


@dataclasses.dataclass
class Outcome:
    """What one case did: ``handled`` when every check passed; ``lost`` lists input files changed or removed."""

    name: str
    summary: str
    expected: str
    code: int | None = None
    message: str = ""
    problems: list[str] = dataclasses.field(default_factory=list)
    lost: list[str] = dataclasses.field(default_factory=list)
    skipped: str | None = None
    seconds: float = 0.0

    @property
    def handled(self) -> bool:
        return self.skipped is None and not self.problems and not self.lost


CASES: list[BadInput] = []


def case(name: str, summary: str):
    """Register the decorated builder as a corpus case (``name`` is the test id)."""

    def register(build: Callable[[Path], Setup]) -> Callable[[Path], Setup]:
        CASES.append(BadInput(name, summary, build))
        return build

    return register


# --- running and judging ---------------------------------------------------------------------


def run_cli(argv: list[str], timeout: float = 180.0, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m data_prep ARGV`` in a fresh process, as a user runs it (not on a terminal)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "-m", "data_prep", *[str(a) for a in argv]],
        capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=timeout, env=env, cwd=cwd,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def run_case(bad: BadInput, workdir: Path, timeout: float = 180.0) -> Outcome:
    """Build ``bad`` under ``workdir/<name>``, run it through the CLI and judge the result."""
    work = Path(workdir) / bad.name
    work.mkdir(parents=True)
    outcome = Outcome(bad.name, bad.summary, expected="")
    started = time.perf_counter()
    try:
        setup = bad.build(work)
    except Skip as reason:
        outcome.skipped = str(reason)
        return outcome
    outcome.expected = f"exit {setup.code}" + (f": {setup.problem}" if setup.code else ", correct result")
    before = snapshot(work, exclude=None if setup.code else setup.out)
    try:
        done = run_cli(setup.argv, timeout=timeout, cwd=work)
    except subprocess.TimeoutExpired:
        outcome.problems.append(f"still running after {timeout:.0f} s")
        return outcome
    finally:
        outcome.seconds = time.perf_counter() - started
    after = snapshot(work, exclude=None if setup.code else setup.out)
    outcome.code = done.returncode
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    outcome.message = lines[0] if len(lines) == 1 else " / ".join(lines[-2:])
    outcome.problems = judge(setup, done.returncode, done.stdout, done.stderr)
    outcome.problems += compare_snapshots(before, after)
    outcome.lost = lost_files(before, after)
    return outcome


def judge(setup: Setup, code: int, stdout: str, stderr: str) -> list[str]:
    """Problems with one run's exit code and messages (and, for legal input, its output)."""
    problems = []
    if "Traceback (most recent call last)" in stderr:
        problems.append("traceback on stderr")
    if code != setup.code:
        problems.append(f"exit code {code}, expected {setup.code}")
    lines = [line for line in stderr.splitlines() if line.strip()]
    if setup.code == 2:
        if len(lines) != 1:
            problems.append(f"{len(lines)} lines on stderr, expected one")
        line = lines[-1] if lines else ""
        if not line.startswith("error: "):
            problems.append("the message does not start with 'error: '")
        if setup.names is not None and setup.names not in line:
            problems.append(f"the message does not name {setup.names}")
        if setup.problem not in line:
            problems.append(f"the message does not say {setup.problem!r}")
    elif setup.code == 0:
        if any(line.startswith("error") for line in lines):
            problems.append("an error message on success")
        if setup.verify is not None and code == 0:
            problems.extend(setup.verify(setup.out))
    return problems


def snapshot(root: Path, exclude: Path | None = None) -> dict[str, str]:
    """Relative path -> fingerprint of everything under ``root`` (links not followed), but ``exclude``."""
    found = {}
    for folder, dirs, files in os.walk(root):
        folder = Path(folder)
        if exclude is not None and folder == Path(exclude):
            dirs[:] = []
            continue
        for name in dirs + files:
            path = folder / name
            if exclude is not None and path == Path(exclude):
                continue
            found[path.relative_to(root).as_posix()] = _fingerprint(path)
    return found


def _fingerprint(path: Path) -> str:
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode):
        return f"link:{os.readlink(path)}"
    if stat.S_ISDIR(info.st_mode):
        return "folder"
    try:
        return "file:" + hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:  # unreadable on purpose: size and time stand in for the content
        return f"file:{info.st_size}:{info.st_mtime_ns}"


def compare_snapshots(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """New entries outside the output: temporary folders left behind, or files written outside ``--out``."""
    added = sorted(set(after) - set(before))
    return [f"left {name}" for name in added[:5]] + ([f"... and {len(added) - 5} more"] if len(added) > 5 else [])


def lost_files(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """Inputs (or a pre-existing output) changed or removed by the run."""
    return sorted(name for name, print_ in before.items() if after.get(name) != print_)


def make_removable(root: Path) -> None:
    """Give back the permissions a case took away, so that its folder can be deleted."""
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            if not path.is_symlink():
                os.chmod(path, 0o755 if path.is_dir() else 0o644)


# --- writing raw data --------------------------------------------------------------------------


def save_nifti(path: Path, array: np.ndarray, spacing=SPACING) -> Path:
    """A NIfTI with ACDC's quirk: the qform holds the real spacing, the sform a unit diag(-1, -1, 1)."""
    import nibabel as nib

    qform = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    unit = np.diag([-1.0, -1.0, 1.0, 1.0])
    image = nib.Nifti1Image(array, unit)
    image.header.set_qform(qform, code=1)
    image.header.set_sform(unit, code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, str(path))
    return path


def rings(shape=SHAPE, shift: int = 0, empty_slices=(0,)) -> np.ndarray:
    """ACDC-like labels: discs 1 (RV-ish), 2 (myocardium), 3 (LV) on every slice but ``empty_slices``."""
    x, y = np.mgrid[: shape[0], : shape[1]]
    r = np.hypot(x - shape[0] / 2 - shift, y - shape[1] / 2)
    plane = np.zeros(shape[:2], dtype=np.uint8)
    for value, radius in enumerate((8, 6, 4), start=1):
        plane[r < radius] = value
    label = np.repeat(plane[:, :, None], shape[2], axis=2)
    label[:, :, list(empty_slices)] = 0
    return label


def intensities(label: np.ndarray, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).normal(100, 10, label.shape) + 50 * label).astype(np.int16)


def acdc_raw(raw: Path, patients: int = 2, folder: str = "training") -> Path:
    """A tiny ACDC tree: ``raw/<folder>/patientNNN`` with Info.cfg, ED (1) and ES (3) frames and labels."""
    for number in range(1, patients + 1):
        home = raw / folder / f"patient{number:03d}"
        home.mkdir(parents=True)
        (home / "Info.cfg").write_text(f"ED: 1\nES: 3\nGroup: {('NOR', 'DCM')[number % 2]}\nNbFrame: 10\n")
        for frame in (1, 3):
            label = rings(shift=frame // 3)
            save_nifti(home / f"patient{number:03d}_frame{frame:02d}_gt.nii.gz", label)
            save_nifti(home / f"patient{number:03d}_frame{frame:02d}.nii.gz", intensities(label, 10 * number + frame))
    return raw


def acdc_frame(raw: Path, patient: int = 1, frame: int = 1, gt: bool = False) -> Path:
    name = f"patient{patient:03d}_frame{frame:02d}{'_gt' if gt else ''}.nii.gz"
    return raw / "training" / f"patient{patient:03d}" / name


def acdc_setup(work: Path, **expected) -> Setup:
    out = work / "prepared" / "out"
    out.parent.mkdir(parents=True, exist_ok=True)
    return Setup(["acdc", "--src", work / "raw", "--out", out, *SIZE], out, **expected)


def custom_raw(raw: Path, cases=("a", "b"), label_of=None) -> Path:
    """``raw/images/<case>.nii.gz`` and ``raw/labels/<case>.nii.gz`` with labels {0, 1}."""
    for number, name in enumerate(cases):
        label = (rings(shift=number) == 3).astype(np.uint8) if label_of is None else label_of(name)
        save_nifti(raw / "labels" / f"{name}.nii.gz", label)
        save_nifti(raw / "images" / f"{name}.nii.gz", intensities(label, number))
    return raw


def custom_setup(work: Path, *extra, **expected) -> Setup:
    out = work / "prepared" / "out"
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = ["custom", "--src", work / "raw", "--out", out, "--images", "images/{case}.nii.gz",
            "--labels", "labels/{case}.nii.gz", *SIZE, "--val", "0", *extra]  # fmt: skip
    return Setup(argv, out, **expected)


def csv_setup(raw: Path, listing_text: str, *extra, **expected) -> Setup:
    """``raw/list.csv`` holding ``listing_text``, prepared with ``python -m data_prep custom --csv``."""
    listing = raw / "list.csv"
    listing.write_text(listing_text)
    out = raw.parent / "prepared" / "out"
    out.parent.mkdir(parents=True, exist_ok=True)
    return Setup(["custom", "--src", raw, "--out", out, "--csv", listing, *SIZE, *extra], out, **expected)


def promise12_raw(raw: Path, cases: int = 2) -> Path:
    """``raw/CaseNN.mhd`` (+ ``.raw``) and ``CaseNN_segmentation.mhd``, written by SimpleITK."""
    import SimpleITK as sitk

    raw.mkdir(parents=True)
    for number in range(cases):
        label = (rings(shift=number) == 3).astype(np.uint8).transpose(2, 1, 0)  # SimpleITK order (z, y, x)
        for name, array in ((f"Case{number:02d}_segmentation", label), (f"Case{number:02d}", intensities(label, number))):
            image = sitk.GetImageFromArray(array)
            image.SetSpacing((0.6, 0.6, 3.6))
            sitk.WriteImage(image, str(raw / f"{name}.mhd"))
    return raw


def promise12_setup(work: Path, **expected) -> Setup:
    out = work / "prepared" / "out"
    out.parent.mkdir(parents=True, exist_ok=True)
    return Setup(["promise12", "--src", work / "raw", "--out", out, *SIZE, "--val", "0"], out, **expected)


def dicom_series(folder: Path, array_zyx: np.ndarray, series_uid: str) -> None:
    """One 2D DICOM file per slice of one series, as a scanner export writes them."""
    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for z in range(array_zyx.shape[0]):
        plane = sitk.GetImageFromArray(array_zyx[z])
        plane.SetSpacing((1.5, 1.5))
        tags = {
            "0008|0060": "MR",
            "0020|000e": series_uid,
            "0020|000d": series_uid + ".0",
            "0008|0018": f"{series_uid}.{z + 1}",
            "0020|0013": str(z + 1),
            "0020|0032": f"0\\0\\{10.0 * z:.1f}",
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0018|0050": "10.0",
        }
        for key, value in tags.items():
            plane.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"{series_uid[-4:]}_{z:03d}.dcm"))
        writer.Execute(plane)


# --- checking a prepared dataset ----------------------------------------------------------------


def prepared_problems(out: Path, volumes: int | None = None) -> list[str]:
    """Problems with a prepared dataset: missing index, wrong volume count, a file not matching prep.json."""
    try:
        dataset = json.loads((out / "dataset.json").read_text())
        prep = json.loads((out / "prep.json").read_text())
    except (OSError, ValueError) as err:
        return [f"no readable dataset.json/prep.json ({err})"]
    problems = []
    if volumes is not None and len(dataset["volumes"]) != volumes:
        problems.append(f"{len(dataset['volumes'])} volumes, expected {volumes}")
    written = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {"prep.json"}
    if written != set(prep["checksums"]):
        problems.append("files on disk differ from the ones listed in prep.json")
    for relpath, digest in prep["checksums"].items():
        path = out / relpath
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            problems.append(f"{relpath} does not match its checksum")
            break
    return problems


def _entries(out: Path) -> list[dict]:
    dataset = json.loads((out / "dataset.json").read_text())
    return [e for split in ("training", "validation", "test") for e in dataset[split]]


def _all_absent(out: Path, volume: str | None = None) -> list[str]:
    """Every slice (of ``volume``) tagged absent with (0, 0) bounds: all-background labels are legal."""
    entries = [e for e in _entries(out) if volume is None or e["volume"] == volume]
    if not entries:
        return [f"no slices of {volume or 'any volume'}"]
    wrong = [e for e in entries if e["tag"] != [0] or e["bounds"]["tags"] != [[0, 0]] or e["size_px"] != [0]]
    return [f"{len(wrong)} slices of an all-background volume are not tagged absent"] if wrong else []


# --- the corpus: broken files ------------------------------------------------------------------


@case("truncated-image", "an image .nii.gz cut to half its bytes")
def _truncated_image(work: Path) -> Setup:
    path = acdc_frame(acdc_raw(work / "raw"), 2)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return acdc_setup(work, names=str(path), problem="unreadable or truncated image file")


@case("truncated-label", "a label .nii.gz cut after 100 bytes")
def _truncated_label(work: Path) -> Setup:
    path = acdc_frame(acdc_raw(work / "raw"), 1, 3, gt=True)
    path.write_bytes(path.read_bytes()[:100])
    return acdc_setup(work, names=str(path), problem="unreadable or truncated label file")


@case("not-gzip", "a .nii.gz that holds plain text")
def _not_gzip(work: Path) -> Setup:
    path = acdc_frame(acdc_raw(work / "raw"), 1)
    path.write_text("this is not a NIfTI volume\n")
    return acdc_setup(work, names=str(path), problem="not a gzip file")


@case("wrong-magic", "a NIfTI whose header magic number is 'XXXX' instead of 'n+1'")
def _wrong_magic(work: Path) -> Setup:
    path = acdc_frame(acdc_raw(work / "raw"), 2, 3)
    data = bytearray(gzip.decompress(path.read_bytes()))
    data[344:348] = b"XXXX"
    path.write_bytes(gzip.compress(bytes(data), mtime=0))
    return acdc_setup(work, names=str(path), problem="bad NIfTI-1 magic number 'XXXX'")


@case("zero-byte-file", "an image file of 0 bytes")
def _zero_bytes(work: Path) -> Setup:
    path = acdc_frame(acdc_raw(work / "raw"), 2)
    path.write_bytes(b"")
    return acdc_setup(work, names=str(path), problem="image file is empty (0 bytes)")


@case("zero-length-axis", "a volume of shape (20, 22, 0)")
def _zero_axis(work: Path) -> Setup:
    raw = acdc_raw(work / "raw")
    save_nifti(acdc_frame(raw, 2, gt=True), np.zeros(SHAPE[:2] + (0,), dtype=np.uint8))
    path = save_nifti(acdc_frame(raw, 2), np.zeros(SHAPE[:2] + (0,), dtype=np.int16))
    return acdc_setup(work, names=str(path), problem="zero-length axis")


@case("image-2d", "a 2D image where a 3D volume is expected")
def _image_2d(work: Path) -> Setup:
    path = save_nifti(acdc_frame(acdc_raw(work / "raw"), 1), np.zeros(SHAPE[:2], dtype=np.int16))
    return acdc_setup(work, names=str(path), problem="is 2D")


@case("image-4d", "a 4D image (two time points) where a 3D volume is expected")
def _image_4d(work: Path) -> Setup:
    path = save_nifti(acdc_frame(acdc_raw(work / "raw"), 1), np.zeros(SHAPE + (2,), dtype=np.int16))
    return acdc_setup(work, names=str(path), problem="is 4D")


@case("label-4d-singleton", "legal: a label stored 4D with a last axis of length 1")
def _label_4d_singleton(work: Path) -> Setup:
    raw = acdc_raw(work / "raw")
    path = acdc_frame(raw, 2, gt=True)
    save_nifti(path, rings(shift=0)[..., None])
    return acdc_setup(work, code=0, verify=lambda out: prepared_problems(out, volumes=4))


@case("nan-intensity", "an image with one NaN voxel")
def _nan(work: Path) -> Setup:
    path = acdc_frame(acdc_raw(work / "raw"), 2)
    values = intensities(rings(), 0).astype(np.float32)
    values[3, 4, 1] = np.nan
    save_nifti(path, values)
    return acdc_setup(work, names=str(path), problem="1 NaN or infinite intensities")


@case("inf-intensity", "an image with +inf and -inf voxels")
def _inf(work: Path) -> Setup:
    path = acdc_frame(acdc_raw(work / "raw"), 1, 3)
    values = intensities(rings(), 0).astype(np.float32)
    values[1, 1, 0], values[2, 2, 2] = np.inf, -np.inf
    save_nifti(path, values)
    return acdc_setup(work, names=str(path), problem="2 NaN or infinite intensities")


@case("zero-spacing", "a header with voxel size 0 (nibabel would silently read it as 1 mm)")
def _zero_spacing(work: Path) -> Setup:
    path = acdc_frame(acdc_raw(work / "raw"), 2)
    data = bytearray(gzip.decompress(path.read_bytes()))
    data[80:84] = np.float32(0).tobytes()  # pixdim[1]
    path.write_bytes(gzip.compress(bytes(data), mtime=0))
    return acdc_setup(work, names=str(path), problem="invalid voxel spacing")


@case("shape-mismatch", "a label with one slice more than its image")
def _shape_mismatch(work: Path) -> Setup:
    path = save_nifti(acdc_frame(acdc_raw(work / "raw"), 2, gt=True), rings(SHAPE[:2] + (4,)))
    return acdc_setup(work, names=str(path), problem="label shape (20, 22, 4) differs from image shape (20, 22, 3)")


@case("spacing-mismatch", "a label with 5 mm slices for an image with 10 mm slices")
def _spacing_mismatch(work: Path) -> Setup:
    path = save_nifti(acdc_frame(acdc_raw(work / "raw"), 2, gt=True), rings(), spacing=(1.5, 1.5, 5.0))
    return acdc_setup(work, names=str(path), problem="label spacing")


@case("label-outside-declared-set", "a label voxel of 7 where ACDC declares 0-3")
def _label_outside(work: Path) -> Setup:
    values = rings()
    values[0, 0, 1] = 7
    path = save_nifti(acdc_frame(acdc_raw(work / "raw"), 1, 3, gt=True), values)
    return acdc_setup(work, names=str(path), problem="label values {7} outside the declared set {0, 1, 2, 3}")


@case("float-labels", "a float label file with a voxel of 0.5")
def _float_labels(work: Path) -> Setup:
    values = rings().astype(np.float32)
    values[5, 5, 1] = 0.5
    path = save_nifti(acdc_frame(acdc_raw(work / "raw"), 2, gt=True), values)
    return acdc_setup(work, names=str(path), problem="non-integer values")


@case("whole-float-labels", "legal: a float32 label file holding whole numbers")
def _whole_float_labels(work: Path) -> Setup:
    save_nifti(acdc_frame(acdc_raw(work / "raw"), 2, gt=True), rings().astype(np.float32))
    return acdc_setup(work, code=0, verify=lambda out: prepared_problems(out, volumes=4))


@case("all-background-volume", "legal: one volume whose label is all background (tags say absent)")
def _all_background_volume(work: Path) -> Setup:
    raw = acdc_raw(work / "raw")
    save_nifti(acdc_frame(raw, 2, 3, gt=True), np.zeros(SHAPE, dtype=np.uint8))
    verify = lambda out: prepared_problems(out, volumes=4) + _all_absent(out, "patient002_frame03")  # noqa: E731
    return acdc_setup(work, code=0, verify=verify)


@case("all-background-dataset", "legal: every label all background, with typed --common-bounds")
def _all_background_dataset(work: Path) -> Setup:
    custom_raw(work / "raw", label_of=lambda name: np.zeros(SHAPE, dtype=np.uint8))
    verify = lambda out: prepared_problems(out, volumes=2) + _all_absent(out)  # noqa: E731
    return custom_setup(work, "--common-bounds", "10,100", code=0, verify=verify)


@case("all-background-reference", "every label all background, no --common-bounds: no reference size")
def _all_background_reference(work: Path) -> Setup:
    raw = custom_raw(work / "raw", label_of=lambda name: np.zeros(SHAPE, dtype=np.uint8))
    return custom_setup(work, names=str(raw / "labels" / "a.nii.gz"), problem="reference patient a has no slice with class")


@case("metaimage-missing-data-file", "a PROMISE12 .mhd whose .raw voxel file is gone")
def _missing_raw(work: Path) -> Setup:
    raw = promise12_raw(work / "raw")
    (raw / "Case01.raw").unlink()
    problem = "data file missing (named by ElementDataFile in Case01.mhd)"
    return promise12_setup(work, names=str(raw / "Case01.raw"), problem=problem)


@case("metaimage-garbage-header", "a .mhd header that is not a MetaImage header")
def _garbage_mhd(work: Path) -> Setup:
    raw = promise12_raw(work / "raw")
    (raw / "Case00_segmentation.mhd").write_text("this is not a MetaImage header\n")
    return promise12_setup(work, names=str(raw / "Case00_segmentation.mhd"), problem="unreadable or truncated label file")


@case("dicom-mixed-series", "a DICOM folder holding two series (two SeriesInstanceUIDs)")
def _dicom_mixed(work: Path) -> Setup:
    raw = work / "raw"
    for number, name in enumerate(("a", "b")):
        label = (rings(shift=number) == 3).astype(np.uint8)
        series = "1.2.826.0.1.3680043.2.1125.1." + str(1000 + number)
        dicom_series(raw / name / "dicom", intensities(label, number).transpose(2, 1, 0), series)
        save_nifti(raw / name / "mask.nii.gz", label)
    dicom_series(raw / "b" / "dicom", intensities(rings(), 5).transpose(2, 1, 0), "1.2.826.0.1.3680043.2.1125.1.2002")
    out = work / "prepared" / "out"
    out.parent.mkdir(parents=True)
    argv = ["custom", "--src", raw, "--out", out, "--images", "{case}/dicom", "--labels", "{case}/mask.nii.gz",
            *SIZE, "--val", "0"]  # fmt: skip
    return Setup(argv, out, names=str(raw / "b" / "dicom"), problem="folder holds 2 DICOM series")


@case("worker-error", "a broken image read by a worker process (--workers 2)")
def _worker_error(work: Path) -> Setup:
    path = acdc_frame(acdc_raw(work / "raw"), 2, 3)
    path.write_bytes(gzip.compress(b"not a nifti file", mtime=0))
    setup = acdc_setup(work, names=str(path), problem="unreadable or truncated image file")
    setup.argv += ["--workers", "2"]
    return setup


# --- the corpus: layout ---------------------------------------------------------------------


@case("empty-source", "an empty source folder (acdc)")
def _empty_source(work: Path) -> Setup:
    (work / "raw").mkdir()
    return acdc_setup(work, names=str(work / "raw"), problem="no ACDC patient folders")


@case("empty-source-custom", "custom data: nothing under --src matches the image pattern")
def _empty_custom(work: Path) -> Setup:
    (work / "raw" / "images").mkdir(parents=True)
    return custom_setup(work, names=str(work / "raw"), problem="no cases found matching")


@case("missing-gt", "an ACDC frame without its _gt label")
def _missing_gt(work: Path) -> Setup:
    path = acdc_frame(acdc_raw(work / "raw"), 2, 3, gt=True)
    path.unlink()
    return acdc_setup(work, names=str(path), problem="label file missing")


@case("missing-segmentation", "a PROMISE12 case without its _segmentation.mhd")
def _missing_segmentation(work: Path) -> Setup:
    raw = promise12_raw(work / "raw")
    (raw / "Case01_segmentation.mhd").unlink()
    (raw / "Case01_segmentation.raw").unlink()
    return promise12_setup(work, names=str(raw / "Case01_segmentation.mhd"), problem="label file missing")


@case("duplicate-patient", "patient001 unpacked twice (training/ and testing/)")
def _duplicate_patient(work: Path) -> Setup:
    raw = acdc_raw(work / "raw")
    acdc_raw(raw, patients=1, folder="testing")
    first = raw / "training" / "patient001" / "patient001_frame01.nii.gz"
    return acdc_setup(work, names=str(first), problem="volume patient001_frame01 found twice")


@case("duplicate-after-sanitising", "custom CSV: cases 'a b' and 'a_b' would share a file name")
def _duplicate_sanitised(work: Path) -> Setup:
    raw = custom_raw(work / "raw")
    return csv_setup(raw, "image,label,case\nimages/a.nii.gz,labels/a.nii.gz,a b\nimages/b.nii.gz,labels/b.nii.gz,a_b\n",
                     "--val", "0", names=str(raw / "images" / "b.nii.gz"), problem="volume a_b found twice")


@case("unreadable-file", "an image with permissions 000 (skipped where chmod does not stop reading, as root)")
def _unreadable(work: Path) -> Setup:
    path = acdc_frame(acdc_raw(work / "raw"), 2)
    os.chmod(path, 0)
    try:
        with open(path, "rb"):
            readable = True
    except PermissionError:
        readable = False
    if readable:
        os.chmod(path, 0o644)
        raise Skip("chmod 000 does not stop this user from reading (root); see folder-instead-of-file")
    return acdc_setup(work, names=str(path), problem="cannot read the image file (Permission denied)")


@case("folder-instead-of-file", "an unreadable image: a folder where patient002_frame01.nii.gz should be a file")
def _folder_for_file(work: Path) -> Setup:
    path = acdc_frame(acdc_raw(work / "raw"), 2)
    path.unlink()
    path.mkdir()
    return acdc_setup(work, names=str(path), problem="is a folder; the image must be a file")


@case("info-cfg-folder", "an Info.cfg that is a folder")
def _info_folder(work: Path) -> Setup:
    path = acdc_raw(work / "raw") / "training" / "patient002" / "Info.cfg"
    path.unlink()
    path.mkdir()
    return acdc_setup(work, names=str(path), problem="cannot read Info.cfg")


@case("symlink-loop-file", "an image that is a symbolic-link loop (a -> b -> a)")
def _link_loop_file(work: Path) -> Setup:
    path = acdc_frame(acdc_raw(work / "raw"), 2, 3)
    path.unlink()
    partner = path.with_name("loop.nii.gz")
    os.symlink(partner.name, path)
    os.symlink(path.name, partner)
    return acdc_setup(work, names=str(path), problem="symbolic link loop")


@case("symlink-loop-folder", "legal: a folder link back to the source root (not followed, nothing found twice)")
def _link_loop_folder(work: Path) -> Setup:
    raw = acdc_raw(work / "raw")
    os.symlink("..", raw / "training" / "loop")
    return acdc_setup(work, code=0, verify=lambda out: prepared_problems(out, volumes=4))


@case("newline-in-file-name", "a broken image named 'bad<newline>name.nii.gz': the message stays one line")
def _newline_name(work: Path) -> Setup:
    raw = custom_raw(work / "raw")
    path = raw / "images" / "bad\nname.nii.gz"
    path.write_bytes(b"\x1f\x8b broken")
    save_nifti(raw / "labels" / "bad\nname.nii.gz", rings())
    return custom_setup(work, names=str(path).replace("\n", "\\n"), problem="unreadable or truncated image file")


# --- the corpus: names and outputs -------------------------------------------------------------


@case("hostile-csv-names", "legal: CSV case/patient names '../../escape', an absolute path, '..': sanitised inside --out")
def _hostile_names(work: Path) -> Setup:
    raw = custom_raw(work / "raw", cases=("a", "b", "c"))
    escape = work / "escaped"
    listing_text = (
        "image,label,patient,case\n"
        "images/a.nii.gz,labels/a.nii.gz,../../up,../../escape\n"
        f"images/b.nii.gz,labels/b.nii.gz,{escape},{escape}\n"
        "images/c.nii.gz,labels/c.nii.gz,..,..\n"
    )

    def verify(found: Path) -> list[str]:
        problems = prepared_problems(found, volumes=3)
        volumes = [v["volume"] for v in json.loads((found / "dataset.json").read_text())["volumes"]]
        unsafe = [v for v in volumes if "/" in v or v.startswith(".") or v in ("", "..")]
        if unsafe or "escape" not in volumes:
            problems.append(f"volume ids {volumes} are not sanitised file names")
        return problems  # nothing written outside --out: run_case compares the whole work folder

    return csv_setup(raw, listing_text, "--val", "0", code=0, verify=verify)


@case("csv-bom-crlf", "legal: a CSV listing saved by a spreadsheet (UTF-8 byte-order mark, CRLF line ends)")
def _csv_bom_crlf(work: Path) -> Setup:
    raw = custom_raw(work / "raw")
    setup = csv_setup(raw, "", "--val", "0", code=0, verify=lambda found: prepared_problems(found, volumes=2))
    text = "image,label\r\nimages/a.nii.gz,labels/a.nii.gz\r\nimages/b.nii.gz,labels/b.nii.gz\r\n"
    (raw / "list.csv").write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    return setup


@case("csv-same-image-twice", "a CSV listing one image under two case names (it would land in two splits)")
def _csv_same_image_twice(work: Path) -> Setup:
    raw = custom_raw(work / "raw")
    text = "image,label,case\nimages/a.nii.gz,labels/a.nii.gz,one\nimages/a.nii.gz,labels/a.nii.gz,two\n"
    return csv_setup(raw, text, "--val", "0", names=str(raw / "list.csv"), problem="is listed twice")


@case("header-claims-huge-volume", "a NIfTI header claiming 30000^3 voxels in a small file: refused before any allocation")
def _huge_header(work: Path) -> Setup:
    import gzip
    import struct

    raw = custom_raw(work / "raw")
    path = raw / "images" / "b.nii.gz"
    data = bytearray(gzip.decompress(path.read_bytes()))
    struct.pack_into("<8h", data, 40, 3, 30000, 30000, 30000, 1, 1, 1, 1)  # dim[0..7] of the NIfTI-1 header
    path.write_bytes(gzip.compress(bytes(data)))
    return custom_setup(work, names=str(path), problem="cannot hold them")


@case("format-string-pattern", "a --labels pattern '{case.__class__}' that str.format would evaluate")
def _format_pattern(work: Path) -> Setup:
    custom_raw(work / "raw")
    names, problem = "--labels 'labels/{case.__class__}.nii.gz'", "only the placeholders {case} and {patient}"
    setup = custom_setup(work, names=names, problem=problem)
    setup.argv[setup.argv.index("labels/{case}.nii.gz")] = "labels/{case.__class__}.nii.gz"
    return setup


@case("csv-missing-file", "a CSV listing an image that does not exist")
def _csv_missing(work: Path) -> Setup:
    raw = custom_raw(work / "raw")
    return csv_setup(raw, "image,label\nimages/a.nii.gz,labels/a.nii.gz\nimages/zz.nii.gz,labels/b.nii.gz\n",
                     "--val", "0", names=str(raw / "images" / "zz.nii.gz"), problem="image file missing")


@case("csv-missing-columns", "a CSV listing without a label column")
def _csv_columns(work: Path) -> Setup:
    raw = custom_raw(work / "raw")
    return csv_setup(raw, "image,mask\nimages/a.nii.gz,labels/a.nii.gz\n", names=str(raw / "list.csv"),
                     problem="lacks column(s) label")


@case("out-under-a-file", "--out inside a path whose parent is a regular file")
def _out_under_file(work: Path) -> Setup:
    acdc_raw(work / "raw")
    blocker = work / "prepared" / "notes.txt"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("my notes\n")
    out = blocker / "out"
    argv = ["acdc", "--src", work / "raw", "--out", out, *SIZE]
    return Setup(argv, out, names=str(blocker), problem="cannot create the output's parent folder")


@case("out-is-a-file", "--out names an existing file, with --overwrite: the file is kept")
def _out_is_file(work: Path) -> Setup:
    acdc_raw(work / "raw")
    out = work / "prepared" / "out"
    out.parent.mkdir(parents=True)
    out.write_text("precious\n")
    argv = ["acdc", "--src", work / "raw", "--out", out, *SIZE, "--overwrite"]
    return Setup(argv, out, names=str(out), problem="exists and is not a folder")


@case("existing-output", "--out exists (a finished dataset) and no --overwrite: it is kept")
def _existing_output(work: Path) -> Setup:
    acdc_raw(work / "raw")
    out = work / "prepared" / "out"
    out.mkdir(parents=True)
    (out / "dataset.json").write_text("{}\n")
    return Setup(["acdc", "--src", work / "raw", "--out", out, *SIZE], out, names=str(out), problem="pass --overwrite")


@case("out-is-src", "--out is the raw folder itself, with --overwrite: the raw data is kept")
def _out_is_src(work: Path) -> Setup:
    raw = acdc_raw(work / "raw")
    return Setup(["acdc", "--src", raw, "--out", raw, *SIZE, "--overwrite"], raw, names=str(raw),
                 problem="--out is the raw folder --src")


@case("out-contains-src", "--out is a parent of the raw folder, with --overwrite: the raw data is kept")
def _out_contains_src(work: Path) -> Setup:
    raw = acdc_raw(work / "data" / "raw")
    out = work / "data"
    return Setup(["acdc", "--src", raw, "--out", out, *SIZE, "--overwrite"], out, names=str(out),
                 problem="--out contains the raw folder --src")


@case("out-inside-src", "--out inside the raw folder (through a symbolic link): refused, nothing written")
def _out_inside_src(work: Path) -> Setup:
    raw = acdc_raw(work / "raw")
    (work / "link").symlink_to(raw, target_is_directory=True)
    out = work / "link" / "prepared"
    return Setup(["acdc", "--src", raw, "--out", out, *SIZE, "--overwrite"], out, names=str(out),
                 problem="--out lies inside the raw folder --src")


# --- the corpus: your own annotations (issue 13) --------------------------------------------------


def scribble_of(label: np.ndarray) -> np.ndarray:
    """A thin stroke (file value 1) along the middle row of the object on every slice where it is present."""
    scribble = np.zeros(label.shape, dtype=np.uint8)
    for k in range(label.shape[2]):
        rows = np.flatnonzero(label[:, :, k].any(axis=1))
        if len(rows):
            middle = rows[len(rows) // 2]
            scribble[middle, :, k] = label[middle, :, k]
    return scribble


def weak_raw(raw: Path, cases=("a", "b"), masks=()) -> Path:
    """``raw/images/<case>.nii.gz``, scribbles ``raw/scribbles/<case>.nii.gz`` and full masks for ``masks`` only."""
    custom_raw(raw, cases=cases)
    for name in cases:
        label_path = raw / "labels" / f"{name}.nii.gz"
        import nibabel as nib

        label = np.asanyarray(nib.load(str(label_path)).dataobj)
        save_nifti(raw / "scribbles" / f"{name}.nii.gz", scribble_of(label))
        if name not in masks:
            label_path.unlink()
    return raw


def weak_setup(work: Path, *extra, **expected) -> Setup:
    """``custom`` with scribbles and no --labels (every case weak-only)."""
    out = work / "prepared" / "out"
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = ["custom", "--src", work / "raw", "--out", out, "--images", "images/{case}.nii.gz",
            "--weak-labels", "scribbles/{case}.nii.gz", *SIZE, "--val", "0", *extra]  # fmt: skip
    return Setup(argv, out, **expected)


def save_plain_nifti(path: Path, array: np.ndarray, affine: np.ndarray) -> Path:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(array, affine)
    image.header.set_qform(affine, code=1)
    image.header.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm")
    nib.save(image, str(path))
    return path


def _acdc_affine(spacing=SPACING) -> np.ndarray:
    return np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])


def _replace_scribble(work: Path, array: np.ndarray | None = None, affine: np.ndarray | None = None) -> Path:
    path = work / "raw" / "scribbles" / "b.nii.gz"
    import nibabel as nib

    current = np.asanyarray(nib.load(str(path)).dataobj)
    path.unlink()
    return save_plain_nifti(path, current if array is None else array, _acdc_affine() if affine is None else affine)


def markups_text(points: list[tuple[str, list[float]]], space: str = "LPS") -> str:
    """A point list as 3D Slicer writes it (markups schema v1.0.3, control points abridged to the schema's fields)."""
    controls = [{"id": str(n), "label": label, "description": "", "associatedNodeID": "", "position": position,
                 "orientation": [-1.0, -0.0, -0.0, -0.0, -1.0, -0.0, 0.0, 0.0, 1.0], "selected": True, "locked": False,
                 "visibility": True, "positionStatus": "defined"} for n, (label, position) in enumerate(points, 1)]
    return json.dumps({"@schema": "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/"
                       "Resources/Schema/markups-schema-v1.0.3.json#",
                       "markups": [{"type": "Fiducial", "coordinateSystem": space, "coordinateUnits": "mm",
                                    "locked": False, "fixedNumberOfControlPoints": False, "labelFormat": "%N-%d",
                                    "lastUsedControlPointNumber": len(points), "controlPoints": controls,
                                    "measurements": [], "display": {"visibility": True}}]}, indent=4)


def _weak_only(out: Path) -> list[str]:
    """The contract for weak-only cases: no label, no sizes, the user strategy, bounds only where derived."""
    problems = prepared_problems(out)
    for entry in _entries(out):
        if "label" in entry or "size_px" in entry or "volume_size_px" in entry:
            problems.append(f"weak-only slice {entry['image']} has a label or sizes")
            break
        if "user" not in entry["weak"]:
            problems.append(f"slice {entry['image']} lacks the user strategy")
            break
        if any(rule in entry["bounds"] for rule in ("individual", "volume3d")):
            problems.append(f"slice {entry['image']} has a bound nobody gave")
            break
    return problems


@case("weak-only-custom", "legal: custom data without --labels, scribbles only: every case a weak-only training case")
def _weak_only_custom(work: Path) -> Setup:
    weak_raw(work / "raw")
    return weak_setup(work, code=0, verify=_weak_only)


@case("annotation-shape-mismatch", "a scribble file with one slice fewer than its image")
def _annotation_shape(work: Path) -> Setup:
    weak_raw(work / "raw")
    path = _replace_scribble(work, np.zeros((SHAPE[0], SHAPE[1], SHAPE[2] - 1), dtype=np.uint8))
    return weak_setup(work, names=str(path), problem="annotation shape")


@case("annotation-spacing-mismatch", "a scribble file whose voxels are 2 mm instead of 1.5 mm")
def _annotation_spacing(work: Path) -> Setup:
    weak_raw(work / "raw")
    path = _replace_scribble(work, affine=_acdc_affine((2.0, 2.0, 10.0)))
    return weak_setup(work, names=str(path), problem="annotation spacing")


@case("annotation-orientation-mismatch", "a scribble file with its first axis flipped (RPS instead of LPS)")
def _annotation_orientation(work: Path) -> Setup:
    weak_raw(work / "raw")
    path = _replace_scribble(work, affine=np.diag([SPACING[0], -SPACING[1], SPACING[2], 1.0]))
    return weak_setup(work, names=str(path), problem="annotation orientation differs")


@case("annotation-origin-mismatch", "a scribble file shifted by 3 mm")
def _annotation_origin(work: Path) -> Setup:
    weak_raw(work / "raw")
    affine = _acdc_affine()
    affine[0, 3] = 3.0
    path = _replace_scribble(work, affine=affine)
    return weak_setup(work, names=str(path), problem="annotation origin is 3 mm away")


@case("annotation-undeclared-value", "a scribble file holding the value 7, which --weak-values does not declare")
def _annotation_value(work: Path) -> Setup:
    weak_raw(work / "raw")
    array = scribble_of((rings() == 3).astype(np.uint8))
    array[0, 0, 0] = 7
    path = _replace_scribble(work, array)
    return weak_setup(work, "--weak-values", "0=none,1=1", names=str(path), problem="annotation values {7} not declared")


@case("every-case-annotated", "--every-case-annotated, and case b has no scribble file")
def _every_case(work: Path) -> Setup:
    raw = weak_raw(work / "raw")
    missing = raw / "scribbles" / "b.nii.gz"
    missing.unlink()
    return weak_setup(work, "--every-case-annotated", names=str(missing), problem="annotation file missing for case b")


@case("point-outside-image", "a points CSV with a voxel index past the image's last column")
def _point_outside(work: Path) -> Setup:
    raw = weak_raw(work / "raw")
    listing = raw / "points.csv"
    listing.write_text(f"case,class,i,j,k\na,1,10,11,1\nb,1,10,{SHAPE[1] + 4},1\n")
    return weak_setup(work, "--points", listing, names=str(listing), problem="line 3: lies outside the image")


@case("point-undeclared-space", "a points CSV in world mm (x,y,z) without --points-space")
def _point_space(work: Path) -> Setup:
    raw = weak_raw(work / "raw")
    listing = raw / "points.csv"
    listing.write_text("case,class,x,y,z\na,1,-15.0,-16.5,10.0\n")
    return weak_setup(work, "--points", listing, names=str(listing), problem="undeclared coordinate system")


@case("markups-undeclared-space", "a Slicer markups file whose coordinateSystem is 'IJK'")
def _markups_space(work: Path) -> Setup:
    raw = weak_raw(work / "raw")
    path = raw / "clicks" / "a.mrk.json"
    path.parent.mkdir()
    path.write_text(markups_text([("1-1", [-15.0, -16.5, 10.0])], space="IJK"))
    return weak_setup(work, "--markups", "clicks/{case}.mrk.json", names=str(path),
                      problem="coordinate system 'IJK' is not LPS or RAS")


@case("markups-not-json", "a .mrk.json file cut in the middle (not valid JSON)")
def _markups_json(work: Path) -> Setup:
    raw = weak_raw(work / "raw")
    path = raw / "clicks" / "a.mrk.json"
    path.parent.mkdir()
    text = markups_text([("1-1", [-15.0, -16.5, 10.0])])
    path.write_text(text[: len(text) // 2])
    return weak_setup(work, "--markups", "clicks/{case}.mrk.json", names=str(path), problem="not valid JSON")


@case("markups-not-markups", "a .mrk.json file that is JSON but not a Slicer markups file (a segmentation's metadata)")
def _markups_other(work: Path) -> Setup:
    raw = weak_raw(work / "raw")
    path = raw / "clicks" / "a.mrk.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"segments": [{"name": "LV", "labelValue": 1}]}))
    return weak_setup(work, "--markups", "clicks/{case}.mrk.json", names=str(path), problem="not a 3D Slicer markups file")


@case("csv-unknown-case", "a tags CSV listing case 'zz', which is not among the cases found")
def _csv_unknown_case(work: Path) -> Setup:
    raw = weak_raw(work / "raw")
    listing = raw / "tags.csv"
    listing.write_text("case,class,present,slice\na,1,1,1\nzz,1,0,1\n")
    return weak_setup(work, "--tags", listing, names=str(listing), problem="line 3: case 'zz' is not among the cases found")


@case("two-classes-one-voxel", "two clicks of different classes on the same voxel")
def _two_classes(work: Path) -> Setup:
    raw = weak_raw(work / "raw")
    listing = raw / "points.csv"
    listing.write_text("case,class,i,j,k\na,1,10,11,1\na,background,10,11,1\n")
    return weak_setup(work, "--points", listing, names=str(listing), problem="two classes")


@case("tag-contradicts-annotation", "a tags CSV saying class 1 is absent on a slice where the scribble paints it")
def _tag_contradiction(work: Path) -> Setup:
    raw = weak_raw(work / "raw")
    listing = raw / "tags.csv"
    listing.write_text("case,class,present,slice\na,1,0,1\n")
    return weak_setup(work, "--tags", listing, names=str(listing), problem="tagged absent on slice 1 of a")


@case("mm2-bound-without-spacing", "--common-bounds-mm2 on an image whose header declares no voxel size")
def _mm2_no_spacing(work: Path) -> Setup:
    import nibabel as nib

    raw = weak_raw(work / "raw")
    path = raw / "images" / "b.nii.gz"
    array = np.asanyarray(nib.load(str(path)).dataobj)
    path.unlink()
    nib.save(nib.Nifti1Image(array, np.eye(4)), str(path))  # pixdim 1, unit unknown: no spacing
    (raw / "scribbles" / "b.nii.gz").unlink()
    nib.save(nib.Nifti1Image(scribble_of((rings(shift=1) == 3).astype(np.uint8)), np.eye(4)), str(raw / "scribbles" / "b.nii.gz"))
    return weak_setup(work, "--common-bounds-mm2", "20,400", names=str(path), problem="declares no spacing")


@case("val-needs-masks", "--val 2 when only one patient has a full mask")
def _val_needs_masks(work: Path) -> Setup:
    weak_raw(work / "raw", cases=("a", "b", "c"), masks=("a",))
    setup = weak_setup(work, "--labels", "labels/{case}.nii.gz", problem="only 1 of the 3 patients have them")
    setup.argv[setup.argv.index("--val") + 1] = "2"
    return setup


# --- the corpus: silently wrong results (issue 15) -------------------------------------------------


def _prepared_image(out: Path, volume: str) -> np.ndarray:
    """The prepared (normalised, resampled) 3D image of ``volume``."""
    import nibabel as nib

    entry = next(v for v in json.loads((out / "dataset.json").read_text())["volumes"] if v["volume"] == volume)
    return np.asanyarray(nib.load(str(out / entry["image"])).dataobj)


def _same_normalised(out: Path, volume: str, twin: str) -> list[str]:
    """``volume`` (extreme intensities) must be prepared like ``twin`` (the same image at ordinary scale)."""
    problems = prepared_problems(out)
    if problems:
        return problems
    extreme, ordinary = _prepared_image(out, volume), _prepared_image(out, twin)
    if not np.all(np.isfinite(extreme)) or not np.ptp(extreme) > 0:
        return [f"{volume} prepared into non-finite or flat intensities (min {extreme.min()}, max {extreme.max()})"]
    worst = float(np.max(np.abs(extreme.astype(np.float64) - ordinary)))
    return [f"{volume} differs from its scaled-down twin {twin} by up to {worst:.3g}"] if worst > 1e-4 else []


@case("extreme-intensity", "legal: an image of values near float32's limits (+-3e38) is normalised like its scaled-down twin")
def _extreme_intensity(work: Path) -> Setup:
    raw = acdc_raw(work / "raw")
    centred = np.clip(intensities(rings(), 11).astype(np.float32) - 180, -130, 130)
    save_nifti(acdc_frame(raw, 1, 1), centred)
    save_nifti(acdc_frame(raw, 2, 1), centred * np.float32(2.5e36))  # up to 3.25e38: float32 max is 3.40e38
    verify = lambda out: _same_normalised(out, "patient002_frame01", "patient001_frame01")  # noqa: E731
    return acdc_setup(work, code=0, verify=verify)


@case("label-flipped-shifted", "a label whose affine has the x axis reversed and the origin 40 mm away from its image's")
def _label_flipped(work: Path) -> Setup:
    raw = acdc_raw(work / "raw")
    path = acdc_frame(raw, 2, gt=True)
    path.unlink()
    affine = np.diag([SPACING[0], -SPACING[1], SPACING[2], 1.0])  # image: diag(-1.5, -1.5, 10)
    affine[0, 3] = -40.0
    save_plain_nifti(path, rings(), affine)
    return acdc_setup(work, names=str(path), problem="label orientation differs from the image's")


@case("label-origin-shifted", "a PROMISE12 segmentation (.mhd) whose Offset is 12 mm away from its image's")
def _label_origin_shifted(work: Path) -> Setup:
    raw = promise12_raw(work / "raw")
    path = raw / "Case01_segmentation.mhd"
    text = path.read_text()
    assert "Offset = 0 0 0" in text, text
    path.write_text(text.replace("Offset = 0 0 0", "Offset = 0 12 0"))
    return promise12_setup(work, names=str(path), problem="label origin is 12 mm away from the image's")


@case("label-origin-rounding", "legal: a label whose origin and direction differ from its image's by rounding (1e-4 mm)")
def _label_origin_rounding(work: Path) -> Setup:
    raw = custom_raw(work / "raw")
    path = raw / "labels" / "b.nii.gz"
    label = (rings(shift=1) == 3).astype(np.uint8)
    path.unlink()
    affine = _acdc_affine()
    affine[:3, 3] = (1e-4, -2e-4, 1e-4)
    affine[1, 0] = 1e-6  # a direction cosine of 1e-6 / 1.5 mm
    save_plain_nifti(path, label, affine)
    return custom_setup(work, code=0, verify=lambda out: prepared_problems(out, volumes=2))


@case("constant-image-foreground", "an image whose voxels all hold 7 while its label marks foreground")
def _constant_image(work: Path) -> Setup:
    path = save_nifti(acdc_frame(acdc_raw(work / "raw"), 2, 3), np.full(SHAPE, 7, dtype=np.int16))
    return acdc_setup(work, names=str(path), problem="image is constant (every voxel 7) but its label")


@case("constant-image-annotation", "a weak-only case whose image is all 0 while its scribble paints foreground")
def _constant_image_annotation(work: Path) -> Setup:
    raw = weak_raw(work / "raw")
    path = raw / "images" / "b.nii.gz"
    path.unlink()
    save_nifti(path, np.zeros(SHAPE, dtype=np.int16))
    return weak_setup(work, names=str(path), problem="image is constant (every voxel 0) but its annotation marks foreground")


def _padding_kept(out: Path, volume: str) -> list[str]:
    """The padding slice of ``volume`` is flat at 0 and the others keep their contrast."""
    problems = prepared_problems(out, volumes=4)
    if problems:
        return problems
    image = _prepared_image(out, volume)
    if np.ptp(image[:, :, 0]) != 0 or image[:, :, 0].max() != 0:
        problems.append(f"the constant padding slice of {volume} is not flat at 0")
    if not all(np.ptp(image[:, :, k]) > 0.5 for k in range(1, image.shape[2])):
        problems.append(f"the other slices of {volume} lost their contrast")
    return problems


@case("constant-padding-slices", "legal: an image constant (0) on a padding slice only, where its label is empty")
def _constant_padding(work: Path) -> Setup:
    raw = acdc_raw(work / "raw")
    label = rings(empty_slices=(0,))
    values = intensities(label, 21)
    values[:, :, 0] = 0
    save_nifti(acdc_frame(raw, 2, 1), values)
    return acdc_setup(work, code=0, verify=lambda out: _padding_kept(out, "patient002_frame01"))


def case_named(name: str) -> BadInput:
    """The corpus case called ``name``."""
    for bad in CASES:
        if bad.name == name:
            return bad
    raise KeyError(name)
