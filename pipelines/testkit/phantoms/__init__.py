"""Synthetic raw datasets ("phantoms") written in the exact on-disk layouts of ACDC, PROMISE12
and the vertebral-body MR dataset, so the converters, tests and demo run without the real data.

Command line: ``python -m pipelines.testkit.phantoms {acdc,promise12,vertebral} --out RAW``
(:mod:`~pipelines.testkit.phantoms.cli`); a figure of each: ``python -m
pipelines.testkit.phantoms.preview``.

>>> from pipelines.testkit.phantoms import generate
>>> root = generate("acdc", "raw/acdc", cases=4, small=True)      # doctest: +SKIP

The same ``seed`` gives byte-identical files whatever the number of ``workers``. ``small``
gives tiny volumes for tests; ``inplane``, ``slices`` (and, for ACDC, ``frames``) fix sizes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from data_prep.atomic import clean_stale
from data_prep.errors import InputError
from pipelines.testkit.phantoms import acdc, promise12, vertebral
from pipelines.testkit.phantoms.runner import generate_cases

DATASETS = {"acdc": acdc, "promise12": promise12, "vertebral": vertebral}

#: Largest case count each naming scheme can express (patientXXX, CaseNN, Img_XX).
MAX_CASES = {"acdc": 999, "promise12": 100, "vertebral": 99}
#: Smallest sizes that still give a drawable anatomy.
MIN_SIZE = {"inplane": 16, "slices": 3, "frames": 2}


def first_index(dataset: str) -> int:
    """PROMISE12 numbers its cases from 00; the others from 1."""
    return 0 if dataset == "promise12" else 1


def generate(dataset: str, out: str | Path, cases: int | None = None, seed: int = 0, small: bool = False,
             workers: int = 1, overwrite: bool = False, annotator: int | None = None, **overrides) -> Path:
    """Write a phantom of ``dataset`` under ``out`` and return ``out``.

    ``cases`` defaults to the real dataset's training count (ACDC 100, PROMISE12 50,
    vertebral 23). ``out`` must not exist or be an empty folder unless ``overwrite``; it appears
    only once complete. ``annotator`` (ACDC only): write annotator-like annotations and keep full
    masks for the last ``annotator`` patients only (see :mod:`pipelines.testkit.phantoms.annotator`).
    Bad arguments raise :class:`~data_prep.errors.InputError`.
    """
    if dataset not in DATASETS:
        raise InputError(None, f"unknown phantom dataset {dataset!r}; choose from {', '.join(DATASETS)}")
    module = DATASETS[dataset]
    out = Path(out)
    count = module.DEFAULT_CASES if cases is None else int(cases)
    if not 1 <= count <= MAX_CASES[dataset]:
        raise InputError(out, f"--cases must be between 1 and {MAX_CASES[dataset]} for {dataset}, got {count}")
    if int(workers) < 1:
        raise InputError(out, f"--workers must be at least 1, got {workers}")
    config = _config(module, out, small, overrides)
    if annotator is not None:
        if dataset != "acdc":
            raise InputError(out, "--annotator applies to acdc only")
        if not 0 <= int(annotator) <= count:
            raise InputError(out, f"--annotator keeps full masks for 0 to {count} patients, got {annotator}")
        start = first_index(dataset)
        config = dataclasses.replace(config, annotator=True, masked_from=start + count - int(annotator))
    clean_stale(out)  # temporaries of killed runs (see data_prep.atomic)
    replace = _check_destination(out, overwrite)
    start = first_index(dataset)
    return generate_cases(module, out, list(range(start, start + count)), int(seed), config, int(workers),
                          overwrite=replace)


def _config(module, out: Path, small: bool, overrides: dict):
    known = {f.name for f in dataclasses.fields(module.Config)}
    for name, value in overrides.items():
        if name not in known or name not in MIN_SIZE:
            options = ", ".join(sorted(known & set(MIN_SIZE)))
            raise InputError(out, f"{module.NAME} phantom has no size option {name!r} (it has: {options})")
        if value is not None and int(value) < MIN_SIZE[name]:
            raise InputError(out, f"--{name} must be at least {MIN_SIZE[name]}, got {value}")
    return module.Config.build(small, **{k: None if v is None else int(v) for k, v in overrides.items()})


def _check_destination(out: Path, overwrite: bool) -> bool:
    """True when an existing ``out`` is to be replaced; refuse to clobber anything by accident."""
    if not out.exists():
        return False
    if not out.is_dir():
        raise InputError(out, "exists and is not a folder")
    if any(out.iterdir()) and not overwrite:
        raise InputError(out, "already exists and is not empty (pass --overwrite to replace it)")
    return True


__all__ = ["DATASETS", "generate"]
