"""Training regimes by name: the regime table of the bundle's ``train.json``, and its name syntax.

The names are one of the contracts of ``docs/ARCHITECTURE.md``.

The regimes are JSON: ``bundles/wss_segmentation/configs/train.json`` holds a table ``"regimes"``
(base regime name -> ``bounds``, ``sampling``, ``full``, ``routing`` and ``loss_terms``, each term a
weight and a ``_target_`` loss class) and a table ``"regularizers"`` (name -> one term). Adding
or editing an entry, in that file or in an overlay (``{"regimes#mine": {...}}`` passed as a second
``--config_file``), changes training without Python. This module only reads a name
(a **contract**: bundle configs, MLflow run names and report rows use it) against the tables and
returns a :class:`RegimeSpec`.

Names: a key of ``"regimes"`` (``individual``), ``hybrid_<n>`` / ``full_<n>`` (the entries
``"hybrid_<n>"`` / ``"full_<n>"`` with n fully annotated patients), then any number of
``+<regularizer>`` (``individual+gated_crf``, ``partial+dense_crf+entropy``).

Base regimes of the shipped table (Kervadec et al., MedIA 2019; lambda = 1e-2 for every constraint term on 256 x 256 slices,
scaled with the slice area on other sizes by :func:`size_weight`):

=========================  ==========  ========  ============================  ==============================================
name                       bounds      sampling  full masks                    loss
=========================  ==========  ========  ============================  ==============================================
``full``                   -           slices    every training slice          cross_entropy
``partial``                -           slices    none                          partial_ce
``tags``                   tags        slices    none                          partial_ce + 0.01 size
``upper``                  upper       slices    none                          partial_ce + 0.01 size
``common``                 common      slices    none                          partial_ce + 0.01 size
``individual``             individual  slices    none                          partial_ce + 0.01 size
``lagrangian_<rule>``      <rule>      slices    none                          lagrangian (CE on the proposals)
``logbarrier_individual``  individual  slices    none                          partial_ce + 0.01 log_barrier
``volume3d``               volume3d    volume    none                          partial_ce + 0.01 size(per_volume, mean slice)
``hybrid_<n>``             common      hybrid    n patients, the rest weak     full CE on them + partial_ce + 0.01 size
``full_<n>``               -           slices    n patients, used alone        cross_entropy
=========================  ==========  ========  ============================  ==============================================

Example::

    >>> spec = get_regime("individual+gated_crf")                  # the repository bundle's tables
    >>> spec.bounds, spec.sampling, [t["name"] for t in spec.terms]
    ('individual', 'slices', ['partial_ce', 'size', 'gated_crf'])
    >>> loss = spec.build_loss()          # WeakSupervisionLoss taking logits, (logits, batch)

Unknown names raise :class:`UnknownRegimeError` (a ``ValueError``) listing the valid ones; a table
entry with a bad weight or a term that is not a loss class raises :class:`RegimeTableError`.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

__all__ = [
    "LAMBDA",
    "BUNDLE",
    "RegimeSpec",
    "UnknownRegimeError",
    "RegimeTableError",
    "get_regime",
    "regime_names",
    "regime_tables",
    "dense_crf_weight",
    "size_weight",
]

LAMBDA = 1e-2
"""Weight of the size-constraint terms on 256 x 256 slices (MedIA 2019: lambda = 1e-2); see :func:`size_weight`."""

DENSE_CRF_REFERENCE_WEIGHT = 2e-9
"""The DenseCRF loss weight of Tang et al.'s code, on an energy that is not divided by the pixel count."""

DEFAULT_IMAGE_SIZE = (256, 256)
"""Slice size assumed when a weight depends on it and no size is given (the papers')."""

BUNDLE = "wss_segmentation"
"""The bundle that runs every regime."""

TRAIN_JSON = Path(__file__).resolve().parents[1] / "bundles" / BUNDLE / "configs" / "train.json"
"""The repository bundle's train.json, whose tables :func:`get_regime` reads when given none."""

SAMPLINGS = ("slices", "volume", "hybrid")
PATTERNS = {"hybrid_<n>": re.compile(r"^hybrid_(\d+)$"), "full_<n>": re.compile(r"^full_(\d+)$")}
ENTRY_KEYS = {"bounds", "sampling", "full", "routing", "loss_terms", "description"}


