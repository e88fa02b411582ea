import os
import tracemalloc

import numpy as np

from loaders import TextDataset, TokenStore, build_tokenizer, mlm_batches


def _stream(tok, ds) -> np.ndarray:
    """The expected token stream: every document's ids then [SEP]."""
    return np.array([t for text in ds.texts(range(len(ds))) for t in
                     tok.backend.encode(text, add_special_tokens=False).ids + [tok.sep_token_id]])


def test_streamed_and_cached_spans_match(tok, text_ds, tmp_path):
    want = _stream(tok, text_ds)
    streamed = TokenStore(text_ds, tok)
    cached = TokenStore(text_ds, tok, cache_dir=tmp_path / "cache")
    assert not streamed.cached and streamed.tokens is None and cached.cached and cached.rebuilt
    assert isinstance(cached.tokens, np.memmap) and cached.tokens.dtype == np.uint16
    assert streamed.num_tokens == cached.num_tokens == len(want)
    spans = [(0, 7), (5, 90), (len(want) - 3, len(want)), (40, 40)]
    for store in (streamed, cached):
        for (a, b), got in zip(spans, store.spans(spans)):
            assert got.dtype == np.int32 and np.array_equal(got, want[a:b])


def test_cache_reused_then_rebuilt_when_source_changes(tok, files, tmp_path):
    path = files.lines("c.txt", files.sentences(20))
    cache = tmp_path / "cache"
    first = TokenStore(TextDataset.from_files(path), tok, cache)
    again = TokenStore(TextDataset.from_files(path), tok, cache)
    assert first.rebuilt and not again.rebuilt and again.num_tokens == first.num_tokens
    files.lines("c.txt", files.sentences(20, seed=5))  # new content, same path
    changed = TokenStore(TextDataset.from_files(path), tok, cache)
    assert changed.rebuilt and changed.num_tokens != first.num_tokens
    assert len(os.listdir(cache)) == 1  # rebuilt in place, no stale copies


def test_cache_rebuilt_when_tokenizer_changes(tok, text_ds, files, tmp_path):
    cache = tmp_path / "cache"
    TokenStore(text_ds, tok, cache)
    other = build_tokenizer([files.lines("o.txt", files.sentences(50, seed=9))], tmp_path / "tok2",
                            vocab_size=80, min_frequency=1)
    store = TokenStore(text_ds, other, cache)
    assert store.rebuilt and TokenStore(text_ds, other, cache).rebuilt is False


def test_streaming_does_not_hold_the_file(tok, files, monkeypatch):
    """A ~2.6 MB file streamed through a full MLM epoch in chunks of 16 documents: Python memory stays
    a small fraction of the file (it scales with the chunk, not the file)."""
    monkeypatch.setattr("loaders.tokenize_cache.CHUNK_DOCS", 16)
    line = " ".join(files.sentences(30, seed=3))  # one ~2.5 KB document per line
    path = files.lines("big.txt", [line] * 1200)
    size = os.path.getsize(path)
    tracemalloc.start()
    try:
        ds = TextDataset.from_files(path)
        it = mlm_batches(ds, tok, batch_size=16, seq_len=64, shuffle=False, drop_last=True, num_threads=1)
        steps = sum(1 for _ in it)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert steps == it.steps_per_epoch > 50
    assert peak < size / 4, (peak, size)
