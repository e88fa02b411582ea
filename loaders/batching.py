"""Epoch-aware, resumable, per-process batch iteration over example ids, built on grain.

Global batch s of epoch e = examples `order_e[s*B:(s+1)*B]` (order_e: grain's seeded per-epoch
shuffle, or 0..N-1). Process p builds only rows [p*B/P, (p+1)*B/P) of it — it reads only its share."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypedDict

import grain
import numpy as np

PAD_ROW = -1  # example id of a padding row (attention_mask 0, labels -100)


def local_batch_size(batch_size: int, process_index: int | None, process_count: int | None) -> tuple[int, int, int]:
    """→ (local batch size, process_index, process_count); defaults from jax."""
    if process_index is None or process_count is None:
        import jax

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index must be in [0, {process_count}), got {process_index}")
    if batch_size % process_count:
        raise ValueError(f"global batch_size {batch_size} is not divisible by process_count {process_count}")
    return batch_size // process_count, process_index, process_count


def pack_rows(chunks: list, width: int, first: int | None, last: int | None, fill: int) -> np.ndarray:
    """[len(chunks), width] int32: each row `first + chunk + last` (None: left out) then `fill`.
    A None chunk is an all-`fill` row. Chunks must already fit."""
    out = np.full((len(chunks), width), fill, np.int32)
    lead = 0 if first is None else 1
    for r, chunk in enumerate(chunks):
        if chunk is None:
            continue
        n = len(chunk)
        if first is not None:
            out[r, 0] = first
        out[r, lead : lead + n] = chunk
        if last is not None:
            out[r, lead + n] = last
    return out


class LoopOptions(TypedDict, total=False):
    """Iteration options shared by every batch builder (defaults as in `BatchIterator`)."""

    seed: int
    shuffle: bool
    drop_last: bool
    epochs: int | None
    process_index: int | None
    process_count: int | None
    pad_last: bool
    num_threads: int


class BatchIterator:
    """Iterates dict batches of numpy arrays for `epochs` epochs (None: forever).

    `make_batch(example_ids [L] int64 (-1 = padding row), epoch) -> dict`. State is
    `{"epoch", "position"}` (position = batches already yielded in that epoch); `load_state_dict`
    makes the next batch exactly the one an uninterrupted run would yield next."""

    def __init__(
        self,
        num_examples: int,
        make_batch: Callable[[np.ndarray, int], dict],
        *,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = True,
        epochs: int | None = 1,
        process_index: int | None = None,
        process_count: int | None = None,
        pad_last: bool = True,
        num_threads: int = 2,
        prefetch: int = 4,
        label_names: list[str] | None = None,
    ):
        self.local_batch_size, self.process_index, self.process_count = local_batch_size(
            batch_size, process_index, process_count
        )
        if num_examples < 1 or (drop_last and num_examples < batch_size):
            raise ValueError(f"{num_examples} examples cannot fill one batch of {batch_size} with drop_last=True"
                             if num_examples else "the dataset has no examples")  # fmt: skip
        if not (pad_last or drop_last) and self.process_count > 1:
            raise ValueError("pad_last=False (a short last batch) is only possible with one process")
        if epochs is not None and epochs < 1:
            raise ValueError(f"epochs must be None (forever) or >= 1, got {epochs}")
        self.num_examples, self.batch_size, self.make_batch = num_examples, batch_size, make_batch
        self.shuffle, self.seed, self.drop_last, self.epochs, self.pad_last = shuffle, seed, drop_last, epochs, pad_last
        self._read = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)
        self.label_names = label_names
        self.epoch, self.position = 0, 0
        self._it: Iterator | None = None

    @property
    def num_labels(self) -> int | None:
        return None if self.label_names is None else len(self.label_names)

    @property
    def steps_per_epoch(self) -> int:
        n, b = self.num_examples, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def order(self, epoch: int) -> grain.MapDataset:
        """The example ids of `epoch` in iteration order (a lazy grain dataset)."""
        ids = grain.MapDataset.range(self.num_examples)
        if self.shuffle:
            ids = ids.shuffle(seed=self.seed)  # grain re-permutes each repetition
        n = self.num_examples
        return ids.repeat(epoch + 1)[epoch * n : (epoch + 1) * n]

    def _local(self, global_ids: np.ndarray, epoch: int) -> dict:
        ids = np.asarray(global_ids, np.int64)
        if len(ids) < self.batch_size and self.pad_last:
            ids = np.concatenate([ids, np.full(self.batch_size - len(ids), PAD_ROW, np.int64)])
        lo = self.process_index * self.local_batch_size
        return self.make_batch(ids[lo : lo + self.local_batch_size], epoch)

    def _pipeline(self) -> Iterator:
        epoch = self.epoch
        batches = self.order(epoch).batch(self.batch_size, drop_remainder=self.drop_last)[self.position :]
        return iter(batches.map(lambda ids: self._local(ids, epoch)).to_iter_dataset(self._read))

    def __iter__(self) -> "BatchIterator":
        return self

    def __next__(self) -> dict:
        while True:
            if self.epochs is not None and self.epoch >= self.epochs:
                raise StopIteration
            if self._it is None:
                self._it = self._pipeline()
            try:
                batch = next(self._it)
            except StopIteration:
                self._it, self.epoch, self.position = None, self.epoch + 1, 0
                continue
            self.position += 1
            return batch

    def state_dict(self) -> dict:
        """`{"epoch", "position", "seed", "num_examples", "batch_size"}` after the last yielded batch."""
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed,
                "num_examples": self.num_examples, "batch_size": self.batch_size}  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state` (from `state_dict()` of an iterator over the same data and settings)."""
        for key in ("seed", "num_examples", "batch_size"):
            if key in state and state[key] != getattr(self, key):
                raise ValueError(f"state was saved with {key}={state[key]}, this iterator has {getattr(self, key)}")
        epoch, position = int(state["epoch"]), int(state["position"])
        if epoch < 0 or not 0 <= position <= self.steps_per_epoch:
            raise ValueError(f"bad state: epoch {epoch}, position {position} (steps_per_epoch {self.steps_per_epoch})")
        self.epoch, self.position, self._it = epoch, position, None
