"""wss_monai.engine pieces on synthetic data: batches, the volume metric, the loss monitor, sessions,
plots, checkpoint loading, NIfTI writers of the inference."""

from __future__ import annotations

import json
import math

import nibabel as nib
import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events

from wss_monai.engine import (
    BundleInputError,
    EpochSetter,
    EvaluationSession,
    NonFiniteLossError,
    PrepareEvalBatch,
    PrepareWeakBatch,
    TrainingSession,
    TrainLossMonitor,
    VolumeScoresMetric,
    current_config,
    dataset_num_classes,
    load_network,
)
from wss_monai.engine import plots
from wss_monai.metrics import VolumeScores

# --------------------------------------------------------------------------------------------
# batches


def test_prepare_weak_batch_moves_only_the_loss_keys():
    from monai.data import MetaTensor

    batch = {"image": MetaTensor(torch.rand(2, 1, 8, 8)), "weak": torch.zeros(2, 8, 8, dtype=torch.int64),
             "bounds": torch.ones(2, 2, 2), "label": torch.zeros(2, 8, 8), "patient": ["a", "b"], "volume": torch.tensor([0, 1])}
    inputs, targets = PrepareWeakBatch(keys=("weak", "bounds", "volume", "full"))(batch, torch.device("cpu"))
    assert type(inputs) is torch.Tensor and targets["image"] is inputs  # MetaTensor metadata dropped, one tensor
    assert set(targets) == {"image", "weak", "bounds", "volume"}  # no label, no strings, missing keys skipped
    _, targets = PrepareEvalBatch()(dict(batch, slice=torch.tensor([3, 4]), volume_name=["v0", "v1"]), "cpu")
    assert set(targets) == {"label", "volume", "slice", "volume_name"}
    with pytest.raises(ValueError, match="image"):
        PrepareWeakBatch()({"weak": 1}, "cpu")


# --------------------------------------------------------------------------------------------
# the volume metric


def _volumes(seed=0):
    rng = np.random.default_rng(seed)
    label = np.zeros((2, 5, 12, 12), np.int64)
    label[:, 1:4, 3:9, 3:9] = 1
    pred = label.copy()
    pred[0, 2, 2:5, 2:5] = 1 - pred[0, 2, 2:5, 2:5]
    pred[1, 0, rng.integers(0, 12, 5), rng.integers(0, 12, 5)] = 1  # false positives on an empty slice
    return pred, label


def _feed(metric, pred, label, order, batch=3):
    slices = [(v, s) for v in range(2) for s in range(5)]
    slices = [slices[i] for i in order]
    for start in range(0, len(slices), batch):
        chunk = slices[start : start + batch]
        logits = torch.stack([torch.nn.functional.one_hot(torch.as_tensor(pred[v, s]), 2).permute(2, 0, 1).float() for v, s in chunk])
        targets = {"label": torch.stack([torch.as_tensor(label[v, s]) for v, s in chunk]),
                   "volume": torch.tensor([v for v, _ in chunk]), "slice": torch.tensor([s for _, s in chunk]),
                   "volume_name": [f"vol{v}" for v, _ in chunk], "spacing": torch.tensor([[1.5, 2.0]] * len(chunk))}
        metric.update({"pred": logits, "label": targets})


def test_volume_metric_matches_volume_scores_in_any_order():
    pred, label = _volumes()
    spacing = {"vol0": (1.5, 2.0, 8.0), "vol1": (1.5, 2.0, 10.0)}
    metric = VolumeScoresMetric(2, class_names={0: "background", 1: "left ventricle"}, spacing=spacing, prefix="val_")
    metric.reset()
    _feed(metric, pred, label, order=np.random.default_rng(1).permutation(10))
    result = metric.compute()
    reference = VolumeScores(2, class_names={0: "background", 1: "left ventricle"})
    for v in range(2):
        reference.update(pred[v], label[v], volume=[v] * 5, slice=range(5), spacing=[spacing[f"vol{v}"]] * 5)
    expected = {f"val_{k}": x for k, x in reference.aggregate().items()}
    assert result.keys() == expected.keys()
    for key in expected:
        assert result[key] == pytest.approx(expected[key], nan_ok=True), key
    assert "val_dice_2d_one_left_ventricle" in result and "val_hd95_mean" in result
    assert result["val_dice_2d_one_mean"] > result["val_dice_2d_nan_mean"] or math.isclose(
        result["val_dice_2d_one_mean"], result["val_dice_2d_nan_mean"])
    assert metric.last_volume_names == {0: "vol0", 1: "vol1"}