class UnknownRegimeError(ValueError):
    """A regime name that is not one of :func:`regime_names` (the message lists them)."""


class RegimeTableError(ValueError):
    """A regime or regularizer entry that cannot be trained: a bad weight, a term that is not a loss class."""


def dense_crf_weight(image_size: Sequence[int] | None = None, scale_factor: float = 0.5) -> float:
    """Tang et al.'s DenseCRF weight (2e-9 on an unnormalised energy) for our per-pixel energy.

    :class:`~wss_monai.losses.DenseCRFLoss` divides the energy by the N pixels where it is
    evaluated, so the reference weight becomes ``2e-9 * N``; N = (H * scale) * (W * scale)
    (at 256 x 256 with scale 0.5: 128 * 128 * 2e-9 = 3.3e-5).
    """
    h, w = image_size or DEFAULT_IMAGE_SIZE
    n = max(1, round(h * scale_factor)) * max(1, round(w * scale_factor))
    return DENSE_CRF_REFERENCE_WEIGHT * n


def size_weight(image_size: Sequence[int] | None = None) -> float:
    """The papers' size-penalty weight carried over to slices of ``image_size`` (H, W): ``1e-2 * 256^2 / (H * W)``.

    The penalty is ``lambda * (V - bound)^2 / (H * W)`` with sizes in pixels (the reference
    normalisation). A given *relative* size error costs ``H * W`` times more on a larger slice,
    while the partial cross-entropy (a mean over seed pixels) does not change with the
    resolution. lambda = 1e-2 was set on the papers' 256 x 256 slices; to keep the same balance
    between the two terms on other slice sizes the weight is scaled by ``256^2 / (H * W)``
    (1e-2 at 256 x 256, 0.04 at 128 x 128, 0.16 at 64 x 64, 0.284 at 48 x 48). Measured on the
    ACDC-layout phantom at 48 x 48 (2.5 CPU-minutes, ``individual``): validation 3D Dice 0.82 with
    the scaled weight, 0.77 with 1e-2.
    """
    h, w = image_size or DEFAULT_IMAGE_SIZE
    return LAMBDA * (DEFAULT_IMAGE_SIZE[0] * DEFAULT_IMAGE_SIZE[1]) / float(max(1, int(h) * int(w)))


@functools.lru_cache(maxsize=8)
def _raw_tables(path: str) -> tuple[str, str]:
    config = json.loads(Path(path).read_text())
    return json.dumps(config.get("regimes", {})), json.dumps(config.get("regularizers", {}))


def regime_tables(image_size: Sequence[int] | None = None, path: str | Path = TRAIN_JSON) -> tuple[dict, dict]:
    """The ``"regimes"`` and ``"regularizers"`` tables of a train.json, resolved by MONAI's parser.

    Weights that depend on the slice size read ``@image_size`` (default: the papers' 256 x 256).
    Terms are ``_mode_: callable`` components: classes with their arguments, built per run.
    """
    from monai.bundle import ConfigParser

    regimes, regularizers = _raw_tables(str(path))
    size = [int(v) for v in (image_size or DEFAULT_IMAGE_SIZE)]
    parser = ConfigParser({"image_size": size, "regimes": json.loads(regimes), "regularizers": json.loads(regularizers)},
                          globals={"wss_monai": "wss_monai", "torch": "torch"})
    try:
        return parser.get_parsed_content("regimes"), parser.get_parsed_content("regularizers")
    except Exception as err:  # an unknown _target_, a broken expression
        raise RegimeTableError(f"{path}: the regime tables cannot be read ({_root_cause(err)})") from None


def _root_cause(err: BaseException) -> str:
    while err.__cause__ is not None:
        err = err.__cause__
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def __getattr__(name: str) -> Any:
    """``BASE_REGIMES`` / ``REGULARIZERS``: the names in the repository bundle's tables (read when asked)."""
    if name in ("BASE_REGIMES", "REGULARIZERS"):
        regimes, regularizers = (json.loads(t) for t in _raw_tables(str(TRAIN_JSON)))
        if name == "REGULARIZERS":
            return tuple(regularizers)
        return tuple(k for k in regimes if "<" not in k)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def regime_names(regimes: Mapping[str, Any] | None = None) -> list[str]:
    """Every valid regime form, for messages and docs (``<n>``: a number of patients)."""
    names = list(regimes if regimes is not None else json.loads(_raw_tables(str(TRAIN_JSON))[0]))
    return [*names, "<regime>+<regularizer>"]


