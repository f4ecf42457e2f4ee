"""What a bundle run knows before it builds anything: the checked inputs and the resolved names.

:class:`TrainingSession` turns the top-level keys of ``train.json`` (``dataset_dir``, ``regime``,
``tracking_uri``, ``experiment_name``, ``run_name``, ``output_dir``...) into checked values: the
prepared dataset exists and offers the regime's weak labels and bounds, the regime is one this
bundle runs, the run name is free in the MLflow experiment, the output folder is decided. Bad input
stops here, with one line and exit code 2 (:func:`~wss_monai.engine.errors.fail`), before any
network, loader or MLflow run is made.

:class:`EvaluationSession` does the same for ``evaluate.json`` and ``inference.json``: dataset,
checkpoint, split (test, or validation when the test split is empty, with a warning), the folder
of the training run and its MLflow run.
"""

from __future__ import annotations

import copy
import inspect
import json
import logging
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from wss_monai.engine.errors import as_bool, fail
from wss_monai.engine.folder_lock import lock_output_dir

__all__ = [
    "TrainingSession",
    "EvaluationSession",
    "current_config",
    "dataset_num_classes",
    "open_dataset",
    "RUN_INFO",
    "MODEL_CARD",
    "write_model_card",
    "BEST_CHECKPOINT",
    "HISTORY",
    "latest_checkpoint",
    "check_override_keys",
]

logger = logging.getLogger("wss_monai.engine")

RUN_INFO = "run.json"
"""File in a training run's output folder: its MLflow run, regime, dataset and best checkpoint."""

BEST_CHECKPOINT = "models/model.pt"
"""The best checkpoint (network state_dict, by validation 3D Dice), relative to the output folder."""

MODEL_CARD = "models/preprocessing.json"
"""Beside the best checkpoint: the bundle, classes and preprocessing a new scan must go through (:meth:`TrainingSession.model_card`)."""

MODEL_CARD_FORMAT = 1

HISTORY = "history.json"
"""Per-epoch metrics of a training run (its curves; read back when the run is resumed)."""

CHECKPOINT_PATTERN = re.compile(r"^checkpoint_epoch=(\d+)\.pt$")

SPLITS = ("training", "validation", "test")
RUN_NAME_POLICIES = ("fail", "suffix")


# --------------------------------------------------------------------------------------------
# helpers usable from configs


def current_config() -> dict | None:
    """The merged config of the bundle being run (files plus command-line overrides), or None.

    ``python -m monai.bundle run`` resolves every ``$`` expression from inside
    ``ConfigParser.get_parsed_content``; this looks for that parser up the call stack and returns
    a deep copy of its raw content (references and expressions unevaluated). Outside a bundle run
    (plain Python) it returns None.
    """
    try:
        from monai.bundle import ConfigParser
    except ImportError:  # pragma: no cover - MONAI is a dependency
        return None
    frame = inspect.currentframe()
    try:
        while frame is not None:
            candidate = frame.f_locals.get("self")
            if isinstance(candidate, ConfigParser):
                try:
                    return copy.deepcopy(candidate.get())
                except Exception:  # objects put in by Python callers may not copy
                    return json.loads(json.dumps(candidate.get(), default=str))
            frame = frame.f_back
    finally:
        del frame
    return None


def open_dataset(dataset_dir: str | os.PathLike | None, verify: Any = False, read_slices: Any = True):
    """The :class:`~wss_monai.data.PreparedDataset` of ``dataset_dir``; bad input ends the run (exit 2).

    With ``verify`` the whole dataset is checked first (:func:`wss_monai.data.verify.check_dataset`:
    its entries and, with ``read_slices``, every slice file; not the checksums, which flag any
    deliberate edit of dataset.json too), so that a tampered dataset stops the run with one line
    before anything is built, instead of a traceback from the data loader mid-epoch or a silently
    wrong score. The bundles pass ``verify=True`` and ``read_slices=@verify_slices``.
    """
    from wss_monai.data.prepared import DatasetError, PreparedDataset
    from wss_monai.data.verify import check_dataset

    try:
        data = PreparedDataset(dataset_dir)
        if as_bool(verify, "verify"):
            check_dataset(data, contents=as_bool(read_slices, "verify_slices"), checksums=False)
        return data
    except DatasetError as err:
        fail(str(err))


