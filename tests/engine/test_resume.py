"""Interrupted training: a bundle run SIGKILLed mid-epoch resumes with ``--resume true`` and ends exactly
where an uninterrupted run ends (CPU, determinism on), in the same MLflow run. Plus the parts:
the evaluator's best score in the checkpoint, per-epoch reseeding, resume errors, boolean keys
spelt as strings, misspelt command-line keys."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events

from wss_monai.engine.recording import is_timing_metric
from wss_monai.engine import (
    BundleInputError,
    EpochSetter,
    LastCheckpoint,
    ProgressBar,
    TrainingSession,
    VolumeScoresMetric,
    as_bool,
    latest_checkpoint,
)


def _history(out: Path) -> dict[int, dict[str, float]]:
    return {int(k): v for k, v in json.loads((out / "history.json").read_text()).items()}


def _mlflow_runs(uri: str, name: str):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("acdc-lv")
    runs = client.search_runs([experiment.experiment_id], filter_string=f"attributes.run_name = '{name}'")
    return client, runs


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_final_metrics(tiny_prepared, tmp_path, bundle_cli, bundle_in_process, engine_mlflow_db):
    db = engine_mlflow_db
    common = ["--dataset_dir", tiny_prepared, "--regime", "individual", "--epochs", "3", "--hd95", "false", "--progress", "false"]

    # the reference: three epochs without a break (in this process: same code, one torch thread)
    straight = tmp_path / "straight"
    bundle_in_process(dataset_dir=str(tiny_prepared), regime="individual", epochs=3, hd95="false", tracking_uri=db,
                      run_name="straight", output_dir=str(straight))

    # the same run, SIGKILLed once its epoch-1 checkpoint exists (epoch 2 under way)
    killed = tmp_path / "killed"
    process = bundle_cli([*common, "--tracking_uri", db, "--run_name", "killed", "--output_dir", killed])
    try:
        deadline = time.monotonic() + 120
        while not (killed / "checkpoints" / "checkpoint_epoch=1.pt").is_file():
            assert process.poll() is None, process.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "no epoch-1 checkpoint within 120 s"
            time.sleep(0.01)
        time.sleep(0.1)
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert latest_checkpoint(killed)[1] == 1 and sorted(_history(killed)) == [1]  # killed during epoch 2
    assert json.loads((killed / "run.json").read_text())["status"] == "RUNNING"

    # resume: the documented override, with the same output folder; name and store come from run.json
    resumed = bundle_cli(["--dataset_dir", tiny_prepared, "--regime", "individual", "--epochs", "3", "--hd95", "false",
                          "--output_dir", killed, "--resume", "true"])
    output, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, output[-4000:]
    assert "resuming from" in output and "checkpoint_epoch=1.pt" in output

    # same final metrics, every epoch, and the same best checkpoint
    want, got = _history(straight), _history(killed)
    assert sorted(got) == [1, 2, 3]
    for epoch in (1, 2, 3):
        assert set(got[epoch]) == set(want[epoch])
        for key, value in want[epoch].items():
            if is_timing_metric(key):
                continue  # wall-clock timing, not a result
            assert got[epoch][key] == pytest.approx(value, rel=1e-6, abs=1e-6, nan_ok=True), (epoch, key)
    info, reference = json.loads((killed / "run.json").read_text()), json.loads((straight / "run.json").read_text())
    assert info["status"] == "FINISHED" and info["best_epoch"] == reference["best_epoch"]
    assert info["best_metric"] == pytest.approx(reference["best_metric"], abs=1e-6)
    a = torch.load(straight / "models" / "model.pt", weights_only=True)
    b = torch.load(killed / "models" / "model.pt", weights_only=True)
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)

    # one MLflow run for that name, continued: all three epochs, FINISHED
    client, runs = _mlflow_runs(db, "killed")
    assert len(runs) == 1 and runs[0].info.run_id == info["run_id"]
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.tags["resumed_from_epoch"] == "1"
    for key in ("val_dice_3d_mean", "train_loss", "lr"):
        history = client.get_metric_history(run.info.run_id, key)
        assert [m.step for m in history] == [1, 2, 3], key
        assert [m.value for m in history] == pytest.approx([want[e][key] for e in (1, 2, 3)], rel=1e-6)
    assert run.data.params["regime"] == "individual"  # logged once, at the first start


def test_resume_needs_a_checkpoint(tiny_prepared, tmp_path, capsys):
    common = dict(bundle="wss_segmentation", epochs=3, log_mlflow=False, check_keys=False)
    with pytest.raises(BundleInputError) as caught:
        TrainingSession(str(tiny_prepared), "individual", output_dir=str(tmp_path / "none"), resume=True, **common)
    assert caught.value.code == 2 and "holds no checkpoint_epoch=<N>.pt to resume from" in caught.value.message
    assert capsys.readouterr().err.strip() == f"error: {caught.value.message}"
    with pytest.raises(BundleInputError, match="needs the run to continue"):
        TrainingSession(str(tiny_prepared), "individual", resume="true", **common)
    with pytest.raises(BundleInputError, match="name two folders"):
        TrainingSession(str(tiny_prepared), "individual", resume=str(tmp_path / "a"), output_dir=str(tmp_path / "b"), **common)
    with pytest.raises(BundleInputError, match="resume must be true or false"):
        TrainingSession(str(tiny_prepared), "individual", resume=2, output_dir=str(tmp_path), **common)

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    for epoch in (2, 10):
        (run / "checkpoints" / f"checkpoint_epoch={epoch}.pt").write_bytes(b"")
    (run / "run.json").write_text(json.dumps({"run_name": "mine", "run_id": "abc", "experiment": "exp",
                                              "tracking_uri": f"sqlite:///{tmp_path}/x.db"}))
    with pytest.raises(BundleInputError, match="at epoch 10, past --epochs 3"):
        TrainingSession(str(tiny_prepared), "individual", resume=str(run), **common)
    session = TrainingSession(str(tiny_prepared), "individual", resume=str(run), **dict(common, epochs=12))
    assert (session.run_name, session.experiment, session.resume_epoch, session.resume_run_id) == ("mine", "exp", 10, "abc")
    assert session.resume_checkpoint == str(run / "checkpoints" / "checkpoint_epoch=10.pt")
    assert session.tracking_uri == f"sqlite:///{tmp_path}/x.db" and session.output_dir == str(run)
    with pytest.raises(BundleInputError, match="holds run 'mine', not 'other'"):
        TrainingSession(str(tiny_prepared), "individual", resume=True, output_dir=str(run), run_name="other", **dict(common, epochs=12))
    fresh = TrainingSession(str(tiny_prepared), "individual", resume="false", output_dir=str(run), **common)
    assert fresh.resume_checkpoint is None


def test_checkpoint_keeps_the_best_score_so_a_worse_epoch_does_not_replace_the_best_model(tmp_path):
    from monai.handlers import CheckpointSaver

    def build(scores: list[float], resume_from=None):
        network = torch.nn.Linear(2, 1)
        evaluator = Engine(lambda e, b: None)
        evaluator.state.best_metric, evaluator.state.best_metric_epoch = -1, -1

        @evaluator.on(Events.EPOCH_COMPLETED)
        def score(engine):
            engine.state.metrics["dice"] = scores[trainer.state.epoch - 1]
            if engine.state.metrics["dice"] > engine.state.best_metric:
                engine.state.best_metric, engine.state.best_metric_epoch = engine.state.metrics["dice"], trainer.state.epoch

        CheckpointSaver(str(tmp_path / "models"), {"model": network}, save_key_metric=True, key_metric_name="dice",
                        key_metric_filename="model.pt", key_metric_n_saved=1).attach(evaluator)
        trainer = Engine(lambda e, b: network.weight.data.add_(1.0))  # the weights change every epoch
        trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: evaluator.run([0]))
        LastCheckpoint(str(tmp_path / "checkpoints"), {"model": network}, evaluator=evaluator, resume_from=resume_from).attach(trainer)
        return trainer, evaluator, network

    trainer, evaluator, _ = build([0.5, 0.9, 0.7])
    trainer.run([0], max_epochs=2)
    best_weights = torch.load(tmp_path / "models" / "model.pt", weights_only=True)["weight"].clone()
    path, epoch = latest_checkpoint(tmp_path)
    assert epoch == 2 and torch.load(path, weights_only=True)["evaluator"]["best_metric_epoch"] == 2

    # resumed: epoch 3 scores 0.7 < 0.9, so models/model.pt must stay epoch 2's network
    trainer, evaluator, network = build([0.5, 0.9, 0.7], resume_from=str(path))
    trainer.run([0], max_epochs=3)
    assert trainer.state.epoch == 3 and (evaluator.state.best_metric, evaluator.state.best_metric_epoch) == (0.9, 2)
    assert torch.equal(torch.load(tmp_path / "models" / "model.pt", weights_only=True)["weight"], best_weights)
    assert latest_checkpoint(tmp_path)[1] == 3


def test_epoch_setter_reseeds_so_an_epoch_draws_the_same_after_a_resume():
    def draws(start_epoch: int, epochs: int) -> dict[int, float]:
        engine = Engine(lambda e, b: None)
        EpochSetter(seed=5).attach(engine)
        seen = {}
        engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.__setitem__(e.state.epoch, torch.rand(()).item()))
        torch.manual_seed(123)  # whatever was drawn before does not matter
        torch.rand(7)
        engine.load_state_dict({"epoch": start_epoch, "max_epochs": epochs, "epoch_length": 1})
        engine.run([0], max_epochs=epochs)
        return seen

    full, resumed = draws(0, 3), draws(2, 3)
    assert resumed == {3: full[3]} and len(set(full.values())) == 3


def test_boolean_keys_spelt_as_strings(capsys):
    for text, value in (("false", False), ("False", False), ("no", False), ("0", False), (0, False), ("off", False),
                        ("true", True), ("YES", True), (1, True), ("on", True), (True, True)):
        assert as_bool(text, "amp") is value
    assert as_bool("Auto", "progress", keep=("auto",)) == "auto"
    assert as_bool({"rotate": 10}, "augment", mappings=True) == {"rotate": 10}
    for bad in ("maybe", 2, None, "", {"a": 1}):
        with pytest.raises(BundleInputError) as caught:
            as_bool(bad, "amp")
        assert caught.value.code == 2 and caught.value.message.startswith("amp must be true or false")
    assert ProgressBar("false").enabled is False and ProgressBar("auto").enabled == "auto"
    assert VolumeScoresMetric(2, hd95="false").hd95 is False
    with pytest.raises(BundleInputError, match="progress must be"):
        ProgressBar("sometimes")
    capsys.readouterr()


def test_misspelt_command_line_key_stops_the_run(tiny_prepared, tmp_path, bundle_in_process, capsys):
    with pytest.raises(BundleInputError) as caught:
        bundle_in_process(dataset_dir=str(tiny_prepared), regime="individual", epoch=3, log_mlflow="false",
                          output_dir=str(tmp_path / "out"))
    assert caught.value.code == 2
    assert "unknown key --epoch (did you mean --epochs?)" in caught.value.message
    assert not (tmp_path / "out").exists()
    capsys.readouterr()
    # nested overrides of known keys pass the check (this run then stops at the missing dataset)
    with pytest.raises(BundleInputError) as caught:
        bundle_in_process(regime="individual", log_mlflow=False, **{"optimizer#weight_decay": 0.0, "train#handlers#0#check_interval": 2})
    assert "dataset_dir is required" in caught.value.message
    capsys.readouterr()


def test_epoch_checkpoints_are_written_whole_or_not_at_all_and_resume_skips_a_stray_temporary(tmp_path, monkeypatch):
    network = torch.nn.Linear(2, 1)
    trainer = Engine(lambda e, b: network.weight.data.add_(1.0))
    LastCheckpoint(str(tmp_path / "checkpoints"), {"model": network}, n_saved=2).attach(trainer)
    trainer.run([0], max_epochs=1)
    first = tmp_path / "checkpoints" / "checkpoint_epoch=1.pt"
    assert latest_checkpoint(tmp_path) == (first, 1)
    good = first.read_bytes()

    # killed while writing epoch 2: the partial bytes stay in a hidden temporary, never under the final name
    real_save = torch.save

    def dies_half_way(obj, stream, **kwargs):
        real_save(obj, stream, **kwargs)
        stream.truncate(10)
        raise KeyboardInterrupt  # the process stops here

    monkeypatch.setattr(torch, "save", dies_half_way)
    trainer = Engine(lambda e, b: network.weight.data.add_(1.0))
    LastCheckpoint(str(tmp_path / "checkpoints"), {"model": network}, n_saved=2).attach(trainer)
    trainer.load_state_dict({"epoch": 1, "max_epochs": 2, "epoch_length": 1})
    with pytest.raises(KeyboardInterrupt):
        trainer.run([0], max_epochs=2)
    monkeypatch.undo()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["checkpoint_epoch=1.pt"]
    assert first.read_bytes() == good

    # a SIGKILL leaves the temporary behind: resume never picks it and removes it
    stray = tmp_path / "checkpoints" / ".checkpoint_epoch=2.pt.12345.tmp"
    stray.write_bytes(b"\x80\x02trunc")
    assert latest_checkpoint(tmp_path) == (first, 1)
    network = torch.nn.Linear(2, 1)
    trainer = Engine(lambda e, b: None)
    LastCheckpoint(str(tmp_path / "checkpoints"), {"model": network}, n_saved=2, resume_from=str(first)).attach(trainer)
    trainer.run([0], max_epochs=2)
    assert trainer.state.epoch == 2 and not stray.exists()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["checkpoint_epoch=1.pt", "checkpoint_epoch=2.pt"]
    assert torch.load(tmp_path / "checkpoints" / "checkpoint_epoch=2.pt", weights_only=True)["trainer"]["iteration"] == 2


def test_keeping_one_checkpoint_the_old_one_goes_only_once_the_new_one_is_written(tmp_path, monkeypatch):
    network = torch.nn.Linear(2, 1)
    trainer = Engine(lambda e, b: network.weight.data.add_(1.0))
    LastCheckpoint(str(tmp_path / "checkpoints"), {"model": network}, n_saved=1).attach(trainer)
    trainer.run([0], max_epochs=3)
    last = tmp_path / "checkpoints" / "checkpoint_epoch=3.pt"
    assert sorted(p.name for p in last.parent.iterdir()) == [last.name]  # older ones removed
    good = last.read_bytes()

    real_save = torch.save
    seen_while_saving = []

    def dies_while_writing(obj, stream, **kwargs):
        seen_while_saving.append(sorted(p.name for p in last.parent.glob("checkpoint_epoch=*.pt")))
        real_save(obj, stream, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_while_writing)
    with pytest.raises(KeyboardInterrupt):
        trainer.run([0], max_epochs=4)
    monkeypatch.undo()
    assert seen_while_saving == [[last.name]]  # still there while epoch 4 is written
    assert latest_checkpoint(tmp_path) == (last, 3) and last.read_bytes() == good


def test_the_best_model_file_stays_whole_while_a_better_one_is_written(tmp_path, monkeypatch):
    from wss_monai.engine import AtomicCheckpointSaver

    network = torch.nn.Linear(2, 1)

    def step(engine, batch):
        network.weight.data.add_(1.0)
        engine.state.metrics["dice"] = float(engine.state.epoch)  # better every epoch

    trainer = Engine(step)
    AtomicCheckpointSaver(str(tmp_path), {"model": network}, save_key_metric=True, key_metric_name="dice",
                          key_metric_filename="model.pt", key_metric_n_saved=1).attach(trainer)
    trainer.run([0], max_epochs=2)
    best = tmp_path / "model.pt"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
    good = best.read_bytes()

    real_save = torch.save
    seen_while_saving = []

    def dies_while_writing(obj, stream, **kwargs):
        seen_while_saving.append(best.is_file() and best.read_bytes() == good)
        real_save(obj, stream, **kwargs)
        stream.truncate(10)
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_while_writing)
    with pytest.raises(KeyboardInterrupt):
        trainer.run([0], max_epochs=3)
    monkeypatch.undo()
    assert seen_while_saving == [True] and best.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
