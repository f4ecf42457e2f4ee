"""Recording a training: its MLflow run, the files of its output folder, and its plots (:class:`MLflowTracker`)."""

from __future__ import annotations

import copy
import logging
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

from wss_monai.engine.distributed import current_rank, unwrap
from wss_monai.engine.errors import as_bool, end_for_user, shorten_engine_errors, user_data_error
from wss_monai.engine.handler_tools import add_first, as_float
from wss_monai.engine.weights import checkpoint_weights
from wss_monai.tracking.record import RunRecord

logger = logging.getLogger("wss_monai.engine")


class MLflowTracker:
    """The MLflow run of a training: params, per-epoch metrics, artifacts and final status.

    - Trainer started: the run is created (:meth:`wss_monai.tracking.ResilientRun.start`) with the
      session's experiment and run name; params are the ~20 values runs are compared on
      (:meth:`~wss_monai.engine.training_session.TrainingSession.params` plus ``network`` and
      ``network_parameters``), the whole config is the artifact ``config.json``; tags
      ``regime``, ``seed``, ``bundle``, ``dataset``, ``dataset_fingerprint``, ``output_dir``; the
      prepared dataset is the run's dataset input (context ``training``, digest = its
      fingerprint); ``run.json`` is written to the output folder.
    - Each epoch: ``train_loss``, ``train_<term>``, ``lr``, the timing (``time_per_epoch_s``: the
      whole epoch, validation included; ``time_train_s`` and ``time_train_images``: the training
      iterations alone and the images they saw; ``ms_per_image`` and ``images_per_s`` from those;
      ``time_val_s`` and ``time_val_share``: the validation and its share of the epoch)
      and, when validation ran that epoch, every ``val_*`` score
      (``val_dice_2d_{one,nan}_<class|mean>``, ``val_dice_3d_<class|mean>``,
      ``val_hd95_<class|mean>``) plus ``best_val_dice_3d_mean``; step = epoch.
    - Training completed: the PNGs ``plots/dice_curves.png`` and ``plots/overlay.png`` (sample
      validation predictions of the best checkpoint), the best checkpoint ``models/model.pt`` as
      an artifact and, with ``log_model``, the best network as the MLflow model ``model``
      (:meth:`wss_monai.tracking.TrackedRun.log_model`: ``pt2``, signature and input example of
      one slice, ``preprocessing.json`` inside; registered under ``session.register_model`` when
      set); status FINISHED. On an exception: the curves, status FAILED (KILLED for Ctrl+C), and
      the exception goes on.
    - Every epoch also rewrites ``history.json`` (the metrics of each epoch, for the curves) and
      ``run.json`` (run id, last epoch, best score) in the output folder.
    - Resumed (``session.resume_checkpoint``): the same MLflow run is reopened (status RUNNING
      again, tag ``resumed_from_epoch``), no params are logged again, and the history of the
      epochs up to the checkpoint is read back from ``history.json``.
    - A tracking store that does not answer, at the start or mid-run, never stops training: the
      run is a :class:`~wss_monai.tracking.ResilientRun`, which keeps what the store could not take
      in ``mlflow_fallback.jsonl`` in the output folder and warns with the command that sends it
      later (``python -m wss_monai.tracking sync --from <output_dir>``).

    Only rank 0 tracks. With ``session.log_mlflow`` False the files are still written.

    Args:
        session: the run's :class:`~wss_monai.engine.training_session.TrainingSession`.
        evaluator: the validation evaluator (its metrics are logged with the trainer's epoch).
        optimizer: logs the learning rate ``lr``.
        network: the trained network (overlay of the best checkpoint's predictions).
        overlay_loader: the validation loader the overlay samples come from.
        device: where the overlay predictions run.
        overlay_count: number of slices in the overlay figure.
        log_checkpoint: log the best checkpoint as an artifact.
        log_model: log the best network as an MLflow model (a few seconds on a CPU: the export
            traces the network once). Offline runs skip it with a note in their journal.
    """

    def __init__(
        self,
        session: Any,
        evaluator: Engine | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        network: torch.nn.Module | None = None,
        overlay_loader: Any = None,
        device: Any = None,
        overlay_count: int = 6,
        log_checkpoint: bool = True,
        log_model: bool = True,
    ) -> None:
        self.session = session
        self.evaluator = evaluator
        self.optimizer = optimizer
        self.network = network
        self.overlay_loader = overlay_loader
        self.device = device
        self.overlay_count = int(overlay_count)
        self.log_checkpoint = as_bool(log_checkpoint, "log_checkpoint")
        self.log_model = as_bool(log_model, "log_model")
        self.run = None
        self.model_uri: str | None = None
        self._epoch_t0 = self._last_iteration = 0.0
        self._images = 0
        self._val_t0 = self._val_s = 0.0
        self.history: dict[int, dict[str, float]] = {}
        self._finished = False

    # lifecycle -------------------------------------------------------------------------------

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)
        engine.add_event_handler(Events.COMPLETED, self._completed)
        add_first(engine, Events.EXCEPTION_RAISED, self._exception_raised)
        shorten_engine_errors(engine)
        if self.evaluator is not None:
            shorten_engine_errors(self.evaluator)
            self.evaluator.add_event_handler(Events.STARTED, self._validation_started)
            self.evaluator.add_event_handler(Events.COMPLETED, self._validation_completed)

    @property
    def output_dir(self) -> Path:
        return Path(self.session.output_dir)

    @property
    def record(self) -> RunRecord:
        """The files of the run's output folder (``run.json``, ``history.json``, the best checkpoint...)."""
        return RunRecord(self.output_dir)

    def _info(self, **extra: Any) -> dict[str, Any]:
        s = self.session
        info = {
            "run_name": s.run_name,
            "run_id": getattr(self.run, "run_id", None),
            "experiment": s.experiment,
            "experiment_id": getattr(self.run, "experiment_id", None),
            "tracking_uri": s.tracking_uri if s.log_mlflow else None,
            "regime": s.spec.name,
            "bundle": s.bundle,
            "seed": s.seed,
            "dataset": s.dataset_name,
            "dataset_dir": s.dataset_dir,
            "output_dir": s.output_dir,
            "checkpoint": str(self.record.best_checkpoint),
        }
        if self.run is not None and getattr(self.run, "offline", False):
            info["tracking_fallback"] = str(self.run.journal.path)
        info.update(extra)
        return info

    def _started(self, engine: Engine) -> None:
        if current_rank() != 0 or self.run is not None:
            return
        s = self.session
        resuming = bool(getattr(s, "resume_checkpoint", None))
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if resuming:
            self.history = self._read_history(upto=int(s.resume_epoch))
        else:
            self.record.write_config(s.full_config())
        if s.log_mlflow:
            from wss_monai import tracking

            tags = {"bundle": s.bundle or "", "dataset": s.dataset_name, "dataset_fingerprint": s.dataset_fingerprint,
                    "output_dir": s.output_dir}
            self.run = tracking.ResilientRun.start(
                s.experiment,
                s.spec.name,
                s.seed,
                tracking_uri=s.tracking_uri,
                run_name=s.run_name,
                config=None if resuming else s.full_config(),
                params=None if resuming else self._params(),
                tags=tags,
                fallback=self.record.fallback_journal,
                resume=resuming,
                resume_run_id=getattr(s, "resume_run_id", None),
            )
            if resuming:
                self.run.set_tags({"resumed_from_epoch": s.resume_epoch})
            else:
                self.run.log_dataset(s.dataset_name, s.dataset_fingerprint, s.dataset_dir, context="training")
        extra = {"last_epoch": int(s.resume_epoch), **self._best()} if resuming else {}
        self.record.write_info(self._info(status="RUNNING", **extra))

    def _params(self) -> dict[str, Any]:
        """The session's params plus the network's class and its number of weights (the session does not hold the network)."""
        params = dict(self.session.params())
        if self.network is not None:
            net = unwrap(self.network)
            params["network"] = type(net).__name__
            params["network_parameters"] = sum(p.numel() for p in net.parameters())
        return params

    def _epoch_started(self, engine: Engine) -> None:
        self._epoch_t0 = self._last_iteration = time.perf_counter()
        self._images = 0
        self._val_s = 0.0

    def _validation_started(self, evaluator: Engine) -> None:
        self._val_t0 = time.perf_counter()

    def _validation_completed(self, evaluator: Engine) -> None:
        self._val_s += time.perf_counter() - self._val_t0

    def _iteration_completed(self, engine: Engine) -> None:
        """Note when the epoch's last iteration ended and how many images it has seen (no device synchronisation)."""
        self._last_iteration = time.perf_counter()
        batch = engine.state.batch
        image = batch.get("image") if isinstance(batch, Mapping) else None
        self._images += int(image.shape[0]) if hasattr(image, "shape") and len(image.shape) else 0

    def _timing(self) -> dict[str, float]:
        """This epoch's time metrics: what every run logs, so runs compare on speed as they do on Dice.

        ``time_train_s`` runs from the epoch's start to its last iteration (loading, forward,
        loss, backward, step); ``time_per_epoch_s`` to now, the validation that ran at this
        epoch's end included (this handler comes after the validation handler); ``time_val_s``
        is that validation (the evaluator's run: inference and scores), ``time_val_share`` its
        share of the epoch, what a longer ``val_interval`` would save. The iterations
        are not synchronised with the device: on a GPU the last one may still be running, an error
        of one iteration per epoch. Under ``torch.distributed`` the images are rank 0's.
        """
        train_s = self._last_iteration - self._epoch_t0
        epoch_s = time.perf_counter() - self._epoch_t0
        out = {"time_per_epoch_s": epoch_s, "time_train_s": train_s, "time_train_images": float(self._images),
               "time_val_s": self._val_s, "time_val_share": self._val_s / epoch_s if epoch_s > 0 else 0.0}
        if self._images > 0 and train_s > 0:
            out["ms_per_image"] = 1000.0 * train_s / self._images
            out["images_per_s"] = self._images / train_s
        return out

    def _read_history(self, upto: int) -> dict[int, dict[str, float]]:
        """The per-epoch metrics of ``history.json``, epochs 1..``upto`` (those the checkpoint covers)."""
        try:
            return self.record.read_history(upto)
        except (OSError, ValueError, TypeError, AttributeError):
            logger.warning(f"no readable {self.record.history_path.name} in {self.output_dir}: the curves start at the resumed epoch")
            return {}

    def _epoch_completed(self, engine: Engine) -> None:
        if current_rank() != 0:
            return
        epoch = engine.state.epoch
        metrics: dict[str, float] = {}
        for key, value in engine.state.metrics.items():
            if key.startswith("train_") and as_float(value) is not None:
                metrics[key] = as_float(value)
        if self.optimizer is not None:
            metrics["lr"] = float(self.optimizer.param_groups[0]["lr"])
        metrics.update(self._timing())
        ev = self.evaluator
        if ev is not None and getattr(ev.state, "epoch", None) == epoch:
            for key, value in ev.state.metrics.items():
                if key.startswith("val_") and as_float(value) is not None:
                    metrics[key] = as_float(value)
            best = as_float(getattr(ev.state, "best_metric", None))
            if best is not None and getattr(ev.state, "best_metric_epoch", -1) > 0:
                metrics["best_val_dice_3d_mean"] = best
        self.history[epoch] = metrics
        self.record.write_history(self.history)
        if self.run is not None:
            self.run.log_metrics(metrics, epoch=epoch)
        self.record.write_info(self._info(status="RUNNING", last_epoch=epoch, **self._best()))

    def _plots(self, with_overlay: bool) -> list[Path]:
        from wss_monai.engine import plots

        written = []
        folder = self.output_dir / "plots"
        if self.history:
            try:
                written.append(Path(plots.plot_dice_curves(self.history, folder / "dice_curves.png", title=self.session.run_name)))
            except Exception as err:  # a plot must never break training
                logger.warning(f"could not draw the Dice curves: {err}")
        if with_overlay and self.network is not None and self.overlay_loader is not None:
            try:
                written.append(Path(self._overlay(folder / "overlay.png")))
            except Exception as err:
                logger.warning(f"could not draw the prediction overlay: {err}")
        return written

    @torch.no_grad()
    def _overlay(self, path: Path) -> str:
        from wss_monai.engine import plots

        net = copy.deepcopy(unwrap(self.network))
        ckpt = self.record.best_checkpoint
        title = f"{self.session.run_name}: last epoch"
        if ckpt.is_file():
            net.load_state_dict(checkpoint_weights(torch.load(ckpt, map_location="cpu", weights_only=True)))
            title = f"{self.session.run_name}: best checkpoint"
        device = self.device or next(net.parameters()).device
        net.to(device).eval()
        batches, seen = [], 0
        for batch in self.overlay_loader:
            batches.append(batch)
            seen += int(batch["image"].shape[0])
            if seen >= max(64, 4 * self.overlay_count):
                break
        samples = plots.select_overlay_samples(batches, self.overlay_count)
        images = torch.stack([torch.as_tensor(s["image"]) for s in samples])[:, None].float().to(device)
        preds = net(images).argmax(1).cpu().numpy()
        return plots.plot_overlays(samples, list(preds), path, title=title, num_classes=self.session.num_classes)

    def _log_files(self, paths: Sequence[Path]) -> None:
        if self.run is None:
            return
        for path in paths:
            try:
                self.run.log_artifacts(path, artifact_path="plots")
            except Exception as err:
                logger.warning(f"could not log {path} to MLflow: {err}")
        if self.log_checkpoint and self.record.best_checkpoint.is_file():
            try:
                self.run.log_artifacts(self.record.best_checkpoint, artifact_path="models")
            except Exception as err:
                logger.warning(f"could not log the checkpoint to MLflow: {err}")

    def _model_example(self, net: torch.nn.Module) -> Any:
        """One validation slice as the model's input example, ``(1, 1, H, W)`` float32; zeros of the dataset's size without a loader."""
        import numpy as np

        if self.overlay_loader is not None:
            try:
                image = torch.as_tensor(next(iter(self.overlay_loader))["image"])
                return image.reshape(-1, *image.shape[-2:])[:1, None].float().cpu().numpy()
            except Exception:  # an example is only an example: fall back to zeros of the right size
                pass
        size = tuple(self.session.image_size or (64, 64))
        return np.zeros((1, getattr(net, "in_channels", 1), *size), dtype=np.float32)

    def _log_model(self) -> None:
        """Log the best checkpoint's network as the run's MLflow model (class docstring); never fails the run.

        Nothing without a best checkpoint. The network is a copy on the CPU (a model that loads
        anywhere), with the model card ``preprocessing.json`` inside. The seconds it took are the
        metric ``time_log_model_s``.
        """
        ckpt = self.record.best_checkpoint
        if self.run is None or not self.log_model or self.network is None or not ckpt.is_file():
            return
        start = time.perf_counter()
        try:
            net = copy.deepcopy(unwrap(self.network)).cpu()
            net.load_state_dict(checkpoint_weights(torch.load(ckpt, map_location="cpu", weights_only=True)))
            card = self.record.model_card_path
            self.model_uri = self.run.log_model(
                net.eval(), self._model_example(net), name="model", extra_files=[card] if card.is_file() else [],
                registered_model_name=getattr(self.session, "register_model", None),
                fallback_note=f"the best checkpoint is {ckpt}",
            )
        except Exception as err:  # the checkpoint is there: a model that cannot be logged is a warning
            logger.warning(f"could not log the best network as an MLflow model: {err}")
            return
        if self.model_uri is not None:
            seconds = time.perf_counter() - start
            logger.info(f"best network logged as MLflow model {self.model_uri} ({seconds:.1f} s)")
            self.run.log_metrics({"time_log_model_s": seconds}, epoch=int(self._best().get("best_epoch") or 0))

    def _best(self) -> dict[str, Any]:
        ev = self.evaluator
        best = as_float(getattr(getattr(ev, "state", None), "best_metric", None)) if ev is not None else None
        epoch = getattr(getattr(ev, "state", None), "best_metric_epoch", -1) if ev is not None else -1
        return {"best_metric": best, "best_epoch": epoch} if best is not None and epoch > 0 else {}

    def _completed(self, engine: Engine) -> None:
        if current_rank() != 0 or self._finished:
            return
        self._finished = True
        written = self._plots(with_overlay=True)
        self._log_files(written)
        self._log_model()
        best = self._best()
        if self.run is not None:
            if best:
                self.run.set_tags({"best_val_dice_3d_mean": f"{best['best_metric']:.6f}", "best_epoch": best["best_epoch"]})
            self.run.finish("FINISHED")
        self.record.write_info(self._info(status="FINISHED", last_epoch=engine.state.epoch, **best))
        self._remind_sync()

    def _remind_sync(self) -> None:
        if self.run is not None and getattr(self.run, "offline", False):
            from wss_monai import tracking

            logger.warning(
                f"the MLflow store {self.session.tracking_uri} was unreachable ({self.run.offline_reason}): this run's "
                f"tracking is kept in {self.run.journal.path}; when the store answers, send it with: "
                f"{tracking.sync_command(self.run.journal.path)}"
            )

    def _exception_raised(self, engine: Engine, error: BaseException) -> None:
        """Record the run as FAILED (KILLED for Ctrl+C), then end it the way the error deserves.

        Ctrl+C: one line and exit 130. An error the user's data caused
        (:func:`~wss_monai.engine.errors.user_data_error` gives the rule: a slice file that
        became unreadable, a file of the wrong shape, NaN in a slice): its one-line cause and
        exit 2. Anything else is a bug of ours and goes on with its traceback.
        """
        user_message = None if isinstance(error, KeyboardInterrupt) else user_data_error(error)
        if current_rank() == 0 and not self._finished:
            self._finished = True
            status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
            recorded = user_message if user_message is not None else str(error)
            try:
                self._log_files(self._plots(with_overlay=False))
                if self.run is not None:
                    self.run.set_tags({"error": recorded[:5000]})
                    self.run.finish(status)
                self.record.write_info(self._info(status=status, error=recorded, **self._best()))
                self._remind_sync()
            except Exception as err:  # never hide the original error
                logger.warning(f"could not record the failed run in MLflow: {err}")
            if isinstance(error, KeyboardInterrupt):  # Ctrl+C: a user's choice, not a crash to trace
                print(f"interrupted at epoch {engine.state.epoch}: run {self.session.run_name!r} is marked KILLED; "
                      f"continue it with the same command and --resume true (output in {self.output_dir})",
                      file=sys.stderr, flush=True)
                raise SystemExit(130) from None
        end_for_user(error, user_message)


def is_timing_metric(name: str) -> bool:
    """True for the metrics that measure wall time (``time_*``, ``ms_per_image``, ``images_per_s``).

    They differ between two runs of the same training, so comparisons of results (a resumed run
    against an uninterrupted one) leave them out.
    """
    return name.startswith("time_") or name in ("ms_per_image", "images_per_s")
