"""Training regimes by name: what data a regime reads and which loss it minimises.

A regime name (a **contract**: bundle configs, MLflow run names and report rows use it) maps to a
:class:`RegimeSpec`: the weak-label strategy, the size-bound rule, the loader's sampling, the
fully annotated patients, and the term list of :class:`~wss_monai.losses.WeakSupervisionLoss`.

Base regimes (Kervadec et al., MedIA 2019; lambda = 1e-2 for every constraint term on 256 x 256 slices,
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

(``<rule>`` is ``tags``, ``common`` or ``individual``.) A regime may add regularizers:
``<regime>+<regularizer>[+<regularizer>...]``, e.g. ``individual+gated_crf`` or
``partial+dense_crf``; their weights are in :data:`REGULARIZERS` (from the papers, see there).

Example::

    >>> spec = get_regime("individual+gated_crf")
    >>> spec.bounds, spec.sampling, [t["name"] for t in spec.terms]
    ('individual', 'slices', ['partial_ce', 'size', 'gated_crf'])
    >>> loss = spec.build_loss()          # WeakSupervisionLoss taking logits, (logits, batch)

Unknown names raise :class:`UnknownRegimeError` (a ``ValueError``) listing the valid ones.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

__all__ = [
    "LAMBDA",
    "BASE_REGIMES",
    "REGULARIZERS",
    "BUNDLE_REGIMES",
    "RegimeSpec",
    "UnknownRegimeError",
    "get_regime",
    "regime_names",
    "dense_crf_weight",
    "size_weight",
]

LAMBDA = 1e-2
"""Weight of the size-constraint terms on 256 x 256 slices (MedIA 2019: lambda = 1e-2); see :func:`size_weight`."""

DENSE_CRF_REFERENCE_WEIGHT = 2e-9
"""The DenseCRF loss weight of Tang et al.'s code, on an energy that is not divided by the pixel count."""

DEFAULT_IMAGE_SIZE = (256, 256)
"""Slice size assumed when a regularizer weight depends on it and no size is given (the papers')."""


class UnknownRegimeError(ValueError):
    """A regime name that is not one of :func:`regime_names` (the message lists them)."""


def _size_term(rule: str, per_volume: bool = False) -> dict[str, Any]:
    # 3D: the volume's mean slice size (see SizePenalty's volume_size): with the reference's summed
    # size the term outweighs the partial CE ~100-fold and the network collapses to background
    # (phantom, 48 x 48, 2.8 CPU-minutes: val 3D Dice 0.002 summed; 0.539 and 0.730 with the weight
    # divided by 10 and 100)
    args: dict[str, Any] = {"per_volume": True, "volume_size": "mean"} if per_volume else {}
    return {"name": "size", "weight": LAMBDA, "args": args}


PARTIAL_CE = {"name": "partial_ce", "weight": 1.0}
CROSS_ENTROPY = {"name": "cross_entropy", "weight": 1.0}

# name -> bounds rule, sampling (default slices), full flag, loss terms
BASE_REGIMES: dict[str, dict[str, Any]] = {
    "full": {"bounds": None, "full": True, "terms": [CROSS_ENTROPY]},
    "partial": {"bounds": None, "terms": [PARTIAL_CE]},
    "tags": {"bounds": "tags", "terms": [PARTIAL_CE, _size_term("tags")]},
    "upper": {"bounds": "upper", "terms": [PARTIAL_CE, _size_term("upper")]},
    "common": {"bounds": "common", "terms": [PARTIAL_CE, _size_term("common")]},
    "individual": {"bounds": "individual", "terms": [PARTIAL_CE, _size_term("individual")]},
    "lagrangian_tags": {"bounds": "tags", "terms": [{"name": "lagrangian", "weight": 1.0}]},
    "lagrangian_common": {"bounds": "common", "terms": [{"name": "lagrangian", "weight": 1.0}]},
    "lagrangian_individual": {"bounds": "individual", "terms": [{"name": "lagrangian", "weight": 1.0}]},
    "logbarrier_individual": {
        "bounds": "individual",
        "terms": [PARTIAL_CE, {"name": "log_barrier", "weight": LAMBDA, "args": {}}],
    },
    "volume3d": {"bounds": "volume3d", "sampling": "volume", "terms": [PARTIAL_CE, _size_term("volume3d", per_volume=True)]},
}
"""The fixed base regimes (``hybrid_<n>`` and ``full_<n>`` are parsed by :func:`get_regime`)."""

