"""One loss for every training regime: a weighted sum of terms built from a JSON-friendly config,
with hybrid routing (full cross-entropy on fully annotated samples, the weak terms on the rest)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from wss_monai.losses.partial_ce import CrossEntropy

__all__ = ["WeakSupervisionLoss", "build_term", "parse_terms_config"]


def build_term(term: Any, name: str = "term") -> nn.Module:
    """The loss module of one config entry's ``term``, instantiated with MONAI's component locator.

    ``term`` is, as in the bundle's regime tables, a MONAI component
    ``{"_target_": "wss_monai.losses.SizePenalty", "per_volume": true}`` (``"_mode_": "callable"``
    gives a class to call with no arguments), a dotted class path ``"wss_monai.losses.SizePenalty"``
    (built with no arguments), a class or a zero-argument callable returning the module, or a ready
    ``nn.Module``. ``name`` is the entry named in errors.
    """
    from monai.bundle import ConfigComponent

    if isinstance(term, nn.Module):
        return term
    if isinstance(term, str):
        term = {"_target_": term}
    if isinstance(term, Mapping):
        if "_target_" not in term:
            raise ValueError(f"loss config entry {name!r}: term must name its class as {{'_target_': 'package.module.Class', ...}}, got {dict(term)!r}.")
        component = ConfigComponent(dict(term))
        try:
            term = component.instantiate()
        except ModuleNotFoundError as err:
            raise ValueError(f"loss config entry {name!r}: {err}") from err
        except RuntimeError as err:
            raise TypeError(f"loss config entry {name!r}: bad args for {term['_target_']}: {str(err).splitlines()[0]}") from err
    if not isinstance(term, nn.Module) and callable(term):
        try:
            term = term()
        except TypeError as err:
            raise TypeError(f"loss config entry {name!r}: bad args for {getattr(term, '__name__', term)!r}: {err}") from err
    if not isinstance(term, nn.Module):
        raise TypeError(f"loss config entry {name!r}: term must give an nn.Module, got {type(term).__name__}.")
    return term



def read_json_config(config: Any) -> Any:
    """A loss config given as the path of a JSON file or as JSON text, parsed; anything else as it is."""
    if not isinstance(config, (str, os.PathLike)):
        return config
    text = str(config)
    if os.path.isfile(text):
        with open(text, encoding="utf-8") as fh:
            return json.load(fh)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"loss config is neither a JSON file nor JSON text: {text[:80]!r} ({err}).") from err

def parse_terms_config(config: Any) -> list[dict[str, Any]]:
    """Normalise a terms config into a list of ``{"name", "weight", "term", "key"}`` dicts.

    Accepted forms (plain JSON, the shape of the bundle's ``loss_terms`` tables):

    - a list of entries ``{"name": "size", "weight": 0.01, "term": {"_target_":
      "wss_monai.losses.SizePenalty", "per_volume": true}, "key": "size_tags"}`` (``weight``
      defaults to 1, ``key`` - the logging name - to ``name``; ``term`` as :func:`build_term`
      takes it, here or in Python a ready module);
    - a dict ``name -> {"weight": .., "term": ..}``;
    - a JSON string of either, or the path of a JSON file holding either (or holding
      ``{"terms": ...}``).

    The terms are not built here (``term`` is passed through).
    """
    config = read_json_config(config)
    if isinstance(config, Mapping) and set(config) == {"terms"}:
        config = config["terms"]
    entries: list[dict[str, Any]] = []
    if isinstance(config, Mapping):
        for name, spec in config.items():
            if not isinstance(spec, Mapping):
                raise ValueError(f"loss config entry {name!r}: expected {{'weight': .., 'term': {{'_target_': ..}}}}, got {spec!r}.")
            entries.append({"name": name, **spec})
    elif isinstance(config, (list, tuple)):
        for i, spec in enumerate(config):
            if not isinstance(spec, Mapping) or "name" not in spec:
                raise ValueError(f"loss config entry {i}: expected {{'name': ..., 'weight': ..., 'term': {{'_target_': ...}}}}, got {spec!r}.")
            entries.append(dict(spec))
    else:
        raise ValueError(f"loss config must be a list of terms or a dict name -> {{weight, term}}, got {type(config).__name__}.")
    out, seen = [], {}
    for entry in entries:
        unknown = set(entry) - {"name", "weight", "key", "term"}
        if unknown:
            raise ValueError(f"loss config entry {entry.get('name')!r}: unknown field(s) {sorted(unknown)}; allowed: name, weight, term, key.")
        if entry.get("term") is None:
            raise ValueError(f"loss config entry {entry['name']!r}: no term; give {{'_target_': 'package.module.Class', ...}}.")
        weight = entry.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise ValueError(f"loss config entry {entry['name']!r}: weight must be a number, got {weight!r}.")
        key = entry.get("key") or entry["name"]
        if key in seen:
            seen[key] += 1
            key = f"{key}_{seen[key]}"
        else:
            seen[key] = 1
        out.append({"name": entry["name"], "weight": float(weight), "key": key, "term": entry["term"]})
    return out


class WeakSupervisionLoss(nn.Module):
    r"""The loss of a training regime: ``sum_i w_i * term_i`` plus full CE on fully annotated samples.

    Config (JSON-friendly, see :func:`parse_terms_config`): each term names its class by
    ``_target_``, resolved by MONAI's component locator as in the bundle's regime tables, e.g. the
    paper's ``individual`` regime (MedIA 2019 eq. 2, lambda = 1e-2)::

        [{"name": "partial_ce", "weight": 1.0, "term": {"_target_": "wss_monai.losses.PartialCrossEntropy"}},
         {"name": "size", "weight": 0.01, "term": {"_target_": "wss_monai.losses.SizePenalty"}}]

    or ``{"size": {"weight": 0.01, "term": {"_target_": "wss_monai.losses.SizePenalty",
    "per_volume": true}}}`` (regime ``volume3d``). Any ``nn.Module`` taking ``(probs, **batch)``
    is a term: your own class by its dotted path, or a ready module in Python.

    Call: ``loss(probs, batch)`` or ``loss(probs, **batch)`` with the batch keys of the term
    contract (``weak`` (B, H, W), ``bounds`` (B, C, 2), ``image``, ``volume`` (B,), ...).
    ``probs`` are softmax probabilities (B, C, H, W); with ``softmax=True`` the input is logits
    and the softmax is taken here (in float32), which lets MONAI's ``SupervisedTrainer`` call
    ``loss_function(pred_logits, batch_dict)`` directly.

    Routing (hybrid batches, MedIA 2019 sec. 4.3.3): if the batch has the per-sample flag
    ``full_key`` (B,) (bool or 0/1), flagged samples get the full cross-entropy against
    ``label_key`` (B, H, W) - read for those samples only, the full mask of a weak sample is
    never read - and the weak terms run on the other samples (every tensor of the batch whose
    first dimension is B is indexed by the subset; others pass unchanged). Without the flag all
    samples are weak and ``label`` is never read. A term on an empty subset contributes 0.
    The result is ``full_weight * CE(full samples) + sum_i w_i term_i(weak samples)``.

    3D volume mode: a term with ``per_volume=True`` sums sizes over the slices of a volume in
    its subset; a volume split between full and weak samples would silently lose slices, so it
    raises ``ValueError`` (hybrid regimes flag whole patients).

    Logging: ``forward`` returns the 0-d total; :attr:`last_values` holds the detached,
    unweighted value of every term of the last call (keys = config ``key``/``name``, plus
    ``"full_ce"`` when routing ran, and ``"total"``); :meth:`terms` returns them as floats.
    :meth:`set_epoch` / :meth:`step_epoch` reach every term that has them (log-barrier t).

    Args:
        terms: the config (list, dict, JSON text or JSON file path).
        full_key: batch key of the per-sample "fully annotated" flag (default ``"full"``).
        label_key: batch key of the full masks (default ``"label"``).
        full_weight: weight of the full cross-entropy on flagged samples.
        softmax: apply a softmax to the input (logits in).
        shared_keys: batch keys never indexed by the subset, even if their first dim equals B.

    Example::

        >>> import torch
        >>> from wss_monai.losses import PartialCrossEntropy, SizePenalty
        >>> loss = WeakSupervisionLoss([{"name": "partial_ce", "term": PartialCrossEntropy()},
        ...                             {"name": "size", "weight": 0.01, "term": {"_target_": "wss_monai.losses.SizePenalty"}}])
        >>> probs = torch.softmax(torch.randn(2, 2, 16, 16), dim=1)
        >>> weak = torch.full((2, 16, 16), 255); weak[:, 7:9, 7:9] = 1
        >>> bounds = torch.tensor([[[0, float("inf")], [20, 40]]] * 2, dtype=torch.float32)
        >>> total = loss(probs, weak=weak, bounds=bounds)
        >>> sorted(loss.terms())
        ['partial_ce', 'size', 'total']
    """

    def __init__(
        self,
        terms: Any,
        full_key: str = "full",
        label_key: str = "label",
        full_weight: float = 1.0,
        softmax: bool = False,
        shared_keys: tuple[str, ...] | list[str] = (),
    ) -> None:
        super().__init__()
        entries = parse_terms_config(terms)
        self.keys: list[str] = []
        self.weights: dict[str, float] = {}
        self.names: dict[str, str] = {}
        self.term_modules = nn.ModuleDict()
        for entry in entries:
            module = build_term(entry["term"], entry["name"])
            self.term_modules[entry["key"]] = module
            self.keys.append(entry["key"])
            self.weights[entry["key"]] = entry["weight"]
            self.names[entry["key"]] = entry["name"]
        self.full_key = full_key
        self.label_key = label_key
        self.full_weight = float(full_weight)
        self.softmax = bool(softmax)
        self.shared_keys = tuple(shared_keys)
        self.full_term = CrossEntropy(label_key=label_key)
        self.last_values: dict[str, torch.Tensor] = {}

    @classmethod
    def from_config(cls, config: Any, **kwargs) -> "WeakSupervisionLoss":
        """Build from a config: the terms config itself, or ``{"terms": ..., <constructor kwargs>}``."""
        config = read_json_config(config)
        if isinstance(config, Mapping) and "terms" in config:
            options = {k: v for k, v in config.items() if k != "terms"}
            return cls(config["terms"], **{**options, **kwargs})
        return cls(config, **kwargs)

    def __getitem__(self, key: str) -> nn.Module:
        return self.term_modules[key]

    def set_epoch(self, epoch: int) -> None:
        """Forward the epoch to every term that has ``set_epoch`` (e.g. the log-barrier's t)."""
        for module in self.term_modules.values():
            if hasattr(module, "set_epoch"):
                module.set_epoch(epoch)

    def step_epoch(self) -> None:
        """Advance every term that has ``step_epoch`` by one epoch."""
        for module in self.term_modules.values():
            if hasattr(module, "step_epoch"):
                module.step_epoch()

    def terms(self) -> dict[str, float]:
        """The unweighted value of each term (and ``"full_ce"``, ``"total"``) of the last call, as floats."""
        return {k: float(v) for k, v in self.last_values.items()}

    @staticmethod
    def _subset(batch: Mapping[str, Any], index: torch.Tensor, size: int, shared: tuple[str, ...]) -> dict[str, Any]:
        out = {}
        for key, value in batch.items():
            if key not in shared and isinstance(value, torch.Tensor) and value.dim() >= 1 and value.shape[0] == size:
                out[key] = value.index_select(0, index.to(value.device))
            else:
                out[key] = value
        return out

    def forward(self, probs: torch.Tensor, batch: Mapping[str, Any] | None = None, **kwargs) -> torch.Tensor:
        if batch is not None and not isinstance(batch, Mapping):
            raise TypeError(
                f"WeakSupervisionLoss: the second argument must be the batch dict (keys weak, bounds, ...), "
                f"got {type(batch).__name__}; pass tensors as keywords instead."
            )
        batch = {**(batch or {}), **kwargs}
        if not isinstance(probs, torch.Tensor) or probs.dim() != 4:
            raise ValueError(f"WeakSupervisionLoss expects probs of shape (B, C, H, W), got {getattr(probs, 'shape', type(probs))}.")
        if self.softmax:
            probs = torch.softmax(probs if probs.dtype == torch.float64 else probs.float(), dim=1)
        b = probs.shape[0]
        values: dict[str, torch.Tensor] = {}
        total = probs.sum() * 0.0  # keeps the graph (and a zero gradient) when nothing applies
        full = batch.get(self.full_key)
        weak_batch, weak_probs = batch, probs
        if full is not None:
            full = torch.as_tensor(full, device=probs.device)
            if full.dim() == 2 and full.shape[1] == 1:  # MONAI collates per-sample scalars as (B,) or (B, 1)
                full = full[:, 0]
            if tuple(full.shape) != (b,):
                raise ValueError(f"WeakSupervisionLoss: batch key '{self.full_key}' must have shape (B,) = ({b},), got {tuple(full.shape)}.")
            full = full.bool()
            full_idx = full.nonzero().flatten()
            weak_idx = (~full).nonzero().flatten()
            self._check_volumes(batch, full, b)
            if full_idx.numel():
                label = batch.get(self.label_key)
                if label is None:
                    raise ValueError(
                        f"WeakSupervisionLoss: samples flagged '{self.full_key}' need their full masks in the batch key '{self.label_key}'."
                    )
                label = torch.as_tensor(label)
                if label.dim() < 1 or label.shape[0] != b:
                    raise ValueError(f"WeakSupervisionLoss: batch key '{self.label_key}' must have the batch size {b} as first dimension, got {tuple(label.shape)}.")
                ce = self.full_term(probs.index_select(0, full_idx), **{self.label_key: label.index_select(0, full_idx.to(label.device))})
            else:
                ce = total
            values["full_ce"] = ce
            total = total + self.full_weight * ce
            weak_batch = {k: v for k, v in batch.items() if k not in (self.full_key, self.label_key)}
            weak_batch = self._subset(weak_batch, weak_idx, b, self.shared_keys)
            weak_probs = probs.index_select(0, weak_idx)
        for key in self.keys:
            if weak_probs.shape[0] == 0:
                value = probs.sum() * 0.0
            else:
                value = self.term_modules[key](weak_probs, **weak_batch)
            values[key] = value
            total = total + self.weights[key] * value
        values["total"] = total
        self.last_values = {k: v.detach() for k, v in values.items()}
        return total

    def _check_volumes(self, batch: Mapping[str, Any], full: torch.Tensor, b: int) -> None:
        if not any(getattr(m, "per_volume", False) for m in self.term_modules.values()):
            return
        volume = batch.get("volume")
        if volume is None or b == 0:
            return
        volume = torch.as_tensor(volume, device=full.device)
        if volume.shape != (b,):
            return  # the term itself reports the bad shape
        mixed = set(volume[full].tolist()) & set(volume[~full].tolist())
        if mixed:
            raise ValueError(
                f"WeakSupervisionLoss: volume(s) {sorted(mixed)} have both fully annotated and weak slices in one batch; "
                f"a per_volume term would sum only the weak slices. Flag whole volumes as '{self.full_key}'."
            )
