"""Worker processes that die with their parent.

A parent killed with SIGKILL cannot stop its workers; left alone, each would finish its current
volume, writing into a temporary folder that the next run is about to remove as stale (see
:mod:`data_prep.atomic`). On Linux each worker asks the kernel for SIGKILL when its parent dies
(``PR_SET_PDEATHSIG``), so a killed run leaves no process behind. Elsewhere workers exit when
they next talk to the dead parent.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import multiprocessing
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """Pool initializer: be killed when the parent process dies (Linux), or exit if it already has."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):  # no prctl in this libc: fall back to the parent check
            pass
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(1)


def process_pool(workers: int) -> concurrent.futures.ProcessPoolExecutor:
    """A pool of ``workers`` spawned processes (not forked: the parent may hold torch/OpenMP threads
    that fork breaks) that die with this process."""
    return concurrent.futures.ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=die_with_parent,
        initargs=(os.getpid(),),
    )
