"""Read network weights from a checkpoint file someone handed over, and say in one line why one does not fit.

``evaluate.json`` (``--ckpt_path`` or ``--output_dir``) and ``inference.json`` (``--ckpt_path``)
load a checkpoint the user names; it may be anything: a text file, a copy cut short, a pickle
that would run code, the weights of another network. ``torch.load`` then raises ``KeyError:
'101'``, a miniz error, or an ``UnpicklingError`` whose advice is to pass ``weights_only=False``,
which is exactly what must never be done with a file from someone else. Here every one of those
ends with one line naming the file and what is wrong with it (:func:`~wss_monai.engine.errors.fail`,
exit code 2); the file is always read with ``weights_only=True``, so nothing in it is executed.
"""

from __future__ import annotations

import os
import pickle
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from wss_monai.engine.errors import fail

__all__ = ["read_weights", "weights_problem", "fit_weights", "checkpoint_weights", "load_network"]

_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since PyTorch 1.6 is a zip archive


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _why_unreadable(path: Path, err: BaseException) -> str:
    """The reason ``torch.load(path, weights_only=True)`` failed, in the user's terms (no advice to drop weights_only)."""
    try:
        with open(path, "rb") as stream:
            head = stream.read(4)
    except OSError as read_err:
        return f"cannot read it ({_first_line(read_err)})"
    if not head:
        return "is empty; not a weights file (expected a torch.save file such as RUN/models/model.pt)"
    if head == _ZIP_MAGIC and not zipfile.is_zipfile(path):
        return "is truncated or damaged (an incomplete torch.save file); copy it again or use another checkpoint"
    if isinstance(err, pickle.UnpicklingError) and zipfile.is_zipfile(path):
        return ("holds Python objects besides tensors, which are not loaded because loading them could run code; "
                "a checkpoint of this bundle (models/model.pt) holds weights only")
    if isinstance(err, OSError):
        return f"cannot read it ({_first_line(err)})"
    return "is not a PyTorch weights file (expected a torch.save file such as RUN/models/model.pt)"


def _state_dict(obj: Any) -> Any:
    """The network weights in a loaded checkpoint: a state_dict, or the ``model``/``network``/``state_dict`` entry of a larger one."""
    if isinstance(obj, Mapping):
        for key in ("model", "network", "state_dict"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    return obj


def _without_ddp_prefix(state: Mapping[str, Any]) -> Mapping[str, Any]:
    """``state`` with the ``module.`` prefix of a network saved from ``DistributedDataParallel`` removed."""
    if state and all(str(k).startswith("module.") for k in state):
        state = {str(k)[len("module."):]: v for k, v in state.items()}
    return state


def checkpoint_weights(obj: Any) -> Mapping[str, torch.Tensor]:
    """The network weights in a checkpoint this bundle wrote: a state_dict, or the ``model``/``network`` entry of a resume checkpoint."""
    obj = _state_dict(obj)
    if not isinstance(obj, Mapping):
        raise TypeError(f"expected a state_dict, got {type(obj).__name__}")
    return _without_ddp_prefix(obj)


def weights_problem(ckpt_path: str | os.PathLike) -> tuple[dict[str, torch.Tensor] | None, str | None]:
    """``(state_dict, None)`` of ``ckpt_path`` (read with ``weights_only=True``), or ``(None, why)``.

    ``why`` starts with the path and fits one line. Accepts a plain state_dict or a training
    checkpoint whose ``model`` entry is one (the ``checkpoint_epoch=<N>.pt`` files); keys saved
    from ``DistributedDataParallel`` (``module.`` prefix) are stripped. Used where the caller
    reports errors its own way (``python -m wss_monai.export``); bundles use :func:`read_weights`.
    """
    path = Path(str(ckpt_path)).expanduser()
    if path.is_dir():
        return None, f"{path}: is a folder; pass the checkpoint file (e.g. RUN/models/model.pt)"
    if not path.is_file():
        return None, f"{path}: no such checkpoint"
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of foreign files
            warnings.simplefilter("ignore")
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises KeyError, RuntimeError, EOFError, UnpicklingError... for bad files
        return None, f"{path}: {_why_unreadable(path, err)}"
    state = _state_dict(loaded)
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        what = type(state).__name__ if not isinstance(state, Mapping) else "a mapping that is not a network's state_dict"
        return None, f"{path}: holds {what}, not network weights (a state_dict of tensors, as in RUN/models/model.pt)"
    state = _without_ddp_prefix(state)
    return {str(k): v for k, v in state.items()}, None


def read_weights(ckpt_path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state_dict in ``ckpt_path`` (:func:`weights_problem`); a file that holds none ends the run (one line, exit 2)."""
    state, why = weights_problem(ckpt_path)
    if state is None:
        fail(f"{why}.")
    return state


def _examples(names: list[str], n: int = 2) -> str:
    shown = ", ".join(names[:n])
    return shown + (f" and {len(names) - n} more" if len(names) > n else "")


def fit_weights(network: torch.nn.Module, state: Mapping[str, torch.Tensor], ckpt_path: str | os.PathLike,
                hint: str = "", strict: bool = True) -> torch.nn.Module:
    """Load ``state`` into ``network``; weights of another network end the run with one line (exit 2).

    PyTorch's own message lists every missing and unexpected key over many lines; the line here
    counts them, names two of each and the first tensor whose shape differs, then ``hint``.
    """
    own = network.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    resized = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    problems = []
    if missing and strict:
        problems.append(f"{len(missing)} of its {len(own)} tensors are missing ({_examples(missing)})")
    if unexpected and strict:
        problems.append(f"{len(unexpected)} tensors it does not have ({_examples(unexpected)})")
    if resized:
        k = resized[0]
        problems.append(f"{len(resized)} of another shape (e.g. {k}: {tuple(state[k].shape)} in the file, "
                        f"{tuple(own[k].shape)} in the network)")
    if not problems:
        try:
            network.load_state_dict(state, strict=strict)
        except (RuntimeError, TypeError, ValueError) as err:  # dtypes torch cannot copy
            problems.append(_first_line(err))
    if problems:
        fail(f"{ckpt_path}: the weights do not fit network_def ({type(network).__name__}): {'; '.join(problems)}."
             + (f" {hint}" if hint else ""))
    return network


def load_network(network: torch.nn.Module, ckpt_path: str | os.PathLike, device: Any = None, strict: bool = True) -> torch.nn.Module:
    """``network`` with the weights of ``ckpt_path`` (a state_dict, read with ``weights_only=True``), in eval mode.

    A file that is not a weights file, or whose weights do not fit the network (another
    ``network_def``), ends the run with one line and exit code 2 (:mod:`wss_monai.engine.weights`).
    """
    fit_weights(network, read_weights(ckpt_path), ckpt_path, strict=strict,
                hint="Use the network_def of the training run (its config.json), e.g. --network_def#_target_ wss_monai.networks.ResUNet.")
    if device is not None:
        network = network.to(device)
    return network.eval()
