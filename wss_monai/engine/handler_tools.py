"""What the bundle's handlers share: running a handler before the others of its event, and reading a metric as a number."""

from __future__ import annotations

from typing import Any

import torch
from ignite.engine import Engine


def add_first(engine: Engine, event: Any, handler: Any, *args: Any) -> None:
    """Register ``handler`` for ``event`` ahead of the handlers already there (ignite runs them in order)."""
    engine.add_event_handler(event, handler, *args)
    try:
        handlers = engine._event_handlers[event]  # ignite's per-event list of (handler, args, kwargs)
        handlers.insert(0, handlers.pop())
    except (AttributeError, KeyError, IndexError, TypeError):  # pragma: no cover - other ignite versions
        pass


def as_float(value: Any) -> float | None:
    """A metric value as a float (a one-element tensor, a number, a bool), or None for anything else."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            return None
        value = value.item()
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    return None