def dataset_num_classes(dataset_dir: str | os.PathLike | None = None, default: int = 2) -> int:
    """Number of classes (background included) of a prepared dataset, or ``default`` without one.

    The bundle uses it for ``network_def``'s output channels; tools that build the network without
    a dataset (``verify_net_in_out``, ``ckpt_export``) get ``default``.
    """
    if dataset_dir is None or str(dataset_dir).strip() == "" or not (Path(str(dataset_dir)).expanduser() / "dataset.json").is_file():
        return int(default)
    return open_dataset(dataset_dir).num_classes


def _rank_and_world() -> tuple[int, int]:
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except ImportError:  # pragma: no cover
        pass
    return 0, 1


def _broadcast(payload: Any) -> Any:
    """Rank 0's ``payload`` on every rank (a no-op outside ``torch.distributed``)."""
    rank, world = _rank_and_world()
    if world == 1:
        return payload
    import torch.distributed as dist

    box = [payload if rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _substitute_top_level(config: dict) -> dict:
    """A copy of ``config`` where ``"@key"`` strings naming a top-level plain value are replaced by it.

    Only exact references to top-level JSON values (numbers, strings, booleans, lists of them) are
    substituted, so that logged params read ``optimizer.lr: 0.0005`` rather than ``@learning_rate``;
    nothing is evaluated.
    """
    plain = {
        k: v
        for k, v in config.items()
        if not (isinstance(v, str) and v[:1] in "$@%") and (v is None or isinstance(v, (int, float, bool, str)) or (
            isinstance(v, list) and all(isinstance(x, (int, float, bool, str)) for x in v)))
    }

    def walk(value: Any) -> Any:
        if isinstance(value, str) and value.startswith("@") and value[1:] in plain:
            return plain[value[1:]]
        if isinstance(value, Mapping):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    return {k: (v if k in plain else walk(v)) for k, v in config.items()}


def latest_checkpoint(output_dir: str | os.PathLike) -> tuple[Path, int] | None:
    """The newest ``checkpoints/checkpoint_epoch=<N>.pt`` of a run's output folder and its N, or None."""
    folder = Path(output_dir) / "checkpoints"
    found = []
    for path in folder.glob("checkpoint_epoch=*.pt") if folder.is_dir() else []:
        match = CHECKPOINT_PATTERN.match(path.name)
        if match and path.is_file():
            found.append((int(match.group(1)), path))
    if not found:
        return None
    epoch, path = max(found)
    return path, epoch


def _bundle_run_call() -> dict | None:
    """The arguments of ``monai.bundle.scripts.run`` when it is on the call stack, else None."""
    try:
        from monai.bundle import scripts
    except ImportError:  # pragma: no cover
        return None
    code = getattr(scripts.run, "__code__", None)
    frame = inspect.currentframe()
    try:
        while frame is not None:
            if frame.f_code is code:
                return dict(frame.f_locals)
            frame = frame.f_back
    finally:
        del frame
    return None


def _is_folder_name(name: str) -> bool:
    """Whether ``name`` is one folder name: a run's default folder ``runs/<experiment>/<run name>`` stays there."""
    name = str(name)
    return (bool(name.strip()) and name not in (".", "..") and "/" not in name and "\\" not in name
            and not any(ord(c) < 32 for c in name))


def check_override_keys() -> None:
    """Stop on a command-line key that is not a top-level key of the bundle's config files.

    ``python -m monai.bundle run --epoch 3`` (for ``--epochs``) adds a key nobody reads and trains
    with the default; this finds the overrides given to ``monai.bundle.scripts.run`` (command line
    or ``args_file``) and checks the part of each key before the first ``#`` against the keys of
    the config files of the run (overlays included). An unknown key ends the run with one line
    naming it and the closest known keys (exit code 2). Outside ``monai.bundle run`` (configs
    built from Python) nothing is checked.
    """
    call = _bundle_run_call()
    if call is None or not call.get("config_file"):
        return
    try:
        from monai.bundle import ConfigParser
        from monai.bundle.workflows import ConfigWorkflow

        content = ConfigParser.load_config_files(call["config_file"])
        overrides = dict(call.get("override") or {})
        if call.get("args_file"):
            overrides.update(ConfigParser.load_config_file(call["args_file"]))
        consumed = set(inspect.signature(ConfigWorkflow.__init__).parameters) | set(
            inspect.signature(_bundle_run_fn()).parameters) | {"workflow_name", "workflow", "args_file", "config_file"}
    except Exception:  # unreadable files are reported by MONAI itself
        return
    _check_term_targets(content)
    known = set(content) | {"_meta_"}
    unknown = []
    for key in overrides:
        top = str(key).lstrip("+").split("#", 1)[0]
        if top and top not in known and top not in consumed:
            unknown.append(top)
    if not unknown:
        return
    import difflib

    files = call["config_file"]
    parts = []
    for key in unknown:
        close = difflib.get_close_matches(key, sorted(k for k in known if not k.startswith("_")), n=2, cutoff=0.6)
        parts.append(f"--{key}" + (f" (did you mean {' or '.join('--' + c for c in close)}?)" if close else ""))
    fail(
        f"unknown key{'s' if len(parts) > 1 else ''} {', '.join(parts)}: not in the bundle's config ({files}); "
        "a misspelt key would be ignored. A new key belongs in a config file."
    )


def _check_term_targets(content: Mapping[str, Any]) -> None:
    """Stop with one line on a regime or regularizer term whose ``_target_`` names no class (MONAI's own error is a traceback)."""
    from pydoc import locate

    tables = {"regimes": content.get("regimes"), "regularizers": content.get("regularizers")}
    for table_name, table in tables.items():
        if not isinstance(table, Mapping):
            continue
        for name, entry in table.items():
            terms = (entry.get("loss_terms") if table_name == "regimes" else {name: entry}) if isinstance(entry, Mapping) else None
            for term_name, term in (terms or {}).items() if isinstance(terms, Mapping) else ():
                target = term.get("term", {}).get("_target_") if isinstance(term, Mapping) and isinstance(term.get("term"), Mapping) else None
                if isinstance(target, str) and not target.startswith(("$", "@")) and locate(target) is None:
                    fail(f"{table_name}#{name}: term {term_name!r} has _target_ {target!r}, which names no class; "
                         "a term is a loss class such as wss_monai.losses.SizePenalty.")


def _bundle_run_fn():
    from monai.bundle import scripts

    return scripts.run


# --------------------------------------------------------------------------------------------
# training


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
        rank, _ = _rank_and_world()
        decided: dict[str, Any] = {}
        if rank == 0:
            try:
                if resuming:  # the run's own name: it exists, and that is the point
                    decided["run_name"] = str(run_name).strip() if run_name else Path(str(resume_dir)).name
                else:
                    decided["run_name"] = self._choose_run_name(run_name, run_name_exists)
            except SystemExit as err:  # tell the other ranks before leaving
                _broadcast({"error": getattr(err, "message", str(err))})
                raise
        decided = _broadcast(decided)
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
        found = latest_checkpoint(self.output_dir)
        if found is None:
            fail(
                f"--resume: {Path(self.output_dir) / 'checkpoints'} holds no checkpoint_epoch=<N>.pt to resume from "
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
            from wss_monai.tracking import store_client

            client = store_client(self.tracking_uri)  # creates a new SQLite store once, under a lock
            experiment = client.get_experiment_by_name(self.experiment)
            if experiment is None:
                return set()
            quoted = name.replace("'", "\\'")
            runs = client.search_runs(
                [experiment.experiment_id],
                filter_string=f"attributes.run_name LIKE '{quoted}%'",
                max_results=50000,
            )
            return {r.info.run_name for r in runs}
        except Exception as err:  # an unreachable server is reported by the run itself
            fail(f"cannot read the MLflow store {self.tracking_uri}: {str(err).splitlines()[0] if str(err) else type(err).__name__}")

    @property
    def checkpoint_path(self) -> str:
        """The best checkpoint of this run (written when validation 3D Dice improves)."""
        return str(Path(self.output_dir) / BEST_CHECKPOINT)

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
        return {**_substitute_top_level(config), "resolved": self.resolved()}

    def start(self) -> "TrainingSession":
        """Create the output folder and say what is about to run (call it from ``initialize``)."""
        out = Path(self.output_dir)
        if self.rank == 0:
            lock_output_dir(out)  # before anything in the folder is written or cleared
        (out / "models").mkdir(parents=True, exist_ok=True)
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        if self.rank == 0:
            write_model_card(out / MODEL_CARD, self.model_card())
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


def write_model_card(path: str | os.PathLike, card: Mapping[str, Any]) -> None:
    """Write the model card (``models/preprocessing.json``) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(dict(card), indent=2) + "\n")
    os.replace(tmp, path)


def read_run_info(output_dir: str | os.PathLike) -> dict | None:
    """``run.json`` of a training run's output folder, or None."""
    path = Path(output_dir) / RUN_INFO
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def write_run_info(output_dir: str | os.PathLike, info: Mapping[str, Any]) -> None:
    """Write ``run.json`` atomically (temporary name, then rename)."""
    path = Path(output_dir) / RUN_INFO
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(dict(info), indent=2, default=str))
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# evaluation and inference


class EvaluationSession:
    """Checked inputs of ``evaluate.json`` / ``inference.json``.

    Args:
        dataset: the prepared dataset the network was trained on (:class:`~wss_monai.data.PreparedDataset` or its folder).
        output_dir: the training run's output folder (holds ``models/model.pt`` and ``run.json``).
        ckpt_path: the checkpoint to use; None = ``<output_dir>/models/model.pt``.
        split: ``test`` (default; ``validation`` with a warning when the test split is empty),
            ``validation``, ``training`` or (inference) ``all``.
        workflow: ``evaluate`` or ``inference`` (names the results folder).
        results_dir: where results go; None = ``<output_dir>/<workflow>`` (or beside the checkpoint).

    Attributes: ``split``, ``prefix`` (``test_``, ``val_``, ``train_``; metric names),
    ``key_metric`` (``<prefix>dice_3d_mean``), ``ckpt_path``, ``results_dir``, ``run_info``
    (the training run's ``run.json`` or None), ``num_classes``, ``class_names``.
    """

    PREFIXES = {"test": "test_", "validation": "val_", "training": "train_", "all": "all_"}

    def __init__(
        self,
        dataset: Any,
        output_dir: str | os.PathLike | None = None,
        ckpt_path: str | os.PathLike | None = None,
        split: str = "test",
        workflow: str = "evaluate",
        results_dir: str | os.PathLike | None = None,
    ) -> None:
        from wss_monai.data.prepared import PreparedDataset

        data = dataset if isinstance(dataset, PreparedDataset) else open_dataset(dataset)
        manifest = data.manifest
        self.dataset = data
        self.dataset_dir = str(data.root)
        self.dataset_name = data.name
        self.class_names = dict(data.class_names)
        self.num_classes = len(self.class_names)
        self.workflow = workflow
        allowed = (*SPLITS, "all") if workflow == "inference" else SPLITS
        if split not in allowed:
            fail(f"split must be one of {', '.join(allowed)}, got {split!r}.")
        if split == "test" and not manifest.get("test"):
            warnings.warn(
                f"{Path(self.dataset_dir) / 'dataset.json'}: the test split is empty; using the validation split instead.",
                stacklevel=2,
            )
            logger.warning("the test split is empty: using the validation split instead")
            split = "validation"
        if split != "all" and not manifest.get(split):
            fail(f"{Path(self.dataset_dir) / 'dataset.json'}: the {split} split is empty.")
        self.split = split
        self.prefix = self.PREFIXES[split]
        self.key_metric = f"{self.prefix}dice_3d_mean"

        if (ckpt_path is None or str(ckpt_path).strip() == "") and (output_dir is None or str(output_dir).strip() == ""):
            fail("pass --output_dir of a training run (holding models/model.pt) or --ckpt_path of a checkpoint.")
        self.output_dir = None if output_dir is None or str(output_dir).strip() == "" else str(Path(str(output_dir)).expanduser().resolve())
        for key, folder in (("output_dir", output_dir), ("results_dir", results_dir)):  # named before a missing checkpoint
            if folder is not None and str(folder).strip() and Path(str(folder)).expanduser().is_file():
                fail(f"--{key} {folder}: is a file; pass a folder.")
        if ckpt_path is None or str(ckpt_path).strip() == "":
            ckpt_path = Path(self.output_dir) / BEST_CHECKPOINT
        ckpt = Path(str(ckpt_path)).expanduser().resolve()
        if not ckpt.is_file():
            fail(f"{ckpt}: no such checkpoint (train first, or pass --ckpt_path).")
        self.ckpt_path = str(ckpt)
        run_dir = Path(self.output_dir) if self.output_dir else ckpt.parent.parent
        self.run_info = read_run_info(run_dir)
        self.results_dir = str(Path(str(results_dir)).expanduser().resolve()) if results_dir else str(run_dir / workflow)

    @property
    def volume_spacing(self) -> dict[str, tuple[float, float, float]]:
        return self.dataset.volume_spacing

    def key_metric_dict(self, metric: Any) -> dict[str, Any]:
        """``{<prefix>dice_3d_mean: metric}`` for an evaluator's ``key_val_metric``."""
        return {self.key_metric: metric}
