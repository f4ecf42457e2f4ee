"""The training engine behind the MONAI bundles (``bundles/``): sessions, batches, metric, handlers, plots.

The bundles' JSON configs build MONAI's ``SupervisedTrainer`` and ``SupervisedEvaluator`` from
these pieces (every ``_target_`` points here, into ``wss_monai`` or into MONAI):

- :class:`TrainingSession` / :class:`EvaluationSession`: the checked top-level keys of a bundle
  (dataset, regime, names, folders); bad input ends with one line and exit code 2;
- :class:`PrepareWeakBatch` / :class:`PrepareEvalBatch`: ``prepare_batch`` of the trainer / evaluator;
- :class:`VolumeScoresMetric`: 2D and 3D Dice and HD95 per class (the key metric ``val_dice_3d_mean``);
- handlers: :class:`TrainLossMonitor` (epoch loss means, NaN/Inf guard), :class:`EpochSetter`,
  :class:`ProgressBar`, :class:`EpochSummary`, :class:`MLflowTracker`, :class:`EvaluationReport`;
- :func:`load_network`, :func:`current_config`, :func:`dataset_num_classes`, :func:`latest_checkpoint`;
- :func:`as_bool`: a boolean key however the command line spelt it (``--amp false`` is a string).
"""

from wss_monai.engine.batch import PrepareEvalBatch, PrepareWeakBatch
from wss_monai.engine.errors import BundleInputError, as_bool, fail
from wss_monai.engine.handlers import (
    AtomicCheckpointSaver,
    EpochSetter,
    EpochSummary,
    EvaluationReport,
    LastCheckpoint,
    MLflowTracker,
    NonFiniteLossError,
    ProgressBar,
    TrainLossMonitor,
    load_network,
    unwrap,
)
from wss_monai.engine.scores import VolumeScoresMetric
from wss_monai.engine.values import check_training_values
from wss_monai.engine.session import (
    EvaluationSession,
    TrainingSession,
    check_override_keys,
    current_config,
    dataset_num_classes,
    latest_checkpoint,
    open_dataset,
    read_run_info,
)

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
]
