"""Seeded patient-level splits into training, validation and test.

Splitting by patient (never by volume or frame) keeps a patient's ED and ES frames on one side.
With groups (ACDC's pathology from Info.cfg) the split is stratified: patients are ordered so that
every prefix of the order holds each group in proportion, then the test and validation sets are
taken from the front. ACDC's IDs come in blocks of 20 per group, so an unstratified split by
consecutive IDs would be a split by pathology.
"""

from __future__ import annotations

import numpy as np

SPLITS = ("training", "validation", "test")


def resolve_count(value: str | float | int, n_patients: int) -> int:
    """A count from ``"25"`` (patients) or ``"0.25"`` (fraction of the patients, rounded half up)."""
    text = str(value).strip()
    if "." in text:
        fraction = float(text)
        if not 0 <= fraction < 1:
            raise ValueError(f"a fraction must be in [0, 1), got {text}")
        return int(np.floor(fraction * n_patients + 0.5))
    count = int(text)
    if count < 0:
        raise ValueError(f"a count must be >= 0, got {text}")
    return count


def split_patients(
    patients: list[str],
    n_val: int,
    n_test: int,
    seed: int,
    groups: dict[str, str] | None = None,
    fixed: dict[str, str] | None = None,
) -> dict[str, str]:
    """Map each patient to 'training', 'validation' or 'test'.

    ``fixed`` pins patients to a split (they count towards ``n_val`` / ``n_test``); the rest is
    drawn with ``seed``. At least one patient always stays in training.
    """
    patients = sorted(set(patients))
    fixed = dict(fixed or {})
    unknown = sorted(set(fixed) - set(patients))
    if unknown:
        raise ValueError(f"unknown patient(s) in the fixed split: {', '.join(unknown)}")
    need_test = max(0, n_test - sum(1 for s in fixed.values() if s == "test"))
    need_val = max(0, n_val - sum(1 for s in fixed.values() if s == "validation"))
    free = [p for p in patients if p not in fixed]
    n_training = len(free) - need_test - need_val + sum(1 for s in fixed.values() if s == "training")
    if n_training < 1:
        raise ValueError(
            f"{n_val} validation + {n_test} test patients leave none of the {len(patients)} for training"
        )
    order = _stratified_order(free, groups or {}, np.random.default_rng(seed))
    assignment = dict(fixed)
    for position, patient in enumerate(order):
        if position < need_test:
            assignment[patient] = "test"
        elif position < need_test + need_val:
            assignment[patient] = "validation"
        else:
            assignment[patient] = "training"
    return {p: assignment[p] for p in patients}


def _stratified_order(patients: list[str], groups: dict[str, str], rng: np.random.Generator) -> list[str]:
    """Shuffle within each group, then interleave groups by relative rank (proportional prefixes)."""
    by_group: dict[str, list[str]] = {}
    for patient in patients:
        by_group.setdefault(groups.get(patient, ""), []).append(patient)
    group_names = sorted(by_group)
    ranks = rng.permutation(len(group_names))
    group_rank = {name: int(ranks[i]) for i, name in enumerate(group_names)}
    keyed = []
    for name in group_names:
        members = sorted(by_group[name])
        shuffled = [members[i] for i in rng.permutation(len(members))]
        for rank, patient in enumerate(shuffled):
            # (rank + 0.5) / size spreads each group evenly over [0, 1); ties break by a shuffled group order.
            keyed.append(((rank + 0.5) / len(shuffled), group_rank[name], patient))
    return [patient for _, _, patient in sorted(keyed)]
