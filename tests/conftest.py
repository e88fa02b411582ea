"""Shared fixtures: an offline WordPiece vocab and random-init `transformers` checkpoints (tiny)."""

from __future__ import annotations

import os

import pytest

from bench.common import hf_model
from bench.corpus import MIXED, sentences, train_vocab


@pytest.fixture(scope="session")
def vocab_dir(tmp_path_factory) -> str:
    """A directory holding a lower-casing WordPiece `vocab.txt` (~2000 tokens) trained on stdlib docs."""
    path = tmp_path_factory.mktemp("vocab")
    train_vocab(sentences(3000), os.path.join(path, "vocab.txt"))
    return str(path)


@pytest.fixture(scope="session")
def mixed_texts() -> list[str]:
    """Accents, CJK, punctuation, emoji, whitespace oddities and very long text."""
    return MIXED + sentences(40) + ["word " * 700, "", "  ", "a\u0301b\u0327c"]


@pytest.fixture(scope="session")
def hf_dir(tmp_path_factory):
    """Factory: save a seeded random-init tiny `transformers` model for a head; returns (dir, hf_model)."""
    cache: dict = {}

    def make(head: str, **config_kw):
        key = (head, tuple(sorted(config_kw.items())))
        if key not in cache:
            model = hf_model(head, "small", seed=len(cache), **config_kw)
            path = tmp_path_factory.mktemp(head)
            model.save_pretrained(path)
            cache[key] = (str(path), model)
        return cache[key]

    return make
