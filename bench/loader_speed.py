"""Loader throughput in tokens/s on the default corpus: MLM batches of 32x128 streamed (tokenized on
the fly) and from the memory-mapped cache, plus CLM, classification and device prefetch.

    python -m bench.loader_speed [--batch-size 32 --seq-len 128 --repeats 3 --threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from bench.common import device_description, print_table
from loaders import (TokenStore, classification_batches, clm_batches, default_corpus, mlm_batches,
                     prefetch_to_device)  # fmt: skip


def epoch_rate(make_iter, repeats: int, prefetch: bool = False) -> tuple[float, int]:
    """Median tokens/s (B*T positions) over `repeats` full epochs, and the batches per epoch."""
    rates, steps = [], 0
    for _ in range(repeats + 1):  # first epoch is warm-up (page cache, thread pools)
        it = make_iter()
        source = prefetch_to_device(it) if prefetch else it
        t0, n, tokens = time.perf_counter(), 0, 0
        for batch in source:
            ids = batch["input_ids"]
            if prefetch:
                ids.block_until_ready()
            tokens += ids.size
            n += 1
        rates.append(tokens / (time.perf_counter() - t0))
        steps = n
    return statistics.median(rates[1:]), steps


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    B, T = args.batch_size, args.seq_len

    corpus, t_corpus = _timed(default_corpus)
    tok, t_tok = _timed(corpus.tokenizer)
    train = corpus.pretrain("train")
    common = dict(batch_size=B, seq_len=T, seed=0, shuffle=True, drop_last=True, epochs=1,
                  process_index=0, process_count=1, num_threads=args.threads)  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as cache_dir:
        streamed, t_count = _timed(lambda: TokenStore(train, tok))
        cached, t_cache = _timed(lambda: TokenStore(train, tok, cache_dir))
        _, t_reuse = _timed(lambda: TokenStore(train, tok, cache_dir))
        cases = [
            ("mlm streamed (no cache)", t_count, lambda: mlm_batches(streamed, tok, **common), False),
            ("mlm cached (memmap)", t_cache, lambda: mlm_batches(cached, tok, **common), False),
            ("mlm cached + prefetch_to_device", t_reuse, lambda: mlm_batches(cached, tok, **common), True),
            ("clm cached", t_reuse, lambda: clm_batches(cached, tok, **common), False),
            ("classification (tokenized per batch)", 0.0,
             lambda: classification_batches(corpus.classification("train"), tok, **common), False),
        ]
        for name, setup_s, make_iter, prefetch in cases:
            rate, steps = epoch_rate(make_iter, args.repeats, prefetch)
            rows.append({"case": name, "setup_s": f"{setup_s:.2f}", "batches/epoch": steps,
                         "batches/s": f"{rate / (B * T):.0f}", "tokens/s": f"{rate / 1e6:.2f} M"})  # fmt: skip
    print(f"loader throughput, batches of {B}x{T}, {args.threads} grain threads, median of {args.repeats} epochs")
    print(f"device: {device_description()}")
    print(f"default corpus: {len(train)} train documents, {cached.num_tokens} tokens, vocab {tok.vocab_size} "
          f"(corpus build/load {t_corpus:.2f}s, tokenizer {t_tok:.2f}s; cache reload {t_reuse:.3f}s)")  # fmt: skip
    print("setup_s: counting pass (streamed) / cache build (cached) / cache reload")
    print_table(rows, ["case", "setup_s", "batches/epoch", "batches/s", "tokens/s"])


if __name__ == "__main__":
    main()
