"""``python -m pipelines.testkit.phantoms``: same seed same bytes, clear errors, nothing half-written."""

from __future__ import annotations

import contextlib
import hashlib
import io
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import pytest
import SimpleITK as sitk

from pipelines.testkit.phantoms import acdc, cli, generate


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """The phantom command as ``python -m pipelines.testkit.phantoms`` runs it: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def checksums(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_help_lists_the_three_layouts_through_the_real_entry_point():
    done = subprocess.run([sys.executable, "-m", "pipelines.testkit.phantoms", "--help"], capture_output=True, text=True, encoding="utf-8", errors="replace")
    assert done.returncode == 0
    for word in ("acdc", "promise12", "vertebral", "--out", "--cases", "--seed", "--small", "--workers"):
        assert word in done.stdout


def test_the_old_data_prep_phantom_command_names_its_new_home(tmp_path, capsys):
    from data_prep import cli as data_prep_cli

    assert data_prep_cli.main(["phantom", "acdc", "--out", str(tmp_path / "raw")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "python -m pipelines.testkit.phantoms acdc --out" in err
    assert not (tmp_path / "raw").exists()


def test_cli_writes_the_layout_and_prints_its_root(tmp_path):
    code, out, err = run_cli(["vertebral", "--out", tmp_path / "raw", "--cases", "2", "--small"])
    assert code == 0 and out.strip() == str(tmp_path / "raw")
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == [
        "Img_01.nii", "Img_01_Labels.nii", "Img_02.nii", "Img_02_Labels.nii"]


@pytest.mark.parametrize("argv, problem", [
    (["--cases", "0"], "--cases must be between 1 and"),
    (["--workers", "0"], "--workers must be at least 1"),
    (["--inplane", "4"], "--inplane must be at least"),
    (["--frames", "8"], "--frames applies to acdc only"),
])
def test_bad_values_give_one_error_line_exit_2_and_no_output(tmp_path, argv, problem):
    out = tmp_path / "raw"
    code, _, err = run_cli(["promise12", "--out", out, "--small", *argv])
    assert code == 2
    assert err.count("\n") == 1 and err.startswith(f"error: {out}: ") and problem in err
    assert list(tmp_path.iterdir()) == []


def test_an_existing_non_empty_out_is_refused_unless_overwrite(tmp_path):
    out = tmp_path / "raw"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, err = run_cli(["acdc", "--out", out, "--cases", "1", "--small"])
    assert code == 2 and err.startswith(f"error: {out}: already exists and is not empty")
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    code, _, _ = run_cli(["acdc", "--out", out, "--cases", "1", "--small", "--overwrite"])
    assert code == 0 and sorted(p.name for p in out.iterdir()) == ["training"]


def test_an_empty_existing_out_is_fine(tmp_path):
    (tmp_path / "raw").mkdir()
    assert run_cli(["acdc", "--out", tmp_path / "raw", "--cases", "1", "--small"])[0] == 0


def test_an_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    written = []

    def fail_on_second(root, index, rng, cfg, real=acdc.write_case):
        if written:
            raise KeyboardInterrupt
        written.append(index)
        real(root, index, rng, cfg)

    monkeypatch.setattr(acdc, "write_case", fail_on_second)
    with pytest.raises(KeyboardInterrupt):
        generate("acdc", tmp_path / "raw", cases=3, small=True)
    assert written == [1] and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("dataset", ["acdc", "promise12", "vertebral"])
def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path, dataset):
    first = checksums(generate(dataset, tmp_path / "a", cases=2, seed=7, small=True))
    again = checksums(generate(dataset, tmp_path / "b", cases=2, seed=7, small=True))
    other = checksums(generate(dataset, tmp_path / "c", cases=2, seed=8, small=True))
    assert first == again
    assert first.keys() == other.keys() or dataset == "acdc"  # ACDC frame numbers depend on the seed
    images = [name for name in first if name.endswith((".raw", ".nii", "_4d.nii.gz"))]
    assert images and all(first[name] != other.get(name) for name in images)


def test_gzip_headers_carry_no_timestamp(acdc_raw):
    # nibabel writes .nii.gz with mtime 0; bytes 4-8 of a gzip member are its mtime.
    for path in acdc_raw.rglob("*.nii.gz"):
        assert path.read_bytes()[4:8] == b"\x00\x00\x00\x00"


def test_two_workers_write_the_same_bytes_as_one(tmp_path):
    one = checksums(generate("acdc", tmp_path / "one", cases=3, seed=3, small=True, workers=1))
    two = checksums(generate("acdc", tmp_path / "two", cases=3, seed=3, small=True, workers=2))
    assert one == two


def test_size_options_fix_the_grid(tmp_path):
    code, _, _ = run_cli(["acdc", "--out", tmp_path / "a", "--cases", "1", "--inplane", "40",
                          "--slices", "5", "--frames", "4"])
    assert code == 0
    cine = nib.load(next((tmp_path / "a").rglob("*_4d.nii.gz")))
    assert cine.shape == (40, 40, 5, 4)
    run_cli(["promise12", "--out", tmp_path / "p", "--cases", "1", "--inplane", "48", "--slices", "9"])
    assert sitk.ReadImage(str(next((tmp_path / "p").rglob("Case00.mhd")))).GetSize() == (48, 48, 9)
    run_cli(["vertebral", "--out", tmp_path / "v", "--cases", "1", "--inplane", "80", "--slices", "13"])
    assert nib.load(tmp_path / "v" / "Img_01.nii").shape == (13, 80, 80)
