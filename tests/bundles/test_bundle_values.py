"""Bundle values of the wrong type or range stop a training run with one line and exit code 2.

Each is what ``python -m monai.bundle run`` hands the config for a mistyped command line (fire
turns ``1.5`` into a float, ``[2.0,0.9]`` into a list, ``abc`` stays a string); before these
checks they trained the wrong number of epochs or ended in a 50-100 line traceback.
"""

from __future__ import annotations

import pytest

from wss_monai.engine import BundleInputError, check_training_values

BAD = [
    ("epochs", 1.5, "--epochs must be a whole number >= 1"),
    ("epochs", "abc", "--epochs must be a whole number >= 1"),
    ("epochs", 0, "--epochs must be a whole number >= 1"),
    ("batch_size", 0, "--batch_size must be a whole number >= 1"),
    ("seed", "abc", "--seed must be a whole number >= 0"),
    ("num_workers", -1, "--num_workers must be a whole number >= 0"),
    ("learning_rate", "abc", "--learning_rate must be a number > 0"),
    ("learning_rate", float("nan"), "--learning_rate must be a number > 0"),
    ("lr_factor", 1.5, "--lr_factor must be a number > 0 and < 1"),
    ("betas", [2.0, 0.9], "--betas must be two numbers in [0, 1)"),
    ("betas", "0.9", "--betas must be two numbers in [0, 1)"),
    ("nan_check_interval", 0, "--nan_check_interval must be a whole number >= 1"),
    ("epochs", True, "--epochs must be a whole number >= 1"),
    ("amp", "maybe", "--amp must be true or false"),
    ("hd95", 2, "--hd95 must be true or false"),
    ("progress", "sometimes", "--progress must be true or false"),
    ("augment", "heavy", "--augment must be true or false"),
]


@pytest.mark.parametrize(("key", "value", "message"), BAD, ids=[f"{k}={v!r}" for k, v, _ in BAD])
def test_a_wrong_value_is_one_line(key, value, message, capsys):
    with pytest.raises(BundleInputError) as caught:
        check_training_values(**{key: value})
    assert caught.value.code == 2 and message in caught.value.message
    assert capsys.readouterr().err.strip() == f"error: {caught.value.message}"


def test_good_values_and_an_output_dir_that_is_a_file(tmp_path):
    check_training_values(epochs=3, seed=0, batch_size=8, val_batch_size=32, val_interval=1, num_workers=0,
                          learning_rate=5e-4, betas=[0.9, 0.99], lr_factor=0.5, lr_patience=20, nan_check_interval=None,
                          output_dir=str(tmp_path / "new"), amp="false", deterministic=True, hd95="no", log_mlflow=1,
                          verify_slices="true", progress="auto", augment={"rotate": 10})
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(BundleInputError, match="is a file"):
        check_training_values(output_dir=str(afile))


def test_the_real_command_line_stops_before_training(prepared_acdc, cli, helpers, tmp_path, mlflow_db):
    """Through ``python -m monai.bundle run`` (fire hands the config the float 1.5): the check runs first."""
    args, message = ["--epochs", "1.5"], "--epochs must be a whole number"
    out = tmp_path / "out"
    done = cli(["run", "--config_file", helpers.config("wss_segmentation", "train.json"), "--dataset_dir", prepared_acdc,
                "--regime", "partial", "--tracking_uri", mlflow_db, "--output_dir", out, *args,
                "--logging_file", helpers.config("wss_segmentation", "logging.conf")])
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2 and len(errors) == 1 and message in errors[0], done.stderr[-1500:]
    assert "Traceback" not in done.stderr and not (out / "checkpoints").exists()
