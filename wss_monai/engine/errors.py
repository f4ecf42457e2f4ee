"""How the bundles report bad user input: one line on stderr and exit code 2.

MONAI's bundle runner (``python -m monai.bundle run``) wraps every ``Exception`` raised while a
config is resolved into a ``RuntimeError`` chain and prints its traceback. A ``SystemExit`` passes
through untouched, so :class:`BundleInputError` is one: :func:`fail` prints ``error: <message>``
once and raises it with code 2, and the process ends with exactly that line. Python code (tests,
pipelines) can catch it like any exception (``except BundleInputError``, or ``SystemExit``).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

__all__ = ["BundleInputError", "fail", "as_bool", "EXIT_BAD_INPUT"]

EXIT_BAD_INPUT = 2


class BundleInputError(SystemExit):
    """Bad input to a bundle (missing dataset, unknown regime...): exit code 2, message in ``.message``."""

    def __init__(self, message: str) -> None:
        super().__init__(EXIT_BAD_INPUT)
        self.message = str(message)

    def __str__(self) -> str:
        return self.message


def fail(message: str) -> "BundleInputError":
    """Print ``error: <message>`` on stderr and raise :class:`BundleInputError` (exit code 2)."""
    message = " ".join(str(message).split())  # one line
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise BundleInputError(message)


_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def as_bool(value: Any, name: str = "value", *, keep: tuple[str, ...] = (), mappings: bool = False) -> Any:
    """A boolean key of a bundle as a bool, whichever way the command line spelt it.

    ``python -m monai.bundle run --amp false`` hands the config the *string* ``"false"`` (python-fire
    only turns ``False`` into a bool), which Python reads as true. This accepts ``True``/``False``,
    ``1``/``0`` and the strings ``true``/``false``, ``yes``/``no``, ``on``/``off``, ``1``/``0`` in any
    case; a string in ``keep`` (e.g. ``"auto"``) is returned lower-cased, and a mapping is returned
    as it is when ``mappings`` (``augment`` also takes a dict of arguments). Anything else ends the
    run with one line and exit code 2 (:func:`fail`).

    Example (in a config): ``"amp": "$wss_monai.engine.as_bool(@amp, 'amp')"``.
    """
    if isinstance(value, bool):
        return value
    if mappings and isinstance(value, Mapping):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        if text in keep:
            return text
    allowed = "true or false (also yes/no, on/off, 1/0)" + "".join(f", or {k}" for k in keep)
    if mappings:
        allowed += ", or a dict of arguments"
    fail(f"{name} must be {allowed}; got {value!r}.")