def test_volume_metric_as_key_metric_of_an_engine():
    pred, label = _volumes()
    metric = VolumeScoresMetric(2, prefix="test_")
    engine = Engine(lambda e, b: b)
    metric.attach(engine, "test_dice_3d_mean")
    batches = []
    for v in range(2):
        logits = torch.nn.functional.one_hot(torch.as_tensor(pred[v]), 2).permute(0, 3, 1, 2).float()
        batches.append({"pred": logits, "label": {"label": torch.as_tensor(label[v]), "volume": torch.full((5,), v),
                                                  "slice": torch.arange(5)}})
    state = engine.run(batches, max_epochs=1)
    assert state.metrics["test_dice_3d_mean"] == pytest.approx(state.metrics["test_dice_3d_c1"])
    assert 0 < state.metrics["test_dice_3d_mean"] < 1


def test_undefined_key_score_ranks_last():
    metric = VolumeScoresMetric(2)
    engine = Engine(lambda e, b: b)
    metric.attach(engine, "val_dice_3d_mean")
    empty = torch.zeros(3, 8, 8, dtype=torch.int64)
    logits = torch.zeros(3, 2, 8, 8)
    logits[:, 0] = 1  # predicts background everywhere, and there is no target: Dice 0/0
    state = engine.run([{"pred": logits, "label": {"label": empty, "volume": torch.zeros(3), "slice": torch.arange(3)}}], max_epochs=1)
    assert math.isnan(state.metrics["val_dice_3d_c1"]) and state.metrics["val_dice_3d_mean"] == -1.0


# --------------------------------------------------------------------------------------------
# loss monitor and epoch setter


class _Loss:
    """Stands for WeakSupervisionLoss: ``last_values`` of the last call."""

    def __init__(self):
        self.last_values = {}
        self.epochs = []

    def set_epoch(self, epoch):
        self.epochs.append(epoch)


def _trainer(values, loss, epoch_length):
    def step(engine, batch):
        value = values[engine.state.iteration - 1]
        loss.last_values = {"partial_ce": torch.tensor(value / 2), "size": torch.tensor(value * 2), "total": torch.tensor(value)}
        return {"loss": torch.tensor(value)}

    return Engine(step)


def test_monitor_epoch_means_and_terms(tmp_path):
    loss = _Loss()
    values = [1.0, 2.0, 3.0, 5.0]
    engine = _trainer(values, loss, 2)
    TrainLossMonitor(loss).attach(engine)
    EpochSetter(loss).attach(engine)
    seen = {}
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: seen.update({e.state.epoch: dict(e.state.metrics)}))
    engine.run([0, 1], max_epochs=2)
    assert seen[1] == {"train_loss": 1.5, "train_partial_ce": 0.75, "train_size": 3.0}
    assert seen[2] == {"train_loss": 4.0, "train_partial_ce": 2.0, "train_size": 8.0}
    assert loss.epochs == [0, 1]  # 0-based epoch for the terms' schedules


@pytest.mark.parametrize("interval,where", [(1, "iteration"), (None, "epoch end"), (0, "epoch end")])  # None: epoch end (no per-iteration read-back)
def test_monitor_stops_on_nan_with_epoch_and_iteration(tmp_path, interval, where):
    (tmp_path / "checkpoint_epoch=1.pt").write_bytes(b"x")
    loss = _Loss()
    values = [1.0, 1.0, 1.0, 1.0, float("inf"), 1.0]
    engine = _trainer(values, loss, 3)
    TrainLossMonitor(loss, check_interval=interval, checkpoint_dir=str(tmp_path)).attach(engine)
    stopped_at = {}
    engine.add_event_handler(Events.EXCEPTION_RAISED, lambda e, err: (stopped_at.update(it=e.state.iteration), (_ for _ in ()).throw(err)))
    with pytest.raises(NonFiniteLossError) as caught:
        engine.run([0, 1, 2], max_epochs=3)
    message = str(caught.value)
    assert "the loss is inf (not finite) at epoch 2, iteration 2 of 3 (global iteration 5)" in message
    assert "partial_ce=inf, size=inf" in message and "checkpoint_epoch=1.pt" in message
    assert stopped_at["it"] == (5 if where == "iteration" else 6)


