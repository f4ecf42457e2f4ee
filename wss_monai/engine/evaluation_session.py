"""What an evaluation or inference run knows before it builds anything: dataset, checkpoint, split, results folder."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

from wss_monai.engine.dataset import open_dataset
from wss_monai.engine.errors import fail
from wss_monai.tracking.record import RunRecord, read_run_info

logger = logging.getLogger("wss_monai.engine")

SPLITS = ("training", "validation", "test")


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
            ckpt_path = RunRecord(self.output_dir).best_checkpoint
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
