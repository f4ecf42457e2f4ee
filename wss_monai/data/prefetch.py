"""Batches made one step ahead, in a background thread, so the training step never waits for the loader.

Why a thread and not ``num_workers``: a worker process is a second interpreter competing for the
cores that the step itself uses (the demo runs two trainings on two cores, one torch thread each),
and it copies the cached slices into shared memory. Reading a cached slice, augmenting it and
collating the batch is NumPy and torch work that mostly releases the GIL, so a thread overlaps
it with the step at no extra memory. The order of the batches and their random augmentation are
those of the plain loader (one producer, the same iterator, the transforms' own generators), so
a run is the same with and without it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["PrefetchLoader"]

_END = object()


class PrefetchLoader:
    """Iterate ``loader`` with ``depth`` batches made ahead by a daemon thread.

    Everything else (``len``, ``sampler``, ``dataset``, ``batch_size``...) is the wrapped loader's,
    so ignite and MONAI's trainer see the same loader (``set_epoch`` of a distributed sampler
    included). An exception in the thread is raised in the training loop, at the batch it broke.
    """

    def __init__(self, loader: Any, depth: int = 1) -> None:
        self.loader = loader
        self.depth = max(1, int(depth))

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["loader"], name)

    def __iter__(self) -> Iterator[Any]:
        items: queue.Queue = queue.Queue(maxsize=self.depth)
        stop = threading.Event()

        def produce() -> None:
            try:
                for batch in self.loader:
                    while not stop.is_set():
                        try:
                            items.put((batch, None), timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
                items.put((_END, None))
            except BaseException as err:  # handed to the consumer, raised there
                items.put((_END, err))

        thread = threading.Thread(target=produce, name="wss-prefetch", daemon=True)
        thread.start()
        try:
            while True:
                batch, err = items.get()
                if batch is _END:
                    if err is not None:
                        raise err
                    return
                yield batch
        finally:  # the epoch ended early (time budget, an error): let the producer go
            stop.set()
            while thread.is_alive():
                try:
                    items.get_nowait()
                except queue.Empty:
                    thread.join(timeout=0.05)
