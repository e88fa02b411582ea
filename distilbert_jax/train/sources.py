"""Where a run's batches come from: synthetic batches (`data.source == "synthetic"`) or the `loaders`
package's iterators (`corpus.loader_sources`). Kept apart from `data` and `corpus` so those two do not
import each other."""

from __future__ import annotations

from .config import TrainConfig
from .corpus import loader_sources
from .data import DataSetup, SyntheticBatches


def make_sources(cfg: TrainConfig) -> DataSetup:
    """The `DataSetup` of a `TrainConfig`: synthetic batches, or the loaders package's iterators."""
    d = cfg.data
    if d.source != "synthetic":
        return loader_sources(cfg)
    vocab = int(cfg.model.get("vocab_size", d.vocab_size))
    num_labels = int(cfg.model.get("num_labels", d.num_labels))

    def synthetic(seed: int) -> SyntheticBatches:
        return SyntheticBatches(cfg.base_task, vocab, d.batch_size, d.seq_len, num_labels=num_labels, seed=seed,
                                mask_prob=d.mask_prob)  # fmt: skip

    return DataSetup(None, vocab, None, synthetic(cfg.seed), lambda: synthetic(cfg.seed + 10_000))
