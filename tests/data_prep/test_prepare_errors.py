"""Bad options and inputs outside the corpus: one line naming the problem, exit code 2, nothing left under --out.

Broken files, layouts and names (truncated or empty files, grids that differ, labels outside the
declared set, NaN, non-3D volumes, missing labels, unreadable files, link loops, hostile names,
an existing --out...) are the bad-input corpus in pipelines/testkit/bad_inputs/, run through the real
command line by test_reliability.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SMALL = ["--size", "32"]


def assert_clean_failure(result, out: Path, names: str, problem: str) -> None:
    code, stdout, stderr = result
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2, stderr
    assert len(lines) == 1, stderr
    assert names in lines[0] and problem in lines[0], lines[0]
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]  # no temporary left


def test_unreadable_metaimage(tmp_path, prepare_cli):
    import SimpleITK as sitk

    src = tmp_path / "promise"
    src.mkdir()
    for name in ("Case00", "Case00_segmentation"):
        image = sitk.GetImageFromArray(np.zeros((4, 16, 16), dtype=np.int16))
        sitk.WriteImage(image, str(src / f"{name}.mhd"))
    raw = src / "Case00.raw"
    raw.write_bytes(raw.read_bytes()[:100])  # truncated pixel data
    out = tmp_path / "out"
    result = prepare_cli(["promise12", "--src", src, "--out", out, *SMALL, "--val", "0"])
    assert_clean_failure(result, out, "Case00.mhd", "unreadable or truncated image")


@pytest.mark.parametrize("source", ["acdc", "promise12", "vertebral"])
def test_empty_source_folder(tmp_path, prepare_cli, source):
    src = tmp_path / "empty"
    src.mkdir()
    out = tmp_path / "out"
    assert_clean_failure(prepare_cli([source, "--src", src, "--out", out]), out, str(src), "found")


def test_bad_option_value_is_one_line(tiny_acdc, tmp_path, prepare_cli):
    out = tmp_path / "out"
    code, _, stderr = prepare_cli(["acdc", "--src", tiny_acdc, "--out", out, "--targets", "4"])
    assert code == 2 and "--targets" in stderr and not out.exists()
    code, _, stderr = prepare_cli(["acdc", "--src", tiny_acdc, "--out", out, "--weak", "lasso"])
    assert code == 2 and "lasso" in stderr and not out.exists()