def test_epoch_setter_drives_the_log_barrier():
    from wss_monai.regimes import get_regime

    loss = get_regime("logbarrier_individual").build_loss()
    engine = Engine(lambda e, b: None)
    EpochSetter(loss).attach(engine)
    ts = []
    engine.add_event_handler(Events.EPOCH_STARTED, lambda e: ts.append(loss["log_barrier"].t))
    engine.run([0], max_epochs=3)
    assert ts == pytest.approx([5.0, 5.5, 6.05])


# --------------------------------------------------------------------------------------------
# sessions


def _dataset(tmp_path, **extra):
    root = tmp_path / "data"
    root.mkdir()
    entry = {"image": "slices/a.nii", "patient": "p1", "volume": "p1_v", "slice": 0, "weak": {"erosion": "w.nii.gz"},
             "bounds": {"tags": [[0, 0]], "individual": [[1, 2]]}}
    manifest = {"name": "Toy LV", "labels": {"0": "background", "1": "lv"}, "weak_strategies": ["erosion"],
                "weak_primary": "erosion", "bound_rules": ["tags", "individual"],
                "training": [entry, dict(entry, patient="p2", volume="p2_v")], "validation": [dict(entry, patient="p3")], "test": []}
    manifest.update(extra)
    (root / "dataset.json").write_text(json.dumps(manifest))
    return root


def _fails(capsys, fn, *args, **kwargs) -> str:
    with pytest.raises(BundleInputError) as caught:
        fn(*args, **kwargs)
    assert caught.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: {caught.value.message}"  # the last line
    return caught.value.message


def test_training_session_resolves_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = _dataset(tmp_path)
    session = TrainingSession(str(data), "individual+entropy", bundle="wss_segmentation", seed=3, epochs=2, log_mlflow=False,
                              config={"regime": "@r", "epochs": 2, "optimizer": {"lr": "@learning_rate"}, "learning_rate": 1e-3,
                                      "_meta_": {"version": "0.1.0"}})
    assert session.experiment == "toy-lv" and session.spec.weak == "erosion" and session.num_classes == 2
    assert session.run_name.startswith("individual+entropy-s3-")
    assert session.output_dir == str(tmp_path / "runs" / "toy-lv" / session.run_name)
    assert session.tracking_uri == f"sqlite:///{tmp_path}/mlruns.db"
    config = session.full_config()
    assert config["optimizer"] == {"lr": 1e-3} and "_meta_" not in config and config["resolved"]["seed"] == 3
    assert config["resolved"]["spec"]["terms"][-1]["name"] == "entropy"
    params = session.params()
    assert params["regime"] == "individual+entropy" and params["seed"] == 3 and params["loss_terms"].endswith("entropy=0.1")
    named = TrainingSession(str(data), "tags", run_name="mine", experiment_name="exp", output_dir="o", log_mlflow=False)
    assert (named.run_name, named.experiment, named.output_dir) == ("mine", "exp", str(tmp_path / "o"))


def test_training_session_input_errors(tmp_path, capsys):
    data = _dataset(tmp_path)
    assert "dataset_dir is required" in _fails(capsys, TrainingSession, None, "tags", log_mlflow=False)
    assert "no dataset.json" in _fails(capsys, TrainingSession, str(tmp_path), "tags", log_mlflow=False)
    assert "regime is required" in _fails(capsys, TrainingSession, str(data), None, log_mlflow=False)
    assert "size bounds 'common'" in _fails(capsys, TrainingSession, str(data), "common", log_mlflow=False)
    assert "weak labels 'box'" in _fails(capsys, TrainingSession, str(data), "tags", weak="box", log_mlflow=False)
    assert "needs 3 fully annotated" in _fails(capsys, TrainingSession, str(data), "full_3", log_mlflow=False)
    assert "run_name_exists" in _fails(capsys, TrainingSession, str(data), "tags", run_name_exists="x", log_mlflow=False)
    assert "loss_terms" in _fails(capsys, TrainingSession, str(data), "tags", loss_terms=[{"name": "nope"}], log_mlflow=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "dataset.json").write_text(json.dumps({"labels": {"0": "b", "1": "x"}, "weak_strategies": ["erosion"],
                                                    "training": [{"patient": "p"}], "validation": []}))
    assert "validation split is empty" in _fails(capsys, TrainingSession, str(empty), "partial", log_mlflow=False)


