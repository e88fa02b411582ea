"""Batched inference helpers: sentence embeddings and extractive question answering."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from .heads import DistilBertForMultipleChoice, DistilBertForQuestionAnswering
from .sentence import SENTENCE_POOLINGS
from .tokenizer import Batch, Tokenizer, _check_texts

POOLINGS = SENTENCE_POOLINGS


def _bucket(n: int, limit: int, multiple: int = 32) -> int:
    """Pad lengths up to a multiple (bounded by `limit`, never below `n`) so jit sees few distinct shapes."""
    return max(n, min(limit, -(-n // multiple) * multiple))


def _pool(hidden: jax.Array, attention_mask: jax.Array, mode: str) -> jax.Array:
    # hidden [B, T, D], attention_mask [B, T] -> [B, D], as sentence-transformers' Pooling
    mask = attention_mask.astype(jnp.float32)[..., None]
    if mode == "cls":
        return hidden[:, 0]
    if mode == "max":
        return jnp.where(mask > 0, hidden, -jnp.inf).max(1)
    total, count = (hidden * mask).sum(1), jnp.maximum(mask.sum(1), 1e-9)
    return total / (count if mode == "mean" else jnp.sqrt(count))


@functools.partial(jax.jit, static_argnames=("model", "pooling", "normalize"))
def pool_hidden(model: nn.Module, variables, input_ids, attention_mask, pooling: str | tuple[str, ...],
                normalize: bool):  # fmt: skip
    """Encode [B, T] ids and pool to [B, D] (× number of modes): "cls" = first token, "mean" = mean over
    real tokens, "max" = max over real tokens, "mean_sqrt_len_tokens" = sum / sqrt(length); several
    modes are concatenated in order."""
    hidden = model.apply(variables, input_ids, attention_mask).last_hidden_state.astype(jnp.float32)
    modes = (pooling,) if isinstance(pooling, str) else pooling
    pooled = jnp.concatenate([_pool(hidden, attention_mask, mode) for mode in modes], axis=-1)
    if normalize:
        pooled = pooled / jnp.maximum(jnp.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)
    return pooled


def embed(
    model: nn.Module,
    variables: dict,
    tokenizer: Tokenizer,
    texts: str | Sequence[str],
    *,
    pooling: str | Sequence[str] | None = None,
    batch_size: int = 32,
    max_length: int | None = None,
    normalize: bool | None = None,
) -> np.ndarray:
    """Embed texts as [N, D] float32 (rows in the order of `texts`), encoded under jit, pooled with "cls", masked "mean", "max" or "mean_sqrt_len_tokens" (a list concatenates several).
    Works with the bare model or any single-sequence head. `pooling` / `normalize` default to the model's
    sentence-transformers settings (`config.pooling`, `config.normalize_embeddings`), else "mean" / False.

    Throughput: texts are tokenized in windows of `batch_size * 64` (truncated to `max_length`), sorted
    by length within a window so each batch pads only to its own longest text, rounded up to a multiple
    of 32 (at most max_length / 32 compiled shapes, reused across calls). Batches are dispatched
    asynchronously, so the next window is tokenized while the device encodes this one."""
    config = model.config
    if pooling is None:
        pooling = config.pooling or ("mean",)
    modes = (pooling,) if isinstance(pooling, str) else tuple(pooling)
    if not modes or any(mode not in POOLINGS for mode in modes):
        raise ValueError(f"pooling must be one of {POOLINGS} (or a list of them), got {pooling!r}")
    normalize = config.normalize_embeddings if normalize is None else bool(normalize)
    if isinstance(model, DistilBertForMultipleChoice):
        raise ValueError("embed needs a single-sequence model; load the multiple-choice checkpoint with head='base'")
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    texts = _check_texts(texts, "texts")
    limit = min(max_length or tokenizer.model_max_length, model.config.max_seq_len)
    out: np.ndarray | None = None
    batches = _sorted_batches(lambda lo, hi: tokenizer(texts[lo:hi], max_length=limit), len(texts), batch_size,
                              limit, tokenizer.pad_token_id,  # token types unused: all 0 for single texts
                              lambda ids, mask, _: pool_hidden(model, variables, ids, mask, modes, normalize))  # fmt: skip
    for first, _, rows, pooled in batches:
        if out is None:  # D depends on the pooling modes
            out = np.empty((len(texts), pooled.shape[1]), np.float32)
        out[first + rows] = pooled[: len(rows)]
    return out


def _sorted_batches(tokenize: Callable[[int, int], Batch], n: int, batch_size: int, limit: int, pad_id: int,
                    run: Callable[[jax.Array, jax.Array, jax.Array], Any],
                    ) -> Iterator[tuple[int, Batch, np.ndarray, Any]]:  # fmt: skip
    """Run `run(input_ids, attention_mask, token_type_ids)` (each [rows, W] int32) over the rows that
    `tokenize(lo, hi)` makes of inputs lo..hi-1, and yield `(lo, window Batch, rows of it, run's result as
    numpy)` per batch. Inputs are tokenized in windows of `batch_size * 64`; a window's rows are sorted by
    length so each batch pads only to its own longest row, rounded up to a multiple of 32 (≤ `limit`: at
    most limit / 32 shapes for jit, the same on every call). A batch has `batch_size` rows (the last one
    filled up), or, in a window of fewer rows, their count rounded up to a power of two: one question
    costs one row, not `batch_size`. Batches are dispatched asynchronously and a window's results are
    yielded while the next window runs: tokenizing and the caller's decoding overlap the device's work."""
    window = batch_size * 64
    pending: list[tuple[int, Batch, np.ndarray, Any]] = []  # (lo, window batch, its rows, result in flight)
    for lo in range(0, n, window):
        hi = min(n, lo + window)
        try:
            enc = tokenize(lo, hi)
        except ValueError as e:  # the tokenizer names an item by its index in the window: say where that starts
            if lo == 0:
                raise
            raise ValueError(f"{e} (that index counts from input {lo}, the first of inputs {lo}..{hi - 1})") from None
        lengths = enc.attention_mask.sum(1)
        order = np.argsort(-lengths, kind="stable")
        done, pending = pending, []
        height = min(batch_size, 1 << (len(lengths) - 1).bit_length())  # rows per batch
        for start in range(0, len(lengths), batch_size):
            rows = order[start : start + batch_size]
            width = _bucket(int(lengths[rows].max()), limit)
            filled = min(width, enc.input_ids.shape[1])
            arrays = []
            for source, fill in ((enc.input_ids, pad_id), (enc.attention_mask, 0), (enc.token_type_ids, 0)):
                padded = np.full((height, width), fill, np.int32)
                padded[: len(rows), :filled] = source[rows, :filled]
                arrays.append(padded)
            arrays[1][len(rows) :, 0] = 1  # filler rows: one visible token, results discarded by the caller
            pending.append((lo, enc, rows, run(*map(jnp.asarray, arrays))))
        yield from ((first, batch, rows, jax.device_get(result)) for first, batch, rows, result in done)
    yield from ((first, batch, rows, jax.device_get(result)) for first, batch, rows, result in pending)


@dataclasses.dataclass(frozen=True)
class Answer:
    """An extracted answer: text, character span [start, end) in the context, and probability score."""

    text: str
    start: int
    end: int
    score: float


def decode_answer(
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    offsets: np.ndarray,
    sequence_ids: np.ndarray,
    context: str,
    *,
    max_answer_length: int = 30,
    top_k: int = 1,
) -> list[Answer]:
    """Best answer spans of one example. Inputs are [T] / [T, 2] rows of a tokenized (question,
    context) pair; only context tokens (`sequence_ids == 1`) are candidates, with start ≤ end and at
    most `max_answer_length` tokens. Score = p(start) · p(end), softmax over context tokens."""
    start_logits, end_logits = np.asarray(start_logits, np.float64), np.asarray(end_logits, np.float64)
    seq = np.asarray(sequence_ids)
    if not (start_logits.shape == end_logits.shape == seq.shape and offsets.shape == seq.shape + (2,)):
        raise ValueError(
            f"shapes disagree: start {start_logits.shape}, end {end_logits.shape}, "
            f"sequence_ids {seq.shape}, offsets {offsets.shape} (want [T], [T], [T], [T, 2])"
        )
    if max_answer_length < 1:
        raise ValueError(f"max_answer_length must be ≥ 1, got {max_answer_length}")
    is_ctx = seq == 1
    if not is_ctx.any():
        return []

    def log_softmax(x):
        x = np.where(is_ctx, x, -np.inf)
        return x - np.logaddexp.reduce(x[is_ctx])

    scores = log_softmax(start_logits)[:, None] + log_softmax(end_logits)[None, :]  # [T_start, T_end]
    t = np.arange(len(seq))
    valid = (t[None, :] >= t[:, None]) & (t[None, :] - t[:, None] < max_answer_length)
    scores = np.where(valid & is_ctx[:, None] & is_ctx[None, :], scores, -np.inf)
    order = np.argsort(scores, axis=None)[::-1][:top_k]
    answers = []
    for flat in order:
        s, e = np.unravel_index(flat, scores.shape)
        if not np.isfinite(scores[s, e]):
            break
        char_start, char_end = int(offsets[s][0]), int(offsets[e][1])
        answers.append(Answer(context[char_start:char_end], char_start, char_end, float(np.exp(scores[s, e]))))
    return answers


def answer_questions(
    model: nn.Module,
    variables: dict,
    tokenizer: Tokenizer,
    questions: str | Sequence[str],
    contexts: str | Sequence[str],
    *,
    max_length: int = 384,
    max_answer_length: int = 30,
    stride: int | None = None,
    batch_size: int = 32,
) -> list[Answer | None]:
    """Answer each question from its context with a question-answering model. A context longer than
    `max_length` allows is split into windows overlapping by `stride` tokens (default min(128,
    max_length // 2), as the `transformers` pipeline); every window is scored and the best span of any
    window (highest p(start)·p(end) within its window; the first such window on a tie) is the answer. None
    where no context token fits.

    Throughput, as `embed`: pairs are tokenized in groups of `batch_size * 64`, their rows (one per
    context window) sorted by length and batched `batch_size` rows at a time, each padded to its longest
    row rounded up to a multiple of 32 (at most max_length / 32 compiled shapes, reused across calls).
    Batches are dispatched asynchronously: a group's answers are decoded, and the next group tokenized,
    while the device runs."""
    if not isinstance(model, DistilBertForQuestionAnswering):
        raise ValueError(f"answer_questions needs a question_answering model, got {type(model).__name__}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    questions, contexts = _check_texts(questions, "questions"), _check_texts(contexts, "contexts")
    if len(questions) != len(contexts):
        raise ValueError(f"{len(questions)} questions but {len(contexts)} contexts")
    stride = min(128, max_length // 2) if stride is None else stride

    def tokenize(lo: int, hi: int) -> Batch:
        return tokenizer(questions[lo:hi], contexts[lo:hi], max_length=max_length, truncation="only_second",
                         stride=stride, return_overflowing_tokens=True)  # fmt: skip

    best: list[Answer | None] = [None] * len(contexts)
    best_row = [0] * len(contexts)  # the window of each best answer: on equal scores the first window wins
    limit = min(max_length, model.config.max_seq_len)  # padding stays within the positions
    batches = _sorted_batches(tokenize, len(contexts), batch_size, limit, tokenizer.pad_token_id,
                              lambda ids, mask, types: qa_logits(model, variables, ids, mask, types))  # fmt: skip
    for first, batch, rows, (starts, ends) in batches:
        width = min(starts.shape[1], batch.input_ids.shape[1])  # both cover every row's tokens; the rest is padding
        for k, row in enumerate(rows):
            i = first + int(batch.overflow_to_sample_mapping[row])
            found = decode_answer(starts[k, :width], ends[k, :width], batch.offsets[row, :width],
                                  batch.sequence_ids[row, :width], contexts[i],
                                  max_answer_length=max_answer_length)  # fmt: skip
            if found and (best[i] is None or found[0].score > best[i].score
                          or (found[0].score == best[i].score and row < best_row[i])):  # fmt: skip
                best[i], best_row[i] = found[0], row
    return best


@functools.partial(jax.jit, static_argnames=("model",))
def qa_logits(model: nn.Module, variables, input_ids, attention_mask, token_type_ids):
    """(start, end) logits [B, T] of a question-answering model for [B, T] ids; `token_type_ids` are the
    segment ids (question 0, context 1) BERT models read. Jitted with the model static, so compiled
    shapes are reused across calls."""
    out = model.apply(variables, input_ids, attention_mask, token_type_ids=token_type_ids)
    return out.start_logits, out.end_logits
