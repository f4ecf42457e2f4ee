"""How the bundles report bad user input: one line on stderr and exit code 2.

MONAI's bundle runner (``python -m monai.bundle run``) wraps every ``Exception`` raised while a
config is resolved into a ``RuntimeError`` chain and prints its traceback. A ``SystemExit`` passes
through untouched, so :class:`BundleInputError` is one: :func:`fail` prints ``error: <message>``
once and raises it with code 2, and the process ends with exactly that line. Python code (tests,
pipelines) can catch it like any exception (``except BundleInputError``, or ``SystemExit``).
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Mapping
from typing import Any

__all__ = ["BundleInputError", "fail", "as_bool", "user_data_error", "end_for_user", "shorten_engine_errors", "EXIT_BAD_INPUT"]

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


# --------------------------------------------------------------------------------------------
# errors raised while a run is under way


class UserDataError(ValueError):
    """Raised by our own code for a problem in the user's files found during a run; the message names the file."""


_WORKER = re.compile(r"^Caught \S+ in DataLoader worker process \d+\.")


def _worker_message(error: BaseException) -> str:
    """The original message of an error a DataLoader worker raised (torch re-raises it with the worker's traceback as text)."""
    text = str(error)
    if not _WORKER.match(text) or "Original Traceback" not in text:
        return text
    cls = type(error)
    prefixes = (f"{cls.__module__}.{cls.__qualname__}: ", f"{cls.__qualname__}: ")
    lines = text.rstrip().splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith(prefixes):
            first = lines[i]
            first = first[len(next(p for p in prefixes if first.startswith(p))):]
            return "\n".join([first, *lines[i + 1:]])
    return lines[-1] if lines else text


def _names_a_file(message: str) -> bool:
    """Whether ``message`` follows the data code's convention ``<path of an existing file or folder>: <problem>``."""
    head = message.split(": ", 1)[0].strip()
    return bool(head) and head != message.strip() and (os.sep in head or "." in head) and os.path.exists(head)


def user_data_error(error: BaseException) -> str | None:
    """The one-line message of an error the user's data caused during a run, or None for anything else.

    The rule, for exceptions raised inside ignite's engine or its data loader (the handler of
    ``Events.EXCEPTION_RAISED`` asks this, see :class:`~wss_monai.engine.recording.MLflowTracker`):

    - :class:`BundleInputError` (already printed by :func:`fail`), :class:`UserDataError` and
      the data package's ``DatasetError``: ours, raised on purpose for bad user files;
    - ``OSError`` (a slice file deleted, unreadable, on a disk that went away; a full disk): the
      file system, never a mistake in our logic;
    - ``ValueError`` only when its message starts with the path of an existing file
      (``<path>: expected a 2D slice...``, the convention of :mod:`wss_monai.data.transforms`):
      our code checked a file and refused it. Any other ``ValueError`` (a NumPy broadcast, a
      bad argument between our own functions) is a bug, as is every ``TypeError``,
      ``RuntimeError``, ``KeyError``...: those keep their traceback, which is what a bug report needs.

    An error re-raised from a DataLoader worker (its message embeds the worker's traceback) is
    judged on the worker's original message, and that message is what is returned. The chain of
    MONAI's ``applying transform`` wrappers is followed to the error inside.
    """
    while (isinstance(error, RuntimeError) and str(error).startswith("applying transform")
           and isinstance(error.__cause__, BaseException)):
        error = error.__cause__
    if isinstance(error, BundleInputError):
        return error.message
    try:
        from wss_monai.data.prepared import DatasetError
    except ImportError:  # pragma: no cover - the data package is part of wss_monai
        DatasetError = UserDataError  # noqa: N806
    message = " ".join(_worker_message(error).split())
    if isinstance(error, (UserDataError, DatasetError)):
        return message or type(error).__name__
    if isinstance(error, OSError):
        filename = getattr(error, "filename", None)
        if filename and getattr(error, "strerror", None):  # "<file>: No such file or directory", the file first
            return f"{filename}: {error.strerror}"
        return message or type(error).__name__
    if type(error) is ValueError and _names_a_file(message):
        return message
    return None


def end_for_user(error: BaseException, user_message: str | None) -> None:
    """Re-raise ``error``, or, for a user data error, end with its one line (exit 2; :func:`fail` prints it once)."""
    if user_message is not None and not isinstance(error, SystemExit):
        fail(user_message)
    raise error


class _OneLineEngineErrors(logging.Filter):
    """Keep ignite's "... terminating due to exception: <error>" log line to one line.

    For an error from a DataLoader worker that message is the worker's whole traceback as text,
    which would put a traceback on the screen even when the run ends with a one-line user error;
    the line keeps the worker's original message instead. A genuine bug still prints its own
    traceback when the run ends.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "terminating due to exception" in message and "\n" in message:
            head, _, error = message.partition("exception: ")
            lines = [line for line in error.splitlines() if line.strip()]
            if "Original Traceback" in error and lines:
                record.msg, record.args = f"{head}exception: {lines[0]} {lines[-1].strip()}", ()
            else:
                record.msg, record.args = f"{head}exception: {lines[0] if lines else ''}", ()
        return True


def shorten_engine_errors(engine: Any) -> None:
    """Put the one-line filter on an ignite engine's logger (once)."""
    log = getattr(engine, "logger", None)
    if isinstance(log, logging.Logger) and not any(isinstance(f, _OneLineEngineErrors) for f in log.filters):
        log.addFilter(_OneLineEngineErrors())
