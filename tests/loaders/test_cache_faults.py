"""Issue 21 item 8, token cache: a build killed with SIGKILL mid-way leaves no cache (nor its temporary
directory after the rerun), and the rerun equals an uninterrupted build; a truncated or damaged cache file is
detected, reported and rebuilt, never trusted."""

import os
import signal
import subprocess
import sys

import numpy as np
import pytest

import distilbert_jax as dj
from loaders import TextDataset, TokenStore

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHILD = """
import sys
import loaders.tokenize_cache as tc
import distilbert_jax as dj
from loaders import TextDataset, TokenStore
tc.CHUNK_DOCS = 4
TokenStore(TextDataset.from_files(sys.argv[1]), dj.Tokenizer.from_pretrained(sys.argv[2]), sys.argv[3])
"""


@pytest.fixture
def corpus(tok, files, tmp_path):
    tok_dir = tmp_path / "tok"
    tok.save_pretrained(tok_dir)
    return files.lines("corpus.txt", files.sentences(40, seed=2)), str(tok_dir)


def _expected(text_path, tok_dir, tmp_path):
    store = TokenStore(TextDataset.from_files(text_path), dj.Tokenizer.from_pretrained(tok_dir), tmp_path / "reference")
    return np.asarray(store.tokens).copy(), store.doc_offsets.copy()


def test_build_killed_midway_then_rerun_equals_an_uninterrupted_build(corpus, tmp_path):
    text_path, tok_dir = corpus
    cache = tmp_path / "cache"
    env = {**os.environ, "DISTILBERT_JAX_KILL_AT": "token_cache_chunk:5"}  # 4 chunks of 4 documents written
    r = subprocess.run([sys.executable, "-c", CHILD, text_path, tok_dir, str(cache)], cwd=ROOT, env=env)
    assert r.returncode == -signal.SIGKILL
    left = os.listdir(cache)
    assert left and all(".tmp" in name for name in left), left  # only the dead build's temporary directory
    store = TokenStore(TextDataset.from_files(text_path), dj.Tokenizer.from_pretrained(tok_dir), cache)
    tokens, offsets = _expected(text_path, tok_dir, tmp_path)
    assert store.rebuilt and np.array_equal(store.tokens, tokens) and np.array_equal(store.doc_offsets, offsets)
    assert [n for n in os.listdir(cache) if ".tmp" in n] == []  # the dead build's directory is gone


def _damage_tokens_truncated(d):
    with open(d / "tokens.bin", "r+b") as f:
        f.truncate(os.path.getsize(d / "tokens.bin") // 2)


def _damage_tokens_flipped(d):
    data = bytearray((d / "tokens.bin").read_bytes())
    data[len(data) // 2] ^= 0x01  # same size, one token changed
    (d / "tokens.bin").write_bytes(bytes(data))


def _damage_lengths(d):
    (d / "doc_lengths.npy").write_bytes((d / "doc_lengths.npy").read_bytes()[:-8])


def _damage_meta(d):
    (d / "meta.json").write_text((d / "meta.json").read_text()[:20])


@pytest.mark.parametrize("damage", [_damage_tokens_truncated, _damage_tokens_flipped, _damage_lengths, _damage_meta])
def test_damaged_cache_is_reported_and_rebuilt(corpus, tmp_path, damage):
    text_path, tok_dir = corpus
    tok = dj.Tokenizer.from_pretrained(tok_dir)
    cache = tmp_path / "cache"
    first = TokenStore(TextDataset.from_files(text_path), tok, cache)
    tokens = np.asarray(first.tokens).copy()
    del first
    damage(cache / os.listdir(cache)[0])
    with pytest.warns(UserWarning, match="cannot be trusted, rebuilding"):
        again = TokenStore(TextDataset.from_files(text_path), tok, cache)
    assert again.rebuilt and np.array_equal(again.tokens, tokens)
    assert not TokenStore(TextDataset.from_files(text_path), tok, cache).rebuilt  # whole again: reused
