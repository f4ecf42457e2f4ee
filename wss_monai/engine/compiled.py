"""A compiled training forward pass (``torch.compile``), used only where compiling pays back within the run.

Why: an ENet step on 48 x 48 slices is a few hundred small operators, and on a CPU the time goes
to the overhead of each (dispatch, allocation, a pass over memory per operator) rather than to
arithmetic. Inductor fuses the element-wise chains (batch norm, PReLU and its backward, dropout,
the additions) into a few C++ loops, which shortened an ENet step by about a quarter on the
project's 2-core machine (``python -m pipelines.benchmarks training`` measures it).

Compiling costs time once per process: tracing the network and its backward, then generating
and building C++ (gcc) kernels; measured at 48 x 48, batch 8, one thread: about 76 s on an empty
cache and 14 s when the kernels are already on disk (the numbers move with the machine's load).
Inductor's FX graph cache and AOTAutograd cache keep the built graphs on disk, in
:func:`cache_dir` (``$XDG_CACHE_HOME/wss_monai/inductor``, default ``~/.cache/wss_monai/inductor``,
so every run of the user shares it; ``compile_cache_dir`` in ``train.json`` names another).

``compile`` (``train.json``): ``false`` (eager), ``true`` (always), ``"auto"`` (default):
compile when the run's planned iterations reach :data:`MIN_ITERATIONS_WARM` if this network and
input shape were compiled before into the cache (a marker file written after a compiled step
succeeded), :data:`MIN_ITERATIONS_COLD` otherwise; a run with a deadline (``compile_deadline``,
which the pipelines' time-budget overlay sets) compiles when the seconds left reach
:data:`MIN_BUDGET_S_WARM` / :data:`MIN_BUDGET_S_COLD` instead, whatever its epoch cap. The thresholds come from the measurements
above: a step that saves about 10 ms needs ~1,400 iterations to repay a warm compile and ~7,600
for a cold one. ``"auto"`` also stays eager where inductor cannot build kernels (no C++
compiler on a CPU machine, Windows).

Only training batches of the trained batch shape go through the compiled graph: the last, smaller
batch of an epoch, the variable batches of ``volume`` sampling and anything in eval mode run the
same network eagerly (a new shape would otherwise cost another compile). Dropout draws from
PyTorch's generator as in eager mode (``fallback_random``), so a compiled run draws the same
dropout masks as an eager one; the results differ from eager only by the rounding of reordered
floating-point sums (the equivalence test in ``tests/engine/test_fast_step.py`` bounds it).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from wss_monai.engine.errors import as_bool, fail

logger = logging.getLogger("wss_monai.engine")

__all__ = ["CompiledTraining", "cache_dir", "compile_for_training", "compile_choice"]

#: planned iterations from which "auto" compiles when this network and shape are in the cache
MIN_ITERATIONS_WARM = 1500
#: planned iterations from which "auto" compiles on an empty cache
MIN_ITERATIONS_COLD = 8000
#: seconds of training left (a run with a deadline: the pipelines' time budget) from which "auto"
#: compiles, warm cache / empty cache: a step about a quarter shorter repays 14 s after ~60 s of
#: training and 76 s after ~300 s; doubled for a machine busier than when they were measured
MIN_BUDGET_S_WARM = 120.0
MIN_BUDGET_S_COLD = 600.0


def compile_choice(value: Any) -> bool | str:
    """``compile`` as True, False or ``"auto"``; anything else stops the run with one line (exit 2)."""
    return as_bool(value, "--compile", keep=("auto",))


def cache_dir(folder: str | os.PathLike | None = None) -> Path:
    """Where inductor keeps its compiled graphs and kernels for wss-monai runs.

    ``folder`` if given, else ``$XDG_CACHE_HOME/wss_monai/inductor`` (``~/.cache/wss_monai/inductor``):
    under the user's cache folder, so that every later run (any output folder) finds the kernels.
    """
    if folder is not None and str(folder).strip():
        return Path(str(folder)).expanduser().resolve()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "wss_monai" / "inductor"


def _can_build_kernels(device: torch.device) -> tuple[bool, str]:
    """Whether inductor can build kernels here (why not, when it cannot)."""
    if sys.platform.startswith("win"):
        return False, "torch.compile's CPU backend is not used on Windows here"
    if device.type == "cpu" and not (shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++") or shutil.which("clang++")):
        return False, "no C++ compiler (g++/clang++) on this machine"
    if device.type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return False, "Triton is not installed"
    return True, ""


class CompiledTraining(nn.Module):
    """The network for the trainer: compiled for training batches of one shape, eager otherwise.

    The wrapped ``network`` is the one the optimizer, the checkpoints and the evaluator hold;
    this module owns no parameter of its own (``state_dict`` is the network's, under ``network.``),
    so only the trainer is given it.

    Args:
        network: the network to train.
        batch_size: the trainer's batch size; the first training batch of that size fixes the
            compiled shape.
        marker: a file written once the first compiled step (forward and backward) went through: tells "auto" the cache is warm.
    """

    def __init__(self, network: nn.Module, batch_size: int, marker: Path | None = None) -> None:
        super().__init__()
        self.network = network
        self.batch_size = int(batch_size)
        self.marker = marker
        self.shape: tuple[int, ...] | None = None
        self.__dict__["_compiled"] = torch.compile(network, dynamic=False)  # not a submodule: no second copy of the weights
        self.compiled_calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and torch.is_grad_enabled():
            if self.shape is None and x.shape[0] == self.batch_size:
                self.shape = tuple(x.shape)
            if tuple(x.shape) == self.shape:
                out = self._compiled(x)
                self.compiled_calls += 1
                if self.compiled_calls == 2 and self.marker is not None:  # the first step, backward included, went through
                    self.marker.parent.mkdir(parents=True, exist_ok=True)
                    self.marker.write_text("compiled\n")
                return out
        return self.network(x)


def _marker(folder: Path, network: nn.Module, batch_size: int, device: torch.device, amp: bool) -> Path:
    """The marker of one (torch version, network, batch size, device kind, amp) in the cache."""
    text = "|".join([torch.__version__, repr(network), str(batch_size), device.type, str(bool(amp))])
    return folder / "wss_monai_markers" / (hashlib.sha256(text.encode()).hexdigest()[:16] + ".done")


def _planned_iterations(epochs: Any, loader: Any, start_epoch: int = 0) -> int | None:
    try:
        return max(0, int(epochs) - int(start_epoch)) * len(loader)
    except (TypeError, ValueError):
        return None


def compile_for_training(
    network: nn.Module,
    compile: Any = "auto",
    *,
    batch_size: int,
    epochs: Any = None,
    loader: Any = None,
    start_epoch: int = 0,
    device: Any = None,
    amp: Any = False,
    folder: str | os.PathLike | None = None,
    deadline: float | None = None,
) -> nn.Module:
    """The trainer's network: ``network`` itself, or a :class:`CompiledTraining` around it.

    Args:
        network: the bundle's network (already on its device).
        compile: ``True``, ``False`` or ``"auto"`` (module docstring); checked, exit 2 otherwise.
        batch_size: the training batch size (the compiled shape).
        epochs, loader, start_epoch: the run's length, for ``"auto"`` (epochs still to train x batches per epoch).
        device: where the network trains (``"auto"`` checks a kernel compiler for it).
        amp: mixed precision on (part of the cache marker's key).
        folder: inductor's cache folder (None: :func:`cache_dir`).
        deadline: ``time.time()`` at which the run must end (None: it ends after ``epochs``).
    """
    choice = compile_choice(compile)
    if choice is False:
        return network
    device = torch.device(device) if device is not None else next(network.parameters()).device
    ok, why = _can_build_kernels(device)
    if not ok:
        if choice is True:
            fail(f"--compile true: {why}; pass --compile false (or auto).")
        logger.info(f"compile auto: eager ({why})")
        return network
    where = cache_dir(folder)
    marker = _marker(where, network, batch_size, device, as_bool(amp, "amp"))
    if deadline is not None and (isinstance(deadline, bool) or not isinstance(deadline, (int, float))):
        fail(f"--compile_deadline must be a time.time() value or null, got {deadline!r}.")
    if choice == "auto":
        warm = marker.is_file()
        state = "cached" if warm else "not cached yet"
        if deadline is not None:
            have, least, unit = float(deadline) - time.time(), MIN_BUDGET_S_WARM if warm else MIN_BUDGET_S_COLD, "s of budget left"
        else:
            have, least, unit = _planned_iterations(epochs, loader, start_epoch), MIN_ITERATIONS_WARM if warm else MIN_ITERATIONS_COLD, "planned iterations"
        if have is None or have < least:
            logger.info(f"compile auto: eager ({have if have is None else round(have)} {unit}, compiling pays from {least:g}; this network is {state})")
            return network
        logger.info(f"compile auto: compiling ({round(have)} {unit} >= {least:g}; this network is {state}; cache {where})")
    configure_cache(where)
    return CompiledTraining(network, batch_size, marker=marker)


def configure_cache(folder: Path) -> None:
    """Point inductor's on-disk caches at ``folder`` and allow them to keep graphs with our custom autograd functions.

    ``autograd_cache_allow_custom_autograd_functions``: the network's PReLU has its own backward
    (:mod:`wss_monai.networks.prelu`); without it AOTAutograd would trace the backward again on
    every run. ``fallback_random``: dropout masks from PyTorch's generator, as in eager mode.
    """
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    inductor_config.fx_graph_cache = True
    inductor_config.fallback_random = True
    functorch_config.enable_autograd_cache = True
    functorch_config.autograd_cache_allow_custom_autograd_functions = True
