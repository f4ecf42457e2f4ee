"""MLflow params from a config: names MLflow accepts and values within its limits."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from typing import Any


# MLflow 3 limits (mlflow.utils.validation.MAX_PARAM_VAL_LENGTH / MAX_ENTITY_KEY_LENGTH), kept
# here so that flattening a config does not import MLflow; the tests check they still agree.
MAX_PARAM_VALUE_LENGTH = 6000
MAX_KEY_LENGTH = 250


def _short_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]


def metric_key(key: str) -> str:
    """A name MLflow accepts for a param or metric, as close to ``key`` as possible.

    Characters outside letters, digits, ``_ - . space : /`` become ``_``; ``/`` is kept as a
    separator but empty, ``.`` and ``..`` path segments are removed (MLflow refuses names that
    would resolve to another path); names longer than 250 characters are cut and end with a
    hash of the full name, so that they stay distinct.
    """
    text = re.sub(r"[^\w\-. :/]", "_", str(key))
    segments = [s if s.strip(".") else "_" for s in text.split("/") if s]
    text = "/".join(segments) or "_"
    if len(text) > MAX_KEY_LENGTH:
        text = f"{text[: MAX_KEY_LENGTH - 9]}-{_short_hash(str(key))}"
    return text


def _param_value(value: Any) -> str:
    """Strings as they are, other scalars and scalar lists as compact JSON (``true``, ``[1, 2]``)."""
    if isinstance(value, str):
        return value
    if callable(getattr(value, "tolist", None)):
        value = value.tolist()  # NumPy / torch scalars and arrays
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no inf / nan
    try:
        return json.dumps(value, separators=(", ", ": "), default=str)
    except (TypeError, ValueError):
        return str(value)


def _truncate(value: str, limit: int) -> str:
    if len(value) <= limit:
        return value
    marker = f" ...[truncated {len(value)} chars, sha1 {_short_hash(value)}]"
    return value[: limit - len(marker)] + marker


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, bool, int, float)) or getattr(value, "ndim", None) == 0


def flatten_config(
    config: Mapping[str, Any], sep: str = ".", max_value_length: int = MAX_PARAM_VALUE_LENGTH
) -> dict[str, str]:
    """Flatten a nested config into MLflow params: ``{"optimizer.lr": "0.0005", ...}``.

    - nested mappings join their keys with ``sep``; lists of scalars become one JSON value
      (``"[0.9, 0.99]"``), lists holding mappings or lists are indexed (``transforms.0._target_``);
      empty containers are kept as ``{}`` / ``[]``;
    - keys are made MLflow-safe with :func:`metric_key` (keys may contain ``/``); two keys that
      become equal are told apart by a hash suffix instead of overwriting each other;
    - values longer than ``max_value_length`` (MLflow's limit) are cut and say so, with the
      length and a hash of the full value (log the full config as an artifact:
      :meth:`TrackedRun.log_config` does).

    Example::

        >>> flatten_config({"optimizer": {"lr": 5e-4, "betas": [0.9, 0.99]}, "loss/size": {"w": 1e-2}})
        {'optimizer.lr': '0.0005', 'optimizer.betas': '[0.9, 0.99]', 'loss/size.w': '0.01'}
    """
    flat: dict[str, str] = {}

    def put(raw_key: str, value: Any) -> None:
        key = metric_key(raw_key)
        if key in flat:
            key = metric_key(f"{key[: MAX_KEY_LENGTH - 9]}-{_short_hash(raw_key)}")
        flat[key] = _truncate(_param_value(value), max_value_length)

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            if not value:
                put(prefix, {})
            for k, v in value.items():
                walk(f"{prefix}{sep}{k}" if prefix else str(k), v)
        elif isinstance(value, (list, tuple)) and not all(_is_scalar(v) for v in value):
            for i, v in enumerate(value):
                walk(f"{prefix}{sep}{i}" if prefix else str(i), v)
        else:
            put(prefix, list(value) if isinstance(value, tuple) else value)

    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a mapping, got {type(config).__name__}.")
    walk("", config)
    return flat
