"""Where this process stands under ``torch.distributed``: its rank, the world size, rank 0's decisions, the unwrapped network.

Outside a distributed run (or where torch has no ``torch.distributed``) the process is rank 0 of
a world of 1, and every helper here is a no-op.
"""

from __future__ import annotations

from typing import Any

import torch


def rank_and_world() -> tuple[int, int]:
    """``(rank, world size)`` of this process; ``(0, 1)`` outside ``torch.distributed``."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except ImportError:  # pragma: no cover
        pass
    return 0, 1


def current_rank() -> int:
    return rank_and_world()[0]


def world_size() -> int:
    return rank_and_world()[1]


def broadcast_from_rank0(payload: Any) -> Any:
    """Rank 0's ``payload`` on every rank (a no-op outside ``torch.distributed``)."""
    rank, world = rank_and_world()
    if world == 1:
        return payload
    import torch.distributed as dist

    box = [payload if rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def unwrap(network: torch.nn.Module) -> torch.nn.Module:
    """The module inside ``DistributedDataParallel`` / ``DataParallel`` (or the network itself)."""
    return getattr(network, "module", network)
