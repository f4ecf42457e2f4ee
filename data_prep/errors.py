"""User-facing errors of data preparation.

A problem with the user's input is raised as :class:`InputError` naming the file and the
problem; :func:`exit_on_input_error` turns it into one line on stderr and exit code 2
(never a traceback). Programming errors are not caught and keep their traceback.
"""

from __future__ import annotations

import functools
import re
import sys
from pathlib import Path
from typing import Callable, TypeVar

EXIT_BAD_INPUT = 2

F = TypeVar("F", bound=Callable[..., int])


class InputError(Exception):
    """Bad user input: ``path`` is the offending file or folder, ``problem`` says what is wrong."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(self.line())

    def __reduce__(self):
        # Exception pickling replays only ``args`` (the formatted line); workers send InputErrors
        # to the parent process, so rebuild from both fields.
        return (type(self), (self.path, self.problem))

    def line(self) -> str:
        """``<file>: <problem>`` on one line: control characters (a newline in a file name) are escaped."""
        text = f"{self.path}: {self.problem}" if self.path else self.problem
        return one_line(text)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def one_line(text: str) -> str:
    """``text`` with newlines, tabs and other control characters written as escapes (``\\n``)."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def exit_on_input_error(func: F) -> F:
    """Decorate a CLI entry point: an :class:`InputError` becomes ``error: <file>: <problem>`` and exit 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except InputError as err:
            print(f"error: {err.line()}", file=sys.stderr)
            return EXIT_BAD_INPUT
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130

    return wrapper  # type: ignore[return-value]
