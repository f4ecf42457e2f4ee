"""Corpus cases: a raw dataset laid out wrong (empty, files missing or doubled, links), names that would
escape ``--out``, and outputs that would overwrite what the user keeps."""

from __future__ import annotations

import json
import os
from pathlib import Path


from pipelines.testkit.bad_inputs.corpus import SIZE, Setup, Skip, case
from pipelines.testkit.bad_inputs.raw_data import (
    acdc_frame,
    acdc_raw,
    acdc_setup,
    csv_setup,
    custom_raw,
    custom_setup,
    prepared_problems,
    promise12_raw,
    promise12_setup,
    rings,
    save_nifti,
)


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
