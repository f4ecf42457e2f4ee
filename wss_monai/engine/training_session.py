"""What a training run knows before it builds anything: the checked inputs and the resolved names.

:class:`TrainingSession` turns the top-level keys of ``train.json`` (``dataset_dir``, ``regime``,
``tracking_uri``, ``experiment_name``, ``run_name``, ``output_dir``...) into checked values: the
prepared dataset exists and offers the regime's weak labels and bounds, the regime is one this
bundle runs, the run name is free in the MLflow experiment, the output folder is decided. Bad input
stops here, with one line and exit code 2 (:func:`~wss_monai.engine.errors.fail`), before any
network, loader or MLflow run is made.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from wss_monai.engine.bundle_run import check_override_keys, substitute_top_level
from wss_monai.engine.dataset import open_dataset
from wss_monai.engine.distributed import broadcast_from_rank0, rank_and_world
from wss_monai.engine.errors import as_bool, fail
from wss_monai.engine.folder_lock import lock_output_dir
from wss_monai.tracking.record import RunRecord, read_run_info

logger = logging.getLogger("wss_monai.engine")

MODEL_CARD_FORMAT = 1

RUN_NAME_POLICIES = ("fail", "suffix")


class TrainingSession:
    """Checked inputs and resolved names of one training run (the ``session`` of ``train.json``).

    Args:
        dataset: the prepared dataset (:class:`~wss_monai.data.PreparedDataset`, or its folder).
        regime: regime name (:mod:`wss_monai.regimes`), read against ``regimes``/``regularizers``.
        regimes, regularizers: the bundle's resolved tables (None: the repository bundle's).
        bundle: the bundle's name (logged).
        seed: seed of the run (logged, and the hybrid regimes' choice of full patients).
        epochs: number of epochs (checked >= 1).
        weak: weak-label strategy; None = the dataset's primary one (``weak_primary``).
        loss_terms: terms replacing the regime's own (name -> ``{"weight", "term"}``, as in the table).
        tracking_uri: MLflow store or server; None = SQLite ``mlruns.db`` in the working folder.
        experiment_name: None = the dataset's name (``dataset.json`` ``"name"``, e.g. ``acdc-lv``).
        run_name: None = ``<regime>-s<seed>-<time>-<hex>`` (unique). A given name must not exist
            in the experiment yet: ``run_name_exists="fail"`` (default) stops with exit code 2,
            ``"suffix"`` appends ``-2``, ``-3``... until it is free.
        output_dir: where checkpoints, plots and ``run.json`` go; None = ``runs/<experiment>/<run name>``
            under the working folder.
        config: the bundle's merged config (``current_config()``), kept whole as the artifact
            ``config.json`` (:meth:`full_config`); params are :meth:`params`.
        hyperparams: the config values runs are compared on besides the session's own facts
            (``learning_rate``, ``batch_size``...: plain values, logged as params as they are).
        register_model: a name under which the run's best network is registered in MLflow's model
            registry (a new version per run); None (default) logs the model without registering.
        log_mlflow: False skips MLflow entirely (benchmarks); the names are still resolved.
        resume: continue a killed or stopped run from its last checkpoint: True (the run in
            ``output_dir``, or in ``runs/<experiment>/<run_name>``) or the run's output folder.
            The newest ``checkpoints/checkpoint_epoch=<N>.pt`` is loaded (network, optimizer,
            scheduler, trainer epoch, best score so far) and training goes on from epoch N+1 up
            to ``epochs``, logging to the same MLflow run (``run.json``); the run name, the
            experiment and the tracking URI default to that run's. No checkpoint: exit code 2.
        check_keys: stop on a command-line key the bundle's config files do not have
            (:func:`check_override_keys`), e.g. ``--epoch`` for ``--epochs``.

    Attributes (resolved): ``spec`` (:class:`~wss_monai.regimes.RegimeSpec`), ``num_classes``,
    ``class_names``, ``image_size``, ``volume_spacing`` (volume name -> (row, col, slice) mm),
    ``experiment``, ``tracking_uri``, ``run_name``, ``output_dir`` (str), ``full_patient_names``;
    when resuming, ``resume_checkpoint`` (path), ``resume_epoch`` (N), ``resume_run_id`` and
    ``resume_info`` (the ``run.json`` read), else ``resume_checkpoint`` is None.
    """

    def __init__(
        self,
        dataset: Any,
        regime: str | None,
        regimes: Mapping[str, Any] | None = None,
        regularizers: Mapping[str, Any] | None = None,
        *,
        bundle: str | None = None,
        seed: int = 0,
        epochs: int | None = None,
        weak: str | None = None,
        loss_terms: Mapping[str, Any] | None = None,
        tracking_uri: str | None = None,
        experiment_name: str | None = None,
        run_name: str | None = None,
        run_name_exists: str = "fail",
        output_dir: str | os.PathLike | None = None,
        config: Mapping[str, Any] | None = None,
        log_mlflow: bool = True,
        resume: bool | str = False,
        check_keys: bool = True,
        hyperparams: Mapping[str, Any] | None = None,
        register_model: str | None = None,
    ) -> None:
        from wss_monai import regimes as regimes_mod
        from wss_monai import tracking

        from wss_monai.data.prepared import DatasetError, PreparedDataset

        if check_keys:
            check_override_keys()
        data = dataset if isinstance(dataset, PreparedDataset) else open_dataset(dataset)
        self.dataset = data
        self.dataset_dir = str(data.root)
        self.dataset_name = data.name
        self.bundle = bundle
        self.seed = int(seed)
        if epochs is not None and (isinstance(epochs, bool) or int(epochs) < 1):
            fail(f"epochs must be a whole number >= 1, got {epochs!r}.")
        self.epochs = None if epochs is None else int(epochs)
        self.class_names = dict(data.class_names)
        self.num_classes = data.num_classes
        self.image_size = data.image_size

        if regime is None or str(regime).strip() == "":
            fail(f"regime is required: pass --regime NAME ({', '.join(regimes_mod.regime_names(regimes))}).")
        try:
            spec = regimes_mod.get_regime(str(regime), regimes, regularizers, image_size=self.image_size)
            if loss_terms is not None:
                spec = spec.with_terms(loss_terms)
        except (regimes_mod.UnknownRegimeError, regimes_mod.RegimeTableError) as err:
            fail(str(err))

        # weak labels, bounds and full masks the regime reads must exist in this dataset
        if not data.entries("validation"):
            fail(f"{data.path}: the validation split is empty; the best checkpoint is chosen on it (prepare with --val N).")
        chosen_weak = weak or data.weak_primary
        if chosen_weak is None or chosen_weak not in data.weak_strategies:
            fail(
                f"{data.path}: regime {spec.name!r} needs the weak labels {chosen_weak!r}, which this dataset does not have "
                f"(it has: {', '.join(data.weak_strategies) or 'none'}); pass --weak with one of those, or prepare the dataset "
                f"with --weak {chosen_weak}."
            )
        spec = spec.with_weak(chosen_weak)
        if spec.bounds is not None and spec.bounds not in data.bound_rules:
            fail(
                f"{data.path}: regime {spec.name!r} needs the size bounds {spec.bounds!r}, which this dataset does not have "
                f"(it has: {', '.join(data.bound_rules) or 'none'})."
            )
        patients = data.patients("training")
        if spec.full_patients > len(patients):
            fail(
                f"regime {spec.name!r} needs {spec.full_patients} fully annotated training patients; "
                f"{data.path} has {len(patients)} training patients."
            )
        try:
            self.full_patient_names: list[str] = data.check_training(
                weak=None if spec.full else chosen_weak, bounds=spec.bounds, full=spec.full, full_patients=spec.full_patients, seed=self.seed
            )
        except DatasetError as err:
            fail(f"regime {spec.name!r}: {err}")
        if spec.routing and spec.full_patients == len(patients):
            logger.warning(f"regime {spec.name}: all {len(patients)} training patients are fully annotated (no weak patient left)")
        self.spec = spec

        # names: experiment, run, output folder (rank 0 decides, the others follow)
        self.log_mlflow = as_bool(log_mlflow, "log_mlflow")
        self.resume_checkpoint: str | None = None
        self.resume_epoch = 0
        self.resume_run_id: str | None = None
        self.resume_info: dict | None = None
        resuming = _is_path_like(resume) or as_bool(resume, "resume")
        resume_dir = self._resume_dir(resume, output_dir) if resuming else None
        if resume_dir is not None:
            output_dir = resume_dir
            info = read_run_info(resume_dir) if Path(resume_dir).is_dir() else None
            if info:
                if tracking_uri is None or str(tracking_uri).strip() == "":
                    tracking_uri = info.get("tracking_uri") or None
                experiment_name = experiment_name or info.get("experiment")
                if run_name and info.get("run_name") and str(run_name).strip() != info["run_name"]:
                    fail(f"--resume: {resume_dir} holds run {info['run_name']!r}, not {str(run_name).strip()!r}; leave out --run_name.")
                run_name = info.get("run_name") or run_name
        try:  # an unknown scheme or a file store is the user's to fix; an unreachable server is not (offline journal)
            self.tracking_uri = tracking.resolve_tracking_uri(tracking_uri)
        except ValueError as err:
            fail(f"--tracking_uri: {err}")
        try:
            self.experiment = experiment_name or tracking.experiment_name(self.dataset_name)
        except ValueError as err:
            fail(f"experiment_name: {err}")
        if run_name_exists not in RUN_NAME_POLICIES:
            fail(f"run_name_exists must be one of {', '.join(RUN_NAME_POLICIES)}, got {run_name_exists!r}.")
        if resuming and resume_dir is None and (run_name is None or str(run_name).strip() == ""):
            fail("--resume needs the run to continue: pass --output_dir RUN_DIR (or --resume RUN_DIR, or its --run_name).")
        if output_dir is None or str(output_dir).strip() == "":  # the default folder runs/<experiment>/<run name>
            for key, name in (("experiment_name", self.experiment), ("run_name", run_name)):
                if name is not None and str(name).strip() and not _is_folder_name(name):
                    fail(f"--{key} {name!r} cannot name a folder under runs/ (no '/', '\\', '..' or control "
                         "characters); choose another or pass --output_dir.")
        rank, _ = rank_and_world()
        decided: dict[str, Any] = {}
        if rank == 0:
            try:
                if resuming:  # the run's own name: it exists, and that is the point
                    decided["run_name"] = str(run_name).strip() if run_name else Path(str(resume_dir)).name
                else:
                    decided["run_name"] = self._choose_run_name(run_name, run_name_exists)
            except SystemExit as err:  # tell the other ranks before leaving
                broadcast_from_rank0({"error": getattr(err, "message", str(err))})
                raise
        decided = broadcast_from_rank0(decided)
        if "error" in decided:
            fail(decided["error"])
        self.run_name: str = decided["run_name"]
        if output_dir is None or str(output_dir).strip() == "":
            output_dir = Path.cwd() / "runs" / self.experiment / self.run_name
        self.output_dir = str(Path(str(output_dir)).expanduser().resolve())
        if resuming:
            self._find_checkpoint()
        self.config = None if config is None else dict(config)
        self.hyperparams = _plain_values(hyperparams)
        self.register_model = _model_name(register_model)
        self.rank = rank

    # ----------------------------------------------------------------------------------------

    @staticmethod
    def _resume_dir(resume: Any, output_dir: Any) -> str | None:
        """The folder of the run to resume (None: not resuming, or resuming by run name)."""
        if _is_path_like(resume):
            folder = str(Path(str(resume)).expanduser().resolve())
            given = None if output_dir is None or str(output_dir).strip() == "" else str(Path(str(output_dir)).expanduser().resolve())
            if given is not None and given != folder:
                fail(f"--resume {resume} and --output_dir {output_dir} name two folders; pass one of them.")
            return folder
        if output_dir is None or str(output_dir).strip() == "":
            return None
        return str(Path(str(output_dir)).expanduser().resolve())

    def _find_checkpoint(self) -> None:
        found = RunRecord(self.output_dir).latest_checkpoint()
        if found is None:
            fail(
                f"--resume: {RunRecord(self.output_dir).checkpoints_dir} holds no checkpoint_epoch=<N>.pt to resume from "
                "(the run ended before its first epoch, or this is not its output folder); start it again without --resume."
            )
        path, epoch = found
        if self.epochs is not None and epoch > self.epochs:
            fail(f"--resume: {path.name} is at epoch {epoch}, past --epochs {self.epochs}; pass --epochs {epoch} or more.")
        info = read_run_info(self.output_dir) or {}
        first = {"regime": info.get("regime"), "seed": info.get("seed")}
        now = {"regime": self.spec.name, "seed": self.seed}
        for key in ("regime", "seed"):
            if first[key] is not None and str(first[key]) != str(now[key]):
                fail(
                    f"--resume: the run in {self.output_dir} was started with --{key} {first[key]}, not {now[key]}; "
                    f"resume it with its first command plus --resume true."
                )
        self.resume_checkpoint = str(path)
        self.resume_epoch = epoch
        self.resume_info = info
        self.resume_run_id = info.get("run_id")

    # ----------------------------------------------------------------------------------------

    def _choose_run_name(self, run_name: str | None, policy: str) -> str:
        from wss_monai import tracking

        if run_name is None or str(run_name).strip() == "":
            try:
                return tracking.unique_run_name(self.spec.name, self.seed)
            except ValueError as err:
                fail(str(err))
        name = str(run_name).strip()
        if not self.log_mlflow:
            return name
        taken = self._existing_run_names(name)
        if name not in taken:
            return name
        if policy == "suffix":
            k = 2
            while f"{name}-{k}" in taken:
                k += 1
            return f"{name}-{k}"
        fail(
            f"run name {name!r} already exists in experiment {self.experiment!r} of {self.tracking_uri}; "
            f"pass another --run_name, omit it for a unique one, or pass --run_name_exists suffix."
        )

    def _existing_run_names(self, name: str) -> set[str]:
        """Run names in the experiment equal to ``name`` or ``name-<k>``."""
        from wss_monai import tracking

        ok, reason = tracking.reachable(self.tracking_uri)
        if not ok:  # the run keeps its metrics locally (MLflowTracker); the name is checked when they are synced
            logger.warning(f"cannot check that run name {name!r} is free: {self.tracking_uri} does not answer ({reason})")
            return set()
        try:
            return tracking.run_names_starting_with(self.experiment, name, self.tracking_uri)
        except Exception as err:  # an unreachable server is reported by the run itself
            fail(f"cannot read the MLflow store {self.tracking_uri}: {str(err).splitlines()[0] if str(err) else type(err).__name__}")

    @property
    def checkpoint_path(self) -> str:
        """The best checkpoint of this run (written when validation 3D Dice improves)."""
        return str(RunRecord(self.output_dir).best_checkpoint)

    @property
    def volume_spacing(self) -> dict[str, tuple[float, float, float]]:
        """Volume name -> (row, column, slice distance) in mm of the prepared slices."""
        return self.dataset.volume_spacing

    def resolved(self) -> dict[str, Any]:
        """The facts this session decided, logged under ``resolved.*``."""
        spec = self.spec.to_dict()
        out = {
            "bundle": self.bundle,
            "regime": self.spec.name,
            "dataset": self.dataset_name,
            "dataset_dir": self.dataset_dir,
            "dataset_fingerprint": self.dataset_fingerprint,
            "num_classes": self.num_classes,
            "class_names": [self.class_names[c] for c in sorted(self.class_names)],
            "image_size": list(self.image_size) if self.image_size else None,
            "spec": spec,
            "full_patient_names": self.full_patient_names,
            "seed": self.seed,
            "epochs": self.epochs,
            "experiment": self.experiment,
            "run_name": self.run_name,
            "tracking_uri": self.tracking_uri,
            "output_dir": self.output_dir,
        }
        if self.dataset.provenance:
            out["provenance"] = self.dataset.provenance
        return out

    @property
    def resuming(self) -> bool:
        return self.resume_checkpoint is not None

    @property
    def dataset_fingerprint(self) -> str:
        """:attr:`wss_monai.data.PreparedDataset.fingerprint` of the training data (param, tag and MLflow dataset digest)."""
        return self.dataset.fingerprint

    def params(self) -> dict[str, Any]:
        """What the run logs as MLflow params: the few values two runs are compared on.

        One screen of the UI's runs table: the regime and what it resolved to (loss terms with
        their weights, weak labels, bound rule, sampling, fully annotated patients), the
        schedule (epochs, seed and the ``hyperparams`` the bundle passes: learning rate, batch
        size...) and the data (name, fingerprint, folder, slice size, training slices). The
        network is added by the MLflow handler, which holds it. Everything else is in the
        artifact ``config.json`` (:meth:`full_config`); flattening it gave some 200 columns.
        """
        spec = self.spec

        def weight(value: Any) -> str:
            try:
                return f"{float(value):g}"
            except (TypeError, ValueError):
                return str(value)

        facts = {
            "regime": spec.name,
            "loss_terms": ", ".join(f"{t.get('name')}={weight(t.get('weight'))}" for t in spec.terms),
            "weak": spec.weak or "none",
            "bounds": spec.bounds or "none",
            "sampling": spec.sampling,
            "full_patients": spec.full_patients,
            "epochs": self.epochs,
            "seed": self.seed,
            **self.hyperparams,
            "image_size": "x".join(str(n) for n in self.image_size) if self.image_size else "none",
            "train_slices": len(self.dataset.entries("training")),
            "dataset": self.dataset_name,
            "dataset_fingerprint": self.dataset_fingerprint,
            "dataset_dir": self.dataset_dir,
        }
        return facts

    def full_config(self) -> dict[str, Any]:
        """The artifact ``config.json``: the bundle config (``_meta_`` left out, top-level references filled in) and ``resolved``."""
        config = {k: v for k, v in (self.config or {}).items() if k != "_meta_"}
        return {**substitute_top_level(config), "resolved": self.resolved()}

    def start(self) -> "TrainingSession":
        """Create the output folder and say what is about to run (call it from ``initialize``)."""
        out = Path(self.output_dir)
        if self.rank == 0:
            lock_output_dir(out)  # before anything in the folder is written or cleared
        record = RunRecord(out)
        record.best_checkpoint.parent.mkdir(parents=True, exist_ok=True)
        record.checkpoints_dir.mkdir(parents=True, exist_ok=True)
        if self.rank == 0:
            record.write_model_card(self.model_card())
            if self.resuming:
                logger.info(f"resuming from {self.resume_checkpoint}: epochs {self.resume_epoch + 1} to {self.epochs}")
            where = f"MLflow run {self.run_name!r} in experiment {self.experiment!r} ({self.tracking_uri})" if self.log_mlflow else "MLflow off"
            logger.info(
                f"{self.bundle or 'bundle'}: regime {self.spec.name} on {self.dataset_name} "
                f"(weak {self.spec.weak}, bounds {self.spec.bounds}, sampling {self.spec.sampling}); "
                f"output in {self.output_dir}; {where}"
            )
        return self

    def model_card(self) -> dict[str, Any]:
        """What inference needs besides the weights: the bundle, the classes and the preprocessing of the data."""
        return {
            "bundle": self.bundle or "wss_segmentation",
            "format": MODEL_CARD_FORMAT,
            "num_classes": self.num_classes,
            "class_names": [self.class_names[c] for c in sorted(self.class_names)],
            "in_channels": 1,
            "preprocessing": self.dataset.preprocessing,
            "regime": self.spec.name,
            "dataset": self.dataset_name,
        }

    def finish(self) -> None:
        """Say where the results are (call it from ``finalize``)."""
        if self.rank != 0:
            return
        info = read_run_info(self.output_dir) or {}
        best = info.get("best_metric")
        line = f"training finished: best val_dice_3d_mean {best:.4f} at epoch {info.get('best_epoch')}" if isinstance(best, float) else "training finished"
        logger.info(f"{line}; best checkpoint {self.checkpoint_path}; run {self.run_name!r} ({self.tracking_uri})")


def _is_folder_name(name: str) -> bool:
    """Whether ``name`` is one folder name: a run's default folder ``runs/<experiment>/<run name>`` stays there."""
    name = str(name)
    return (bool(name.strip()) and name not in (".", "..") and "/" not in name and "\\" not in name
            and not any(ord(c) < 32 for c in name))