HYBRID_RE = re.compile(r"^hybrid_(\d+)$")
FULL_N_RE = re.compile(r"^full_(\d+)$")


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


def _dense_crf(image_size):
    return {
        "name": "dense_crf",
        "weight": dense_crf_weight(image_size),
        "args": {"sigma_xy": 80.0, "sigma_intensity": 15.0 / 255.0, "scale_factor": 0.5},
    }


def _normalized_cut(image_size):
    return {
        "name": "normalized_cut",
        "weight": 0.1,
        "args": {"sigma_xy": 80.0, "sigma_intensity": 15.0 / 255.0, "scale_factor": 0.5},
    }


def _kernel_cut(image_size):
    crf = dense_crf_weight(image_size)
    return {
        "name": "kernel_cut",
        "weight": crf,
        # gamma * weight = the normalized-cut weight: the two parts weigh what they weigh alone
        "args": {"sigma_xy": 80.0, "sigma_intensity": 15.0 / 255.0, "scale_factor": 0.5, "gamma": 0.1 / crf},
    }


def _gated_crf(image_size):
    return {
        "name": "gated_crf",
        "weight": 0.1,
        "args": {"kernels": [{"weight": 1.0, "xy": 6.0, "image": 0.1}], "radius": 5},
    }


def _entropy(image_size):
    return {"name": "entropy", "weight": 0.1, "args": {}}


REGULARIZERS: dict[str, Any] = {
    "gated_crf": _gated_crf,
    "dense_crf": _dense_crf,
    "normalized_cut": _normalized_cut,
    "kernel_cut": _kernel_cut,
    "entropy": _entropy,
}
"""Regularizer name -> term config (a function of the slice size (H, W)). Weights:

- ``gated_crf``: 0.1, one kernel {weight 1, xy 6, image 0.1}, radius 5 (Obukhov et al. 2019,
  on an image normalised to [0, 1], as the prepared images are);
- ``dense_crf``: Tang et al. (ECCV 2018): sigma_xy 80 px, sigma_rgb 15 on 0-255 (15/255 on our
  [0, 1] images), maps downscaled by 0.5, weight 2e-9 on their unnormalised energy, i.e.
  ``2e-9 * N`` on ours (N = pixels after downscaling: 3.3e-5 at 256 x 256), see
  :func:`dense_crf_weight`;
- ``normalized_cut``: 0.1 (the paper tunes it on validation and prints no value; our cut is per
  image in [0, K], not per pixel), same affinity as ``dense_crf``;
- ``kernel_cut``: DenseCRF + gamma * normalized cut with the two weights above
  (``weight = dense_crf weight``, ``gamma = 0.1 / weight``);
- ``entropy``: 0.1 on the entropy normalised by log C (WSL4MIS).
"""

BUNDLE_REGIMES: dict[str, str] = {
    "wss_size_2d": "full, partial, tags, upper, common, individual, lagrangian_tags, lagrangian_common, "
    "lagrangian_individual, logbarrier_individual",
    "wss_volume_3d": "volume3d",
    "wss_hybrid": "hybrid_<n>, full_<n>",
}
"""Which base regimes each bundle runs (any of them may take ``+<regularizer>``)."""


def _bundle_of(base: str) -> str:
    if base == "volume3d":
        return "wss_volume_3d"
    if HYBRID_RE.match(base) or FULL_N_RE.match(base):
        return "wss_hybrid"
    return "wss_size_2d"


