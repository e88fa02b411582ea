"""Batches for training: the `loaders` package's iterators (or a synthetic source for tests and
benchmarks), fed to the devices as sharded global arrays, each batch paired with the iterator's
position after it so a checkpoint records exactly where the data stood."""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import jax
import numpy as np
from jax.sharding import Mesh

from .parallel import global_batch


class BatchSource(Protocol):
    """What the training loop needs from a data iterator (the loaders' iterators fit)."""

    def __next__(self) -> dict[str, np.ndarray]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class SyntheticBatches:
    """Deterministic learnable random batches (int32 numpy dicts, the loaders' layout) for `task`.

    Rows are arithmetic runs of token ids (predictable from context); classification labels are the
    run's stride, token labels the id modulo num_labels, QA spans are marked by ids 3 and 4. Batch p
    of epoch e depends only on (seed, e, p), so `load_state_dict` resumes exactly."""

    def __init__(self, task: str, vocab_size: int, batch_size: int, seq_len: int, *, num_labels: int = 2,
                 seed: int = 0, mask_prob: float = 0.15, steps_per_epoch: int = 64,
                 process_index: int | None = None, process_count: int | None = None):  # fmt: skip
        if vocab_size < 16:
            raise ValueError(f"synthetic data needs vocab_size >= 16, got {vocab_size}")
        self.task, self.vocab_size, self.batch_size, self.seq_len = task, vocab_size, batch_size, seq_len
        self.num_labels, self.seed, self.mask_prob, self.steps_per_epoch = num_labels, seed, mask_prob, steps_per_epoch
        self.process_index = jax.process_index() if process_index is None else process_index
        self.process_count = jax.process_count() if process_count is None else process_count
        self.epoch, self.position = 0, 0

    def __iter__(self) -> "SyntheticBatches":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batch = self._make(np.random.default_rng((self.seed, self.epoch, self.position)))
        self.position += 1
        if self.position == self.steps_per_epoch:
            self.epoch, self.position = self.epoch + 1, 0
        rows = self.batch_size // self.process_count
        return {k: v[self.process_index * rows : (self.process_index + 1) * rows] for k, v in batch.items()}

    def _make(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        b, t, v = self.batch_size, self.seq_len, self.vocab_size
        stride = rng.integers(1, 4, size=(b, 1))
        ids = 5 + (rng.integers(0, v - 5, size=(b, 1)) + stride * np.arange(t)) % (v - 5)
        lengths = np.where(rng.random(b) < 0.5, t, rng.integers(max(2, t // 2), t + 1, size=b))
        mask = (np.arange(t)[None, :] < lengths[:, None]).astype(np.int32)
        ids = np.where(mask == 1, ids, 0)
        out = {"input_ids": ids, "attention_mask": mask}
        if self.task == "mlm":
            chosen = (rng.random((b, t)) < self.mask_prob) & (mask == 1)
            chosen[:, 1] |= ~chosen.any(axis=1)  # at least one masked token per row
            out["labels"] = np.where(chosen, ids, -100)
            out["input_ids"] = np.where(chosen, 4, ids)
        elif self.task == "classify":
            out["labels"] = (stride[:, 0] - 1) % self.num_labels
        elif self.task == "token-classify":
            out["labels"] = np.where(mask == 1, ids % self.num_labels, -100)
        elif self.task == "qa":
            start = rng.integers(1, lengths // 2)
            end = start + rng.integers(0, 3, size=b)
            rows = np.arange(b)
            ids[rows, start], ids[rows, end] = 3, 4
            out.update(input_ids=ids, start_positions=start, end_positions=end)
        else:
            raise ValueError(f"unknown task {self.task!r} for synthetic data")
        return {k: np.asarray(x, np.int32) for k, x in out.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])


class DeviceFeeder:
    """Iterate `(global sharded batch, source position after it)`, `prefetch` batches ahead on device."""

    def __init__(self, source: BatchSource, mesh: Mesh, prefetch: int = 2):
        self.source, self.mesh, self.prefetch = source, mesh, max(1, prefetch)
        self.queue: collections.deque = collections.deque()

    def __iter__(self) -> Iterator[tuple[dict[str, jax.Array], dict[str, Any]]]:
        return self

    def __next__(self) -> tuple[dict[str, jax.Array], dict[str, Any]]:
        while len(self.queue) < self.prefetch:
            try:
                local = next(self.source)
            except StopIteration:
                break
            self.queue.append((global_batch(local, self.mesh), self.source.state_dict()))
        if not self.queue:
            raise StopIteration
        return self.queue.popleft()



@dataclasses.dataclass
class DataSetup:
    """The data side of a run: tokenizer (None for synthetic data), vocabulary size, label count
    (None: take the config's), the training source, a factory of fresh evaluation sources and the
    label names (None if unknown)."""

    tokenizer: Any
    vocab_size: int
    num_labels: int | None
    train: BatchSource
    make_eval: Callable[[], BatchSource]
    label_names: tuple[str, ...] | None = None
