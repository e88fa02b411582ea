"""MLM masking (BERT's 80/10/10 rule) from counter-based randomness: the mask of an example depends
only on (seed, epoch, example id), so it is reproducible, re-drawn every epoch, identical after a
resume and independent of batch size and of how many processes share the batch."""

from __future__ import annotations

import numpy as np

IGNORE = -100
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer (wrapping uint64 arithmetic)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def random_bits(seed: int, epoch: int, rows: np.ndarray, width: int, stream: int) -> np.ndarray:
    """[len(rows), width] uint64 pseudo-random bits, a pure function of the arguments."""
    key = np.uint64(0)
    with np.errstate(over="ignore"):
        for part in (seed, epoch, stream):
            key = _mix(np.asarray(key ^ np.uint64(part % 2**64), np.uint64) + _GOLDEN)
        counter = rows.astype(np.uint64)[:, None] * np.uint64(width) + np.arange(width, dtype=np.uint64)
        return _mix(counter * _GOLDEN + key)


def uniform(seed: int, epoch: int, rows: np.ndarray, width: int, stream: int) -> np.ndarray:
    """[len(rows), width] float64 uniform in [0, 1)."""
    return (random_bits(seed, epoch, rows, width, stream) >> np.uint64(11)).astype(np.float64) * 2.0**-53


def mask_tokens(
    input_ids: np.ndarray,  # [B, T] int32
    maskable: np.ndarray,  # [B, T] bool: False on special tokens and padding
    rows: np.ndarray,  # [B] example ids (the randomness key of each row)
    *,
    seed: int,
    epoch: int,
    mask_prob: float,
    mask_token_id: int,
    replacement_ids: np.ndarray,  # [V'] ids a "random token" is drawn from (non-special)
) -> tuple[np.ndarray, np.ndarray]:
    """BERT masking: each maskable token is picked with `mask_prob`; a picked token becomes [MASK]
    (80%), a random token (10%) or stays (10%). → (masked input_ids [B, T], labels [B, T] with the
    original id at picked positions and -100 elsewhere)."""
    if not 0.0 <= mask_prob <= 1.0:
        raise ValueError(f"mask_prob must be in [0, 1], got {mask_prob}")
    width = input_ids.shape[1]
    picked = (uniform(seed, epoch, rows, width, 0) < mask_prob) & maskable
    action = uniform(seed, epoch, rows, width, 1)
    random_tok = replacement_ids[random_bits(seed, epoch, rows, width, 2) % np.uint64(len(replacement_ids))]
    labels = np.where(picked, input_ids, IGNORE).astype(np.int32)
    out = np.where(picked & (action < 0.8), mask_token_id, input_ids)
    out = np.where(picked & (action >= 0.8) & (action < 0.9), random_tok, out)
    return out.astype(np.int32), labels
