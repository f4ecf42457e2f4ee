"""The training engine behind the MONAI bundles (``bundles/``): sessions, batches, metric, handlers, plots.

The bundles' JSON configs build MONAI's ``SupervisedTrainer`` and ``SupervisedEvaluator`` from
these pieces (every ``_target_`` points here, into ``wss_monai`` or into MONAI), one concern a module:

- :class:`TrainingSession` (:mod:`.training_session`) / :class:`EvaluationSession`
  (:mod:`.evaluation_session`): the checked top-level keys of a bundle (dataset, regime, names,
  folders); bad input ends with one line and exit code 2 (:mod:`.errors`);
- :func:`current_config`, :func:`check_override_keys` (:mod:`.bundle_run`): what the running
  ``monai.bundle run`` holds; :func:`open_dataset`, :func:`dataset_num_classes` (:mod:`.dataset`);
- :class:`PrepareWeakBatch` / :class:`PrepareEvalBatch` (:mod:`.batch`): ``prepare_batch`` of the trainer / evaluator;
- :class:`VolumeScoresMetric` (:mod:`.scores`): 2D and 3D Dice and HD95 per class (the key metric ``val_dice_3d_mean``);
- handlers: :class:`TrainLossMonitor` (epoch loss means, NaN/Inf guard), :class:`ProgressBar`,
  :class:`EpochSummary` (:mod:`.monitors`); :class:`EpochSetter` (:mod:`.epoch_setter`);
  :class:`LastCheckpoint`, :class:`AtomicCheckpointSaver` (:mod:`.checkpoints`: saving and resuming);
  :class:`MLflowTracker` (:mod:`.recording`); :class:`EvaluationReport` (:mod:`.evaluation`);
- :func:`compile_for_training` (:mod:`.compiled`): the trainer's network, compiled where it pays back;
- :func:`load_network` (:mod:`.weights`); :func:`unwrap` and the rank helpers (:mod:`.distributed`);
- :func:`read_run_info`, :func:`latest_checkpoint`: the files of a run's output folder
  (:class:`wss_monai.tracking.RunRecord`);
- :func:`as_bool`: a boolean key however the command line spelt it (``--amp false`` is a string).
"""

from wss_monai.engine.batch import PrepareEvalBatch, PrepareWeakBatch
from wss_monai.engine.bundle_run import check_override_keys, current_config
from wss_monai.engine.compiled import compile_for_training
from wss_monai.engine.checkpoints import AtomicCheckpointSaver, LastCheckpoint
from wss_monai.engine.dataset import dataset_num_classes, open_dataset
from wss_monai.engine.distributed import unwrap
from wss_monai.engine.epoch_setter import EpochSetter
from wss_monai.engine.errors import BundleInputError, as_bool, fail
from wss_monai.engine.evaluation import EvaluationReport
from wss_monai.engine.evaluation_session import EvaluationSession
from wss_monai.engine.monitors import EpochSummary, NonFiniteLossError, ProgressBar, TrainLossMonitor
from wss_monai.engine.recording import MLflowTracker
from wss_monai.engine.scores import VolumeScoresMetric
from wss_monai.engine.training_session import TrainingSession
from wss_monai.engine.values import check_training_values
from wss_monai.engine.weights import load_network
from wss_monai.tracking.record import latest_checkpoint, read_run_info

__all__ = [
    "BundleInputError",
    "fail",
    "as_bool",
    "TrainingSession",
    "EvaluationSession",
    "current_config",
    "dataset_num_classes",
    "open_dataset",
    "read_run_info",
    "latest_checkpoint",
    "check_override_keys",
    "check_training_values",
    "PrepareWeakBatch",
    "PrepareEvalBatch",
    "VolumeScoresMetric",
    "NonFiniteLossError",
    "TrainLossMonitor",
    "EpochSetter",
    "AtomicCheckpointSaver",
    "LastCheckpoint",
    "ProgressBar",
    "EpochSummary",
    "MLflowTracker",
    "EvaluationReport",
    "load_network",
    "unwrap",
    "compile_for_training",
]
