"""Generate the cases of a phantom dataset, in parallel, into a folder that appears only when complete.

Each case draws from its own generator seeded by ``(seed, dataset, case index)``, so a case's
bytes depend neither on the number of workers nor on the order in which cases finish.
"""

from __future__ import annotations

import contextlib
import os
from concurrent.futures import as_completed
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from tqdm import tqdm

from data_prep.atomic import atomic_dir
from data_prep.workers import process_pool

#: Mixed into every case's seed so that the three datasets never share random streams.
STREAM = {"acdc": 1, "promise12": 2, "vertebral": 3}


def case_rng(dataset: str, seed: int, index: int) -> np.random.Generator:
    """The random generator of one case: a pure function of dataset, seed and case index."""
    return np.random.default_rng([int(seed), STREAM[dataset], int(index)])


def write_one(module_name: str, root: str, index: int, seed: int, config: Any) -> int:
    """Write case ``index`` with ``module.write_case`` (a top-level function so workers can pickle it)."""
    import importlib

    module = importlib.import_module(module_name)
    module.write_case(Path(root), index, case_rng(module.NAME, seed, index), config)
    return index


def generate_cases(module: ModuleType, out: Path, indices: list[int], seed: int, config: Any, workers: int,
                   overwrite: bool = False) -> Path:
    """Write every case of ``indices`` under ``out`` (atomically: a temporary sibling renamed at the end)."""
    workers = max(1, min(int(workers), len(indices)))
    progress = dict(total=len(indices), desc=f"phantom {module.NAME}", unit="case", disable=None)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        if workers == 1:
            for index in tqdm(indices, **progress):
                write_one(module.__name__, str(tmp), index, seed, config)
        else:
            # spawned (no inherited threads or locks from torch or the caller), killed with this process.
            with _single_threaded_children(), process_pool(workers) as pool:
                jobs = [pool.submit(write_one, module.__name__, str(tmp), i, seed, config) for i in indices]
                for job in tqdm(as_completed(jobs), **progress):
                    job.result()
        if hasattr(module, "finish"):
            module.finish(tmp, config)  # dataset-level files, once every case is there
    return out


@contextlib.contextmanager
def _single_threaded_children():
    """Each worker is one process on one core: keep its BLAS from starting threads of its own.

    The limit must be in the environment before a worker imports numpy, so it is set here in
    the parent (which children inherit) and restored once the pool is done.
    """
    names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update({name: "1" for name in names})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
