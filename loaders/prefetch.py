"""Background transfer of host batches to devices, single- or multi-host."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import jax
import numpy as np

_END = object()


def to_device(batch: dict, sharding: jax.sharding.Sharding | None = None) -> dict:
    """Place a dict of host arrays: `jax.device_put` when `sharding` is None or covers only this process's
    devices (the batch is then the global batch), else `jax.make_array_from_process_local_data`
    (the batch is this process's share of the global batch)."""
    if sharding is None or sharding.is_fully_addressable:
        return jax.device_put(batch, sharding)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()}


class DevicePrefetcher:
    """Iterator of device batches `size` ahead of the consumer, filled by a background thread.

    `state_dict()` is the source iterator's state after the last batch *yielded here* (not after
    the ones already prefetched), so checkpoints taken through the prefetcher resume exactly."""

    def __init__(self, source: Iterator[dict], size: int = 2, sharding: jax.sharding.Sharding | None = None):
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self.source, self.sharding = source, sharding
        self._queue: queue.Queue = queue.Queue(maxsize=size)
        self._stop = threading.Event()
        self._state = source.state_dict() if hasattr(source, "state_dict") else None
        self._thread = threading.Thread(target=self._fill, daemon=True, name="prefetch_to_device")
        self._thread.start()

    def _fill(self) -> None:
        try:
            for batch in self.source:
                state = self.source.state_dict() if hasattr(self.source, "state_dict") else None
                item = (to_device(batch, self.sharding), state)
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
            self._queue.put((_END, None))
        except BaseException as e:  # re-raised in the consumer
            self._queue.put((e, None))

    def __iter__(self) -> "DevicePrefetcher":
        return self

    def __next__(self) -> dict:
        item, state = self._queue.get()
        if item is _END:
            self._queue.put((_END, None))
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        self._state = state
        return item

    def state_dict(self) -> dict | None:
        return self._state

    def close(self) -> None:
        """Stop the background thread (batches already prefetched are dropped)."""
        self._stop.set()
        self._thread.join(timeout=5)


def prefetch_to_device(iterator: Iterator[dict], size: int = 2,
                       sharding: jax.sharding.Sharding | None = None) -> DevicePrefetcher:  # fmt: skip
    """Device batches (dicts of jax Arrays) from host batches, `size` transfers ahead, in a background
    thread. Multi-host: pass the global `sharding`; each process supplies its local share."""
    return DevicePrefetcher(iterator, size, sharding)
