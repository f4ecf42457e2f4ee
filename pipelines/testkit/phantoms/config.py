"""What every phantom's size configuration shares: real-size defaults, a small variant, overrides."""

from __future__ import annotations

import dataclasses
from typing import TypeVar

C = TypeVar("C", bound="PhantomConfig")


class PhantomConfig:
    """Mixin for a phantom's frozen dataclass of size ranges.

    The dataclass defaults are the real dataset's sizes; :meth:`small` (defined by each phantom)
    gives the tiny variant for tests and the quick demo; :meth:`build` applies the command line's
    size overrides (``None`` = keep the drawn size).
    """

    @classmethod
    def small(cls: type[C]) -> C:
        raise NotImplementedError

    @classmethod
    def build(cls: type[C], small: bool = False, **overrides) -> C:
        base = cls.small() if small else cls()
        return dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})