_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def _model_name(value: Any) -> str | None:
    """``register_model`` checked as a plain registry name (letters, digits, ``_ . -``; at most 100), or None.

    The value comes from a config or the command line and only ever names a registered model:
    anything else (a path, spaces, an expression) stops the run before training, not at its end.
    """
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    if not isinstance(value, str) or not _MODEL_NAME.match(value.strip()):
        fail(f"--register_model must be a plain model name (letters, digits, '_', '.', '-'; at most 100, "
             f"starting with a letter or digit), got {value!r}.")
    return value.strip()


def _plain_values(values: Mapping[str, Any] | None) -> dict[str, Any]:
    """``hyperparams`` with the keys as strings; values that are not plain (numbers, text, switches, lists of them) become text."""
    out: dict[str, Any] = {}
    for key, value in dict(values or {}).items():
        plain = value is None or isinstance(value, (str, int, float, bool)) or (
            isinstance(value, (list, tuple)) and all(isinstance(v, (str, int, float, bool)) for v in value))
        out[str(key)] = (list(value) if isinstance(value, tuple) else value) if plain else str(value)
    return out


def _is_path_like(value: Any) -> bool:
    """A ``resume`` value naming a folder (not a boolean word)."""
    if isinstance(value, os.PathLike):
        return True
    if not isinstance(value, str):
        return False
    text = value.strip().lower()
    return bool(text) and text not in ("true", "false", "yes", "no", "on", "off", "1", "0")