def _term(where: str, name: str, entry: Any) -> dict[str, Any]:
    """A checked term of a table: ``{"name", "weight", "term"}`` (``term``: a class or partial)."""
    if not isinstance(entry, Mapping) or set(entry) - {"weight", "term"} or "term" not in entry:
        raise RegimeTableError(f"{where}: term {name!r} must be {{'weight': number, 'term': {{'_target_': ..., '_mode_': 'callable'}}}}, got {entry!r}.")
    weight = entry.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
        raise RegimeTableError(f"{where}: term {name!r} has weight {weight!r}; a weight is a finite number >= 0.")
    term = entry["term"]
    target = getattr(term, "func", term)
    import torch

    if not (isinstance(target, type) and issubclass(target, torch.nn.Module)):
        raise RegimeTableError(f"{where}: term {name!r} is {term!r}, not a loss class (a _target_ with \"_mode_\": \"callable\").")
    return {"name": str(name), "weight": float(weight), "term": term}


@dataclass(frozen=True)
class RegimeSpec:
    """Everything a training run needs to know about its regime.

    Attributes:
        name: the regime name as given (``individual+gated_crf``).
        base: the regime without regularizers (``individual``).
        regularizers: the added regularizer names.
        weak: weak-label strategy to read, or None for the dataset's primary one.
        bounds: size-bound rule (``tags``, ``upper``, ``common``, ``individual``, ``volume3d``) or None.
        sampling: ``slices`` (random slices), ``volume`` (one batch = one volume) or ``hybrid``.
        full_patients: number of fully annotated training patients (``hybrid_<n>``, ``full_<n>``).
        full: every training sample is fully annotated (``full``, ``full_<n>``: then only the n
            patients are used).
        terms: ``{"name", "weight", "term"}`` per loss term (``term``: the loss class with its
            arguments, from the table's ``_target_``).
        routing: full cross-entropy on the samples flagged ``full`` (hybrid batches).
        bundle: the bundle that runs this regime.
    """

    name: str
    base: str
    regularizers: tuple[str, ...] = ()
    weak: str | None = None
    bounds: str | None = None
    sampling: str = "slices"
    full_patients: int = 0
    full: bool = False
    terms: tuple[Mapping[str, Any], ...] = ()
    routing: bool = False
    bundle: str = BUNDLE

    @property
    def uses_labels(self) -> bool:
        """Whether training batches carry full masks (full CE on some or all samples)."""
        return self.full or self.routing

    @property
    def batch_keys(self) -> tuple[str, ...]:
        """The batch keys the loss reads (moved to the device by the batch preparation)."""
        keys = ["weak", "bounds", "volume", "spacing"]
        if self.full:
            keys.append("label")
        if self.routing:
            keys += ["label", "full"]
        return tuple(keys)

    def instantiate_terms(self) -> list[dict[str, Any]]:
        """``{"name", "weight", "term": <new loss module>}`` per term: ``WeakSupervisionLoss``'s ``terms``."""
        return [{"name": t["name"], "weight": t["weight"], "term": t["term"]()} for t in self.terms]

    def build_loss(self, softmax: bool = True):
        """The regime's :class:`~wss_monai.losses.WeakSupervisionLoss` (logits in with ``softmax=True``)."""
        from wss_monai.losses import WeakSupervisionLoss

        return WeakSupervisionLoss(self.instantiate_terms(), full_key="full", softmax=softmax)

    def dataloader_kwargs(self) -> dict[str, Any]:
        """The ``make_dataloader`` keywords of the training split."""
        return {"weak": self.weak, "bounds": self.bounds, "sampling": self.sampling, "full_patients": self.full_patients, "full": self.full}

    def with_weak(self, weak: str | None) -> "RegimeSpec":
        return replace(self, weak=weak)

    def with_terms(self, loss_terms: Mapping[str, Any]) -> "RegimeSpec":
        """The same regime with its terms replaced (a config's ``loss_terms``: name -> {weight, term})."""
        if not isinstance(loss_terms, Mapping) or not loss_terms:
            raise RegimeTableError(f"loss_terms must map term names to {{'weight', 'term'}}, got {loss_terms!r}.")
        return replace(self, terms=tuple(_term("loss_terms", k, v) for k, v in loss_terms.items()))

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly (logged under ``resolved.spec``): a term's class as ``module.Class``, its arguments as ``args``."""
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "terms"}
        out["regularizers"] = list(self.regularizers)
        terms = []
        for t in self.terms:
            target = getattr(t["term"], "func", t["term"])
            args = dict(getattr(t["term"], "keywords", {}) or {})
            terms.append({"name": t["name"], "weight": t["weight"], "target": f"{target.__module__}.{target.__qualname__}", "args": args})
        out["terms"] = terms
        return out


