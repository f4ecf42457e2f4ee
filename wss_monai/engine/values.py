"""Checks of a training bundle's plain values before anything is built from them.

``python -m monai.bundle run --epochs 1.5`` hands the config a float and ignite trains two epochs;
``--learning_rate abc`` reaches ``torch.optim.Adam`` and ends in MONAI's wrapped traceback. The
first item of the bundle's ``initialize`` list calls :func:`check_training_values` with the raw
values (``@epochs``...), so each wrong one stops the run with one line and exit code 2
(:func:`wss_monai.engine.errors.fail`) before a component is instantiated.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from pathlib import Path
from typing import Any

from wss_monai.engine.errors import as_bool, fail

__all__ = ["check_training_values"]

#: key -> the least whole number it takes (``None`` also allowed for the keys in ``_OPTIONAL``).
_WHOLE = {"epochs": 1, "seed": 0, "batch_size": 1, "val_batch_size": 1, "val_interval": 1, "num_workers": 0,
          "lr_patience": 0, "nan_check_interval": 1}
_OPTIONAL = {"nan_check_interval"}
#: switches -> the extra words they take besides true/false (``progress`` and ``compile`` also take ``auto``;
#: ``augment`` also a dict of arguments)
_SWITCHES = {"amp": (), "deterministic": (), "hd95": (), "log_mlflow": (), "log_model": (), "verify_slices": (),
             "progress": ("auto",), "augment": (), "compile": ("auto",), "fused_optimizer": (), "prefetch": ()}


def _whole(key: str, value: Any, least: int) -> None:
    if key in _OPTIONAL and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, Integral) or value < least:
        fail(f"--{key} must be a whole number >= {least}, got {value!r}.")


def _positive_real(key: str, value: Any, below: float | None = None) -> None:
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    if ok and below is not None:
        ok = value < below
    if not ok:
        fail(f"--{key} must be a number > 0{f' and < {below:g}' if below is not None else ''}, got {value!r}.")


def check_training_values(**values: Any) -> None:
    """Stop with one line (exit 2) on the first training value of the wrong type or range.

    Keys checked when given: the whole numbers of ``_WHOLE``; ``learning_rate`` (> 0, finite);
    ``lr_factor`` (0 < f < 1, as ``ReduceLROnPlateau`` needs); ``betas`` (two numbers in [0, 1),
    as Adam needs); ``output_dir`` (may not be an existing file); the switches of ``_SWITCHES``
    (true/false in any spelling :func:`~wss_monai.engine.errors.as_bool` takes; checked here too,
    since the components that read them are built after the run has made its output folder).
    """
    for key, value in values.items():
        if key in _SWITCHES:
            as_bool(value, f"--{key}", keep=_SWITCHES[key], mappings=key == "augment")
        elif key in _WHOLE:
            _whole(key, value, _WHOLE[key])
        elif key == "learning_rate":
            _positive_real(key, value)
        elif key == "lr_factor":
            _positive_real(key, value, below=1.0)
        elif key == "betas":
            pair = list(value) if isinstance(value, (list, tuple)) else None
            if not (pair and len(pair) == 2 and all(isinstance(b, Real) and not isinstance(b, bool) and 0 <= b < 1
                                                    for b in pair)):
                fail(f"--betas must be two numbers in [0, 1), e.g. [0.9, 0.99], got {value!r}.")
        elif key == "output_dir":
            if value is not None and str(value).strip() and Path(str(value)).expanduser().is_file():
                fail(f"--output_dir {value}: is a file; choose a folder.")
        else:
            raise TypeError(f"check_training_values: no rule for {key!r}")
