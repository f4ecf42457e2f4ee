"""Opening the prepared dataset a bundle names: checked, and bad input ends the run with one line (exit 2)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from wss_monai.engine.errors import as_bool, fail


def open_dataset(dataset_dir: str | os.PathLike | None, verify: Any = False, read_slices: Any = True, weak: Any = "all"):
    """The :class:`~wss_monai.data.PreparedDataset` of ``dataset_dir``; bad input ends the run (exit 2).

    With ``verify`` the whole dataset is checked first (:func:`wss_monai.data.verify.check_dataset`:
    its entries and, with ``read_slices``, every slice file; not the checksums, which flag any
    deliberate edit of dataset.json too), so that a tampered dataset stops the run with one line
    before anything is built, instead of a traceback from the data loader mid-epoch or a silently
    wrong score. The bundles pass ``verify=True`` and ``read_slices=@verify_slices``.

    ``weak``: the weak-label strategy whose slice files are read (None: the dataset's primary one,
    as the training session resolves it; ``"all"``, the default: every strategy). ``train.json``
    passes ``@weak``: a training reads one strategy, and reading the others' files was most of
    its start-up check (a slice has one image, one mask and up to five weak labels).
    """
    from wss_monai.data.prepared import DatasetError, PreparedDataset
    from wss_monai.data.verify import check_dataset

    try:
        data = PreparedDataset(dataset_dir)
        if as_bool(verify, "verify"):
            weak_read = None if weak == "all" else [str(weak) if weak else data.weak_primary]
            check_dataset(data, contents=as_bool(read_slices, "verify_slices"), checksums=False, weak_read=weak_read)
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