def _unknown(name: str, why: str, regimes: Mapping, regularizers: Mapping) -> UnknownRegimeError:
    return UnknownRegimeError(
        f"unknown regime {name!r} ({why}); valid: {', '.join(regime_names(regimes))} "
        f"with <regularizer> one of {', '.join(regularizers)}."
    )


def get_regime(
    name: str,
    regimes: Mapping[str, Any] | None = None,
    regularizers: Mapping[str, Any] | None = None,
    *,
    weak: str | None = None,
    image_size: Sequence[int] | None = None,
) -> RegimeSpec:
    """The :class:`RegimeSpec` of a regime name, read against the tables.

    Args:
        name: ``individual``, ``hybrid_5``, ``partial+dense_crf``, ``individual+gated_crf+entropy``...
        regimes, regularizers: the resolved tables (a bundle passes ``@regimes``,
            ``@regularizers``); None: the repository bundle's (:func:`regime_tables`).
        weak: weak-label strategy (None: the dataset's primary one, decided by the caller).
        image_size: (H, W) of the slices, for the weights that depend on it, when the tables are
            read here; None: the papers' 256 x 256.

    Raises:
        UnknownRegimeError: the name is not valid (the message lists the valid names).
        RegimeTableError: the entry has an unknown field, a bad weight or a term that is not a loss.
    """
    if regimes is None or regularizers is None:
        table_regimes, table_regularizers = regime_tables(image_size)
        regimes = table_regimes if regimes is None else regimes
        regularizers = table_regularizers if regularizers is None else regularizers
    if not isinstance(name, str) or not name.strip():
        raise _unknown(str(name), "empty", regimes, regularizers)
    text = name.strip()
    base, *regs = text.split("+")
    key, n = base, 0
    if base not in regimes:
        for pattern_key, pattern in PATTERNS.items():
            match = pattern.match(base)
            if match and pattern_key in regimes:
                key, n = pattern_key, int(match.group(1))
                if n < 1:
                    raise _unknown(text, f"{pattern_key} needs n >= 1 patients", regimes, regularizers)
                break
        else:
            raise _unknown(text, f"no base regime {base!r}", regimes, regularizers)
    entry = regimes[key]
    where = f"regime {key!r}"
    if not isinstance(entry, Mapping) or set(entry) - ENTRY_KEYS:
        raise RegimeTableError(f"{where}: unknown field(s) {sorted(set(entry) - ENTRY_KEYS) if isinstance(entry, Mapping) else entry!r}; allowed: {', '.join(sorted(ENTRY_KEYS))}.")
    sampling = entry.get("sampling", "slices")
    if sampling not in SAMPLINGS:
        raise RegimeTableError(f"{where}: sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}.")
    loss_terms = entry.get("loss_terms") or {}
    if not isinstance(loss_terms, Mapping) or not loss_terms:
        raise RegimeTableError(f"{where}: loss_terms must map term names to {{'weight', 'term'}}, got {loss_terms!r}.")
    terms = [_term(where, k, v) for k, v in loss_terms.items()]
    for i, reg in enumerate(regs):
        if reg not in regularizers:
            raise _unknown(text, f"no regularizer {reg!r}", regimes, regularizers)
        if reg in regs[:i]:
            raise _unknown(text, f"regularizer {reg!r} given twice", regimes, regularizers)
        terms.append(_term(f"regularizer {reg!r}", reg, regularizers[reg]))
    return RegimeSpec(
        name=text,
        base=base,
        regularizers=tuple(regs),
        weak=weak,
        bounds=entry.get("bounds"),
        sampling=sampling,
        full_patients=n,
        full=bool(entry.get("full", False)),
        routing=bool(entry.get("routing", False)),
        terms=tuple(terms),
    )
