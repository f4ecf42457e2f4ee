"""Your own annotations end to end: an annotator-like phantom with no full mask for any training
case, prepared with its scribbles, clicks, tags and typed mm2 bounds, trains through the bundle
with ``--weak user`` and is tracked in MLflow; regimes that need what nobody gave stop at the start.

The raw folder holds no full mask for the training patients (the phantom writes none for them),
so nothing in training can have read one.
"""

from __future__ import annotations

import contextlib
import io
import json
import math

import pytest

USER_OPTIONS = [
    "--weak-labels", "{folder}/{case}_scribble.nii.gz", "--weak-values", "0=background,1=1,2=2,3=3,4=none",
    "--markups", "{folder}/{case}.mrk.json", "--common-bounds-mm2", "150,6000", "100,3000", "80,4000",
]  # fmt: skip
CLASSES = ("right_ventricle", "myocardium", "left_ventricle")


@pytest.fixture(scope="module")
def prepared_without_masks(tmp_path_factory):
    from data_prep.cli import main
    from pipelines.testkit.phantoms import generate

    work = tmp_path_factory.mktemp("annotator")
    raw = generate("acdc", work / "raw", cases=4, small=True, annotator=2)
    assert not list(raw.glob("training/patient00[12]/*_gt.nii.gz"))
    out = work / "prepared"
    argv = ["acdc", "--src", str(raw), "--out", str(out), "--targets", "1,2,3", "--size", "32", *USER_OPTIONS,
            "--tags", str(raw / "tags.csv"), "--val-patients", "patient003", "--test-patients", "patient004"]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
        assert main(argv) == 0, err.getvalue()
    return out


def test_the_training_split_has_no_full_mask(prepared_without_masks):
    dataset = json.loads((prepared_without_masks / "dataset.json").read_text())
    assert dataset["training"] and all("label" not in e for e in dataset["training"])
    assert all("label" in e for e in dataset["validation"])
    assert dataset["provenance"]["weak"]["user"] == "user file"
    assert dataset["provenance"]["bounds"]["common"].startswith("typed")


@pytest.mark.slow
@pytest.mark.parametrize("regime", ["partial+gated_crf", "common"])
def test_weak_only_training_runs_and_scores_three_structures(regime, prepared_without_masks, mlflow_db, tmp_path,
                                                             run_bundle, helpers):
    out = tmp_path / "out"
    run_bundle("wss_segmentation", dataset_dir=str(prepared_without_masks), regime=regime, weak="user", epochs=1,
               tracking_uri=mlflow_db, run_name=f"user-{regime}", output_dir=str(out))
    info = helpers.run_info(out)
    assert info["status"] == "FINISHED" and info["regime"] == regime
    metrics = helpers.mlflow_run(mlflow_db, info["run_id"]).data.metrics
    for name in CLASSES:
        assert math.isfinite(metrics[f"val_dice_3d_{name}"])
    assert 0.0 <= metrics["val_dice_3d_mean"] <= 1.0


def test_full_needs_masks_and_stops_with_one_line(prepared_without_masks, cli, tmp_path, mlflow_db, helpers):
    """Through the real command line: exit 2, one line, nothing trained."""
    config = helpers.config
    done = cli(["run", "--config_file", config("wss_segmentation", "train.json"), "--dataset_dir", prepared_without_masks,
                "--regime", "full", "--epochs", "1", "--tracking_uri", mlflow_db, "--output_dir", tmp_path / "out",
                "--logging_file", config("wss_segmentation", "logging.conf")])
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "full masks ('label')" in errors[0] and "Traceback" not in done.stderr
    assert not (tmp_path / "out" / "models").exists()


@pytest.mark.parametrize(("regime", "weak", "missing"), [
    ("individual", "user", "size bounds 'individual'"),
    ("partial", "erosion", "weak labels 'erosion'"),
    ("hybrid_1", "user", "full"),
])  # fmt: skip
def test_a_regime_needing_what_nobody_gave_stops_at_the_start(regime, weak, missing, prepared_without_masks, tmp_path,
                                                             capsys):
    from wss_monai.engine import BundleInputError, TrainingSession

    with pytest.raises(BundleInputError) as caught:
        TrainingSession(str(prepared_without_masks), regime, weak=weak, log_mlflow=False, check_keys=False,
                        output_dir=str(tmp_path / "out"))
    assert caught.value.code == 2 and missing in caught.value.message
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: {caught.value.message}"
