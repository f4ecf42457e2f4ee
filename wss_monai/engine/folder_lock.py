"""One training at a time per output folder.

Two trainings started into the same ``--output_dir`` used to share it: the second cleared the
first's checkpoints and both crashed. :func:`lock_output_dir` takes an exclusive ``flock`` on
``<output_dir>/.training.lock`` for the life of the process (the kernel drops it when the process
ends, even on SIGKILL, so a killed run never leaves a stale lock) and refuses a second training
with one line. POSIX only; elsewhere it does nothing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO

from wss_monai.engine.errors import fail

__all__ = ["LOCK_FILE", "lock_output_dir"]

LOCK_FILE = ".training.lock"
_held: dict[str, IO[str]] = {}  # folder -> open lock file, kept open while this process trains there


def lock_output_dir(output_dir: str | os.PathLike) -> None:
    """Hold the training lock of ``output_dir`` until this process ends; stop (exit 2) if another holds it."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        return
    folder = Path(output_dir)
    key = str(folder.resolve())
    if key in _held:
        return
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / LOCK_FILE, "a+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        owner = handle.read().strip() or "another process"
        handle.close()
        fail(f"--output_dir {output_dir}: another training is writing there ({owner}); wait for it to end or choose "
             "another --output_dir.")
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}\n")
    handle.flush()
    _held[key] = handle