def regime_names() -> list[str]:
    """Every valid regime form, for messages and docs (``<n>``: a number of patients)."""
    return [*BASE_REGIMES, "hybrid_<n>", "full_<n>", "<regime>+<regularizer>"]


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
        terms: the :class:`~wss_monai.losses.WeakSupervisionLoss` term config.
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
    bundle: str = "wss_size_2d"

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

    def loss_config(self) -> dict[str, Any]:
        """``{"terms": [...], "full_key": ...}``: the :meth:`WeakSupervisionLoss.from_config` config."""
        return {"terms": [copy.deepcopy(dict(t)) for t in self.terms], "full_key": "full"}

    def build_loss(self, softmax: bool = True, terms: Sequence[Mapping[str, Any]] | None = None):
        """The regime's :class:`~wss_monai.losses.WeakSupervisionLoss` (logits in with ``softmax=True``).

        ``terms`` replaces the regime's own term list (a config's ``loss_terms``).
        """
        from wss_monai.losses import WeakSupervisionLoss

        config = self.loss_config()
        if terms is not None:
            config["terms"] = [copy.deepcopy(dict(t)) for t in terms]
        return WeakSupervisionLoss.from_config(config, softmax=softmax)

    def dataloader_kwargs(self) -> dict[str, Any]:
        """The ``make_dataloader`` keywords of the training split."""
        return {
            "weak": self.weak,
            "bounds": self.bounds,
            "sampling": self.sampling,
            "full_patients": self.full_patients,
            "full": self.full,
        }

    def with_weak(self, weak: str | None) -> "RegimeSpec":
        return replace(self, weak=weak)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["regularizers"] = list(self.regularizers)
        out["terms"] = [dict(t) for t in self.terms]
        return out


def _unknown(name: str, why: str) -> UnknownRegimeError:
    return UnknownRegimeError(
        f"unknown regime {name!r} ({why}); valid: {', '.join(regime_names())} "
        f"with <regularizer> one of {', '.join(REGULARIZERS)}."
    )


def get_regime(
    name: str,
    *,
    weak: str | None = None,
    image_size: Sequence[int] | None = None,
    bundle: str | None = None,
) -> RegimeSpec:
    """The :class:`RegimeSpec` of a regime name.

    Args:
        name: ``individual``, ``hybrid_5``, ``partial+dense_crf``, ``individual+gated_crf+entropy``...
        weak: weak-label strategy (None: the dataset's primary one, decided by the loader's caller).
        image_size: (H, W) of the slices, for the weights that depend on it (size penalty, DenseCRF);
            None: the papers' 256 x 256.
        bundle: if given (``wss_size_2d``, ``wss_volume_3d``, ``wss_hybrid``), the regime must be
            one that bundle runs.

    Raises:
        UnknownRegimeError: the name is not valid, or belongs to another bundle (the message
            lists the valid names).
    """
    if not isinstance(name, str) or not name.strip():
        raise _unknown(str(name), "empty")
    text = name.strip()
    base, *regs = text.split("+")
    if base in BASE_REGIMES:
        entry = BASE_REGIMES[base]
        spec_args: dict[str, Any] = {
            "bounds": entry["bounds"],
            "sampling": entry.get("sampling", "slices"),
            "full": entry.get("full", False),
            "terms": [copy.deepcopy(t) for t in entry["terms"]],
        }
    elif HYBRID_RE.match(base):
        n = int(HYBRID_RE.match(base).group(1))
        if n < 1:
            raise _unknown(text, "hybrid_<n> needs n >= 1 fully annotated patients")
        spec_args = {
            "bounds": "common",
            "sampling": "hybrid",
            "full_patients": n,
            "routing": True,
            "terms": [dict(PARTIAL_CE), _size_term("common")],
        }
    elif FULL_N_RE.match(base):
        n = int(FULL_N_RE.match(base).group(1))
        if n < 1:
            raise _unknown(text, "full_<n> needs n >= 1 patients")
        spec_args = {"bounds": None, "sampling": "slices", "full_patients": n, "full": True, "terms": [dict(CROSS_ENTROPY)]}
    else:
        raise _unknown(text, f"no base regime {base!r}")
    for term in spec_args["terms"]:
        if term["name"] == "size":
            term["weight"] = size_weight(image_size)
    for i, reg in enumerate(regs):
        if reg not in REGULARIZERS:
            raise _unknown(text, f"no regularizer {reg!r}")
        if reg in regs[:i]:
            raise _unknown(text, f"regularizer {reg!r} given twice")
        spec_args["terms"].append(REGULARIZERS[reg](image_size))
    home = _bundle_of(base)
    if bundle is not None and bundle != home:
        runs = BUNDLE_REGIMES.get(bundle, "?")
        raise UnknownRegimeError(
            f"regime {text!r} is run by the bundle {home}, not {bundle} (which runs: {runs}, each optionally "
            f"+<regularizer> with <regularizer> one of {', '.join(REGULARIZERS)})."
        )
    return RegimeSpec(
        name=text,
        base=base,
        regularizers=tuple(regs),
        weak=weak,
        bundle=home,
        **{**spec_args, "terms": tuple(spec_args["terms"])},
    )
