"""A loss that turns NaN stops training with a message naming the epoch and iteration; the last good
checkpoint stays, nothing is saved from the diverged network, and the MLflow run ends FAILED."""

from __future__ import annotations

import pytest
import torch

from wss_monai.engine import NonFiniteLossError
from wss_monai.losses import PartialCrossEntropy


class NaNInSecondEpoch(torch.nn.Module):
    """0 except at the 3rd iteration of the 2nd epoch, where it is NaN."""

    def __init__(self) -> None:
        super().__init__()
        self.epoch, self.calls = 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.calls = epoch, 0

    def forward(self, probs, **batch):
        self.calls += 1
        bad = self.epoch == 1 and self.calls == 3
        return probs.sum() * (float("nan") if bad else 0.0)


@pytest.mark.slow
def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(prepared_acdc, mlflow_db, tmp_path,
                                                                    run_bundle, helpers):
    out = tmp_path / "out"
    with pytest.raises(Exception) as caught:
        run_bundle("wss_segmentation", dataset_dir=str(prepared_acdc), regime="partial", epochs=3, tracking_uri=mlflow_db,
                   run_name="nan-guard", output_dir=str(out),
                   loss_terms={"partial_ce": {"weight": 1.0, "term": PartialCrossEntropy},
                               "nan_in_second_epoch": {"weight": 1.0, "term": NaNInSecondEpoch}})
    error = caught.value
    while not isinstance(error, NonFiniteLossError) and error.__cause__ is not None:  # MONAI wraps it
        error = error.__cause__
    assert isinstance(error, NonFiniteLossError)
    message = str(error)
    assert "the loss is nan (not finite) at epoch 2, iteration 3 of 6" in message
    assert "nan_in_second_epoch=nan" in message and "checkpoint_epoch=1.pt" in message
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["checkpoint_epoch=1.pt"]
    kept = torch.load(out / "checkpoints" / "checkpoint_epoch=1.pt", weights_only=True)  # the last good state
    assert kept["trainer"]["iteration"] == 6 and kept["evaluator"]["best_metric_epoch"] == 1
    assert all(torch.isfinite(t).all() for t in kept["model"].values() if t.is_floating_point())
    info = helpers.run_info(out)
    assert info["status"] == "FAILED" and info["best_epoch"] == 1 and "epoch 2, iteration 3" in info["error"]
    run = helpers.mlflow_run(mlflow_db, info["run_id"])
    assert run.info.status == "FAILED" and "epoch 2" in run.data.tags["error"]
