"""How the bundles report bad user input: one line on stderr and exit code 2 (DESIGN.md, "Errors").

MONAI's bundle runner (``python -m monai.bundle run``) wraps every ``Exception`` raised while a
config is resolved into a ``RuntimeError`` chain and prints its traceback. A ``SystemExit`` passes
through untouched, so :class:`BundleInputError` is one: :func:`fail` prints ``error: <message>``
once and raises it with code 2, and the process ends with exactly that line. Python code (tests,
pipelines) can catch it like any exception (``except BundleInputError``, or ``SystemExit``).
"""

from __future__ import annotations

import sys

__all__ = ["BundleInputError", "fail", "EXIT_BAD_INPUT"]

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
