"""Worker processes that die with their parent.

A parent killed with SIGKILL cannot stop its workers; left alone, each would finish its current
volume, writing into a temporary folder that the next run is about to remove as stale (see
:mod:`data_prep.atomic`). On Linux each worker asks the kernel for SIGKILL when its parent dies
(``PR_SET_PDEATHSIG``, :mod:`wss_monai.processes`), so a killed run leaves no process behind.
Elsewhere workers exit when they next talk to the dead parent.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os

from wss_monai.processes import die_with_parent


def process_pool(workers: int) -> concurrent.futures.ProcessPoolExecutor:
    """A pool of ``workers`` spawned processes (not forked: the parent may hold torch/OpenMP threads
    that fork breaks) that die with this process."""
    return concurrent.futures.ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=die_with_parent,
        initargs=(os.getpid(),),
    )
