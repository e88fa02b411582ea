"""The batch builders: MLM and causal-LM over packed windows of a token stream, sequence and token
classification and extractive question answering over padded records. Each returns a resumable `BatchIterator` of int32 dicts;
`**loop` are `BatchIterator`'s options (`LoopOptions`: seed, shuffle, drop_last, epochs, process_index,
process_count, pad_last, num_threads)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from .batching import PAD_ROW, BatchIterator, LoopOptions, pack_rows
from .datasets import TextDataset
from .mlm import IGNORE, mask_tokens
from .tokenize_cache import TokenStore, encode_batch, encode_texts

if TYPE_CHECKING:
    from typing_extensions import Unpack


def _check_len(seq_len: int, tok, least: int) -> None:
    if not least <= seq_len <= tok.model_max_length:
        raise ValueError(f"seq_len must be in [{least}, {tok.model_max_length}] (model_max_length), got {seq_len}")


def _check_kind(ds: TextDataset, kind: str) -> None:
    if not isinstance(ds, TextDataset) or ds.kind != kind:
        got = ds.kind if isinstance(ds, TextDataset) else type(ds).__name__
        hint = {"classification": "label_field=", "tokens": "tokens_field= and tags_field=",
                "qa": "question_field="}.get(kind, "")  # fmt: skip
        raise ValueError(f"expected a {kind} TextDataset (from_files with {hint}), got {got}")


def _wrap(chunks: list, seq_len: int, tok, specials: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """→ (input_ids, attention_mask) [B, seq_len]: `[CLS] chunk [SEP]` (or bare chunk) + [PAD]."""
    cls, sep = (tok.cls_token_id, tok.sep_token_id) if specials else (None, None)
    ids = pack_rows(chunks, seq_len, cls, sep, tok.pad_token_id)
    ones = [None if c is None else np.ones(len(c), np.int32) for c in chunks]
    return ids, pack_rows(ones, seq_len, 1 if specials else None, 1 if specials else None, 0)


def _windows(store: TokenStore, rows: np.ndarray, content: int) -> list:
    """Token chunks of windows `rows` (window w = stream[w*content:(w+1)*content]); None for padding rows."""
    spans = [(int(w) * content, min((int(w) + 1) * content, store.num_tokens)) for w in rows if w != PAD_ROW]
    chunks = iter(store.spans(spans))
    return [None if w == PAD_ROW else next(chunks) for w in rows]


def mlm_batches(
    data: TextDataset | TokenStore,
    tok,
    *,
    batch_size: int,
    seq_len: int = 128,
    mask_prob: float = 0.15,
    cache_dir: str | os.PathLike | None = None,
    **loop: Unpack[LoopOptions],
) -> BatchIterator:
    """Masked-LM batches: the token stream (documents each followed by [SEP]) cut into windows
    `[CLS] <seq_len-2 tokens> [SEP]`; masks drawn per (seed, epoch, window), never on special
    tokens or padding. `cache_dir` memory-maps tokens there; None streams them from the source.
    → {"input_ids", "attention_mask", "labels"}: [B_local, seq_len] int32."""
    _check_len(seq_len, tok, 3)
    if not 0.0 <= mask_prob <= 1.0:
        raise ValueError(f"mask_prob must be in [0, 1], got {mask_prob}")
    store = data if isinstance(data, TokenStore) else TokenStore(data, tok, cache_dir)
    content = seq_len - 2
    special = np.array(sorted(set(tok.all_special_ids)))
    replacement = np.setdiff1d(np.arange(tok.vocab_size), special).astype(np.int32)

    def make_batch(rows: np.ndarray, epoch: int) -> dict:
        ids, mask = _wrap(_windows(store, rows, content), seq_len, tok)
        maskable = (mask == 1) & ~np.isin(ids, special)
        ids, labels = mask_tokens(ids, maskable, rows, seed=it.seed, epoch=epoch, mask_prob=mask_prob,
                                  mask_token_id=tok.mask_token_id, replacement_ids=replacement)  # fmt: skip
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    it = BatchIterator(-(-store.num_tokens // content), make_batch, batch_size=batch_size, **loop)
    return it


def clm_batches(
    data: TextDataset | TokenStore,
    tok,
    *,
    batch_size: int,
    seq_len: int = 128,
    cache_dir: str | os.PathLike | None = None,
    **loop: Unpack[LoopOptions],
) -> BatchIterator:
    """Causal-LM batches: the token stream cut into windows of `seq_len` tokens;
    labels[t] = input_ids[t+1], -100 at the last position and on padding.
    → {"input_ids", "attention_mask", "labels"}: [B_local, seq_len] int32."""
    _check_len(seq_len, tok, 2)
    store = data if isinstance(data, TokenStore) else TokenStore(data, tok, cache_dir)

    def make_batch(rows: np.ndarray, epoch: int) -> dict:
        ids, mask = _wrap(_windows(store, rows, seq_len), seq_len, tok, specials=False)
        labels = np.full_like(ids, IGNORE)
        labels[:, :-1] = np.where(mask[:, 1:] == 1, ids[:, 1:], IGNORE)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    n = -(-store.num_tokens // seq_len)
    return BatchIterator(n, make_batch, batch_size=batch_size, **loop)


def classification_batches(
    ds: TextDataset,
    tok,
    *,
    batch_size: int,
    seq_len: int = 128,
    **loop: Unpack[LoopOptions],
) -> BatchIterator:
    """Sequence classification: `[CLS] text [SEP]` truncated and padded to `seq_len`.
    → {"input_ids", "attention_mask": [B_local, seq_len], "labels": [B_local]} int32 (-100: padding row)."""
    _check_kind(ds, "classification")
    _check_len(seq_len, tok, 3)

    def make_batch(rows: np.ndarray, epoch: int) -> dict:
        real = [int(r) for r in rows if r != PAD_ROW]
        ids = iter(encode_texts(tok, ds.texts(real)))
        chunks = [None if r == PAD_ROW else next(ids)[: seq_len - 2] for r in rows]
        input_ids, mask = _wrap(chunks, seq_len, tok)
        labels = np.where(rows == PAD_ROW, IGNORE, ds.labels[np.maximum(rows, 0)]).astype(np.int32)
        return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}

    return BatchIterator(len(ds), make_batch, batch_size=batch_size, label_names=ds.label_names, **loop)


def token_classification_batches(
    ds: TextDataset,
    tok,
    *,
    batch_size: int,
    seq_len: int = 128,
    **loop: Unpack[LoopOptions],
) -> BatchIterator:
    """Token classification over pre-split words: `[CLS] pieces [SEP]` truncated and padded to
    `seq_len`; a word's tag id on its first piece, -100 on other pieces, specials and padding.
    → {"input_ids", "attention_mask", "labels"}: [B_local, seq_len] int32."""
    _check_kind(ds, "tokens")
    _check_len(seq_len, tok, 3)

    def make_batch(rows: np.ndarray, epoch: int) -> dict:
        recs = [ds[int(r)] for r in rows if r != PAD_ROW]
        encs = iter(encode_batch(tok.backend, [r["words"] for r in recs], is_pretokenized=True,
                                 add_special_tokens=False)
                    if recs else [])  # fmt: skip
        recs_it = iter(recs)
        chunks, tag_chunks = [], []
        for r in rows:
            if r == PAD_ROW:
                chunks.append(None)
                tag_chunks.append(None)
                continue
            enc, tags = next(encs), next(recs_it)["tags"]
            word_ids = enc.word_ids[: seq_len - 2]
            chunks.append(enc.ids[: seq_len - 2])
            tag_chunks.append([IGNORE if w is None or (k and word_ids[k - 1] == w) else tags[w]
                               for k, w in enumerate(word_ids)])  # fmt: skip
        input_ids, mask = _wrap(chunks, seq_len, tok)
        labels = pack_rows(tag_chunks, seq_len, IGNORE, IGNORE, IGNORE)
        return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}

    return BatchIterator(len(ds), make_batch, batch_size=batch_size, label_names=ds.label_names, **loop)


def answer_token_span(offsets: np.ndarray, sequence_ids: np.ndarray, start: int, end: int) -> tuple[int, int]:
    """Token positions (first, last) of the character span [start, end) among the context tokens
    (`sequence_ids == 1`) of one tokenized (question, context) row; (0, 0) — the [CLS] token, as HF
    does — when truncation cut the answer off."""
    ctx = np.flatnonzero(sequence_ids == 1)
    if not len(ctx) or offsets[ctx[0], 0] > start or offsets[ctx[-1], 1] < end:
        return 0, 0
    first = ctx[np.searchsorted(offsets[ctx, 1], start, side="right")]  # first token ending after start
    last = ctx[np.searchsorted(offsets[ctx, 0], end, side="left") - 1]  # last token starting before end
    return int(first), int(last)


def qa_batches(
    ds: TextDataset,
    tok,
    *,
    batch_size: int,
    seq_len: int = 384,
    stride: int | None = None,
    **loop: Unpack[LoopOptions],
) -> BatchIterator:
    """Extractive QA: `[CLS] question [SEP] context [SEP]` padded to `seq_len`, with the answer's first /
    last token positions ((0, 0), the [CLS], when the answer is not in the row; -100 on padding rows).
    `stride=None`: one row per example, the context truncated. `stride=k`: as Hugging Face's `run_qa`, every
    example becomes one row per window of its context (windows overlap by k tokens; all windows are
    counted when the iterator is built) and the rows — windows — are what is shuffled and batched.
    → {"input_ids", "attention_mask": [B_local, seq_len], "start_positions", "end_positions": [B_local]} int32."""
    _check_kind(ds, "qa")
    _check_len(seq_len, tok, 4)
    if stride is not None and not 0 <= stride < seq_len // 2:
        raise ValueError(f"stride must be in [0, seq_len // 2 = {seq_len // 2}), got {stride}")

    def tokenize(recs: list[dict], padding: str = "max_length"):
        return tok([r["question"] for r in recs], [r["text"] for r in recs], max_length=seq_len, padding=padding,
                   truncation="only_second", stride=stride or 0, return_overflowing_tokens=stride is not None)  # fmt: skip

    # row -> (example, window of the example): one row per example, or one per window counted up front
    windows = np.stack([np.arange(len(ds)), np.zeros(len(ds), np.int64)], 1)
    if stride is not None:
        counts = []
        for lo in range(0, len(ds), 512):
            recs = [ds[i] for i in range(lo, min(lo + 512, len(ds)))]
            counts.append(np.bincount(tokenize(recs, "longest").overflow_to_sample_mapping, minlength=len(recs)))
        counts = np.concatenate(counts)
        windows = np.stack([np.repeat(np.arange(len(ds)), counts), np.concatenate([np.arange(c) for c in counts])], 1)

    def make_batch(rows: np.ndarray, epoch: int) -> dict:
        n = len(rows)
        input_ids = np.full((n, seq_len), tok.pad_token_id, np.int32)
        mask = np.zeros((n, seq_len), np.int32)
        starts, ends = np.full(n, IGNORE, np.int32), np.full(n, IGNORE, np.int32)
        real = np.flatnonzero(rows != PAD_ROW)
        if len(real):
            examples = sorted({int(windows[rows[i], 0]) for i in real})
            recs = [ds[e] for e in examples]
            b = tokenize(recs)
            mapping = np.arange(len(examples)) if stride is None else b.overflow_to_sample_mapping
            first_row = np.searchsorted(mapping, np.arange(len(examples)))  # each example's first row of b
            for i in real:
                example, window = windows[rows[i]]
                k = examples.index(int(example))
                row, rec = first_row[k] + int(window), recs[k]
                input_ids[i], mask[i] = b.input_ids[row], b.attention_mask[row]
                span = (rec["answer_start"], rec["answer_start"] + len(rec["answer_text"]))
                starts[i], ends[i] = answer_token_span(b.offsets[row], b.sequence_ids[row], *span)
        return {"input_ids": input_ids, "attention_mask": mask, "start_positions": starts, "end_positions": ends}

    return BatchIterator(len(windows), make_batch, batch_size=batch_size, **loop)
