"""Offline text for benchmarks and tests: sentences from the Python standard library's docstrings,
and a WordPiece vocab trained on them with `tokenizers`."""

from __future__ import annotations

import importlib
import inspect
import re
import warnings

MODULES = ("json", "os", "collections", "itertools", "functools", "re", "string", "textwrap", "pathlib",
           "argparse", "logging", "datetime", "decimal", "fractions", "random", "statistics", "typing")  # fmt: skip
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
MIXED = ["Héllo Wörld — naïve café, déjà vu!", "東京タワーは高い。北京欢迎你", "emoji 😀🚀 and ℝ∑ symbols",
         "ÀÉÎÕÜ ÇÑ ßø accents", "tabs\tand\nnewlines  and   spaces", "URL https://example.com/a?b=c&d=e",
         "numbers 3.14159 1,000,000 -42 1e-5", "don't won't it's O'Neil's", "ALL CAPS SHOUTING",
         "a" * 150]  # fmt: skip


def sentences(n: int) -> list[str]:
    """`n` sentences cycled from stdlib docstrings (deterministic), mixed with unicode-heavy lines."""
    pool: list[str] = []
    for name in MODULES:
        module = importlib.import_module(name)
        with warnings.catch_warnings():  # typing.io & co. warn when touched
            warnings.simplefilter("ignore", DeprecationWarning)
            members = inspect.getmembers(module)
        for _, obj in members:
            doc = inspect.getdoc(obj) if callable(obj) or inspect.ismodule(obj) else None
            if doc:
                pool += [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n\n", doc) if len(s.strip()) > 20]
    pool = sorted(set(pool))
    pool[::25] = MIXED * (len(pool[::25]) // len(MIXED)) + MIXED[: len(pool[::25]) % len(MIXED)]
    return [pool[i % len(pool)] for i in range(n)]


def train_vocab(texts: list[str], path: str, vocab_size: int = 2000) -> None:
    """Train a lower-casing WordPiece vocab on `texts` and write it as `vocab.txt` at `path`."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIALS))
    vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(token + "\n" for token, _ in vocab)