def test_evaluation_session(tmp_path, capsys):
    data = _dataset(tmp_path)
    run = tmp_path / "run"
    (run / "models").mkdir(parents=True)
    (run / "models" / "model.pt").write_bytes(b"x")
    (run / "run.json").write_text(json.dumps({"run_id": "abc", "tracking_uri": "sqlite:///x.db"}))
    with pytest.warns(UserWarning, match="test split is empty"):
        session = EvaluationSession(str(data), output_dir=str(run))
    assert (session.split, session.prefix, session.key_metric) == ("validation", "val_", "val_dice_3d_mean")
    assert session.ckpt_path == str(run / "models" / "model.pt") and session.run_info["run_id"] == "abc"
    assert session.results_dir == str(run / "evaluate")
    assert EvaluationSession(str(data), output_dir=str(run), split="all", workflow="inference").prefix == "all_"
    assert "split must be one of" in _fails(capsys, EvaluationSession, str(data), output_dir=str(run), split="all")
    assert "no such checkpoint" in _fails(capsys, EvaluationSession, str(data), output_dir=str(tmp_path), split="validation")


def test_config_helpers(tmp_path):
    assert current_config() is None  # outside a bundle run
    assert dataset_num_classes(None) == 2 and dataset_num_classes(str(tmp_path)) == 2
    data = _dataset(tmp_path, labels={"0": "bg", "1": "rv", "2": "myo", "3": "lv"})
    assert dataset_num_classes(str(data)) == 4


# --------------------------------------------------------------------------------------------
# checkpoints, plots, NIfTI writers


def test_load_network_state_dicts_and_errors(tmp_path, capsys):
    from wss_monai.networks import ENet, ResUNet

    net = ENet(1, 2)
    plain, resume, ddp = tmp_path / "plain.pt", tmp_path / "resume.pt", tmp_path / "ddp.pt"
    torch.save(net.state_dict(), plain)
    torch.save({"model": net.state_dict(), "optimizer": {}}, resume)
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, ddp)
    for path in (plain, resume, ddp):
        loaded = load_network(ENet(1, 2), path)
        assert not loaded.training
        assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), net.state_dict().values()))
    message = _fails(capsys, load_network, ResUNet(1, 2), plain)
    assert "do not fit network_def (ResUNet)" in message


def test_plots_write_pngs(tmp_path):
    history = {1: {"train_loss": 2.0, "train_size": 100.0, "val_dice_3d_mean": 0.2, "val_dice_2d_nan_mean": float("nan")},
               2: {"train_loss": 1.0, "train_size": 10.0, "val_dice_3d_mean": 0.5}}
    path = plots.plot_dice_curves(history, tmp_path / "c.png", title="run")
    assert open(path, "rb").read(4) == b"\x89PNG"
    batch = {"image": torch.rand(4, 1, 16, 16), "label": torch.zeros(4, 16, 16, dtype=torch.int64),
             "slice": torch.arange(4), "volume_name": ["a", "a", "b", "c"]}
    batch["label"][1, 4:9, 4:9] = 1
    batch["label"][3, 2:5, 2:5] = 1
    samples = plots.select_overlay_samples([batch], count=3)
    assert [s["name"] for s in samples] == ["a slice 1", "c slice 3", "a slice 0"]
    path = plots.plot_overlays(samples, [s["label"] for s in samples], tmp_path / "o.png", title="t")
    assert open(path, "rb").read(4) == b"\x89PNG"


@pytest.mark.parametrize(("key", "name"), [("run_name", "../../escape"), ("run_name", "/abs/run"), ("run_name", ".."),
                                           ("experiment_name", "../up"), ("experiment_name", "a\\b")])
def test_run_and_experiment_names_stay_under_runs(key, name, tmp_path, capsys, monkeypatch):
    """Without --output_dir a run goes to runs/<experiment>/<run name>: a name that would leave it is refused."""
    monkeypatch.chdir(tmp_path)
    data = _dataset(tmp_path)
    message = _fails(capsys, TrainingSession, str(data), "tags", log_mlflow=False, **{key: name})
    assert f"--{key}" in message and "runs/" in message
    assert not (tmp_path / "runs").exists() and not (tmp_path.parent / "escape").exists()
