"""Shared fixtures: a tiny corpus written to tmp dirs and a WordPiece tokenizer trained on it offline."""

import json
import random

import pytest

WORDS = ("the quick brown fox jumps over lazy dog while seven wizards quietly judge boxing matches "
         "and python functions return values from modules packages classes objects lists tuples").split()


def sentences(n: int, seed: int = 0, lo: int = 4, hi: int = 20) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi))) + "." for _ in range(n)]


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def write_lines(path, lines) -> str:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="session")
def tok(tmp_path_factory):
    from loaders import build_tokenizer

    root = tmp_path_factory.mktemp("tok")
    corpus = write_lines(root / "corpus.txt", sentences(200, seed=1))
    return build_tokenizer([corpus], root / "tokenizer", vocab_size=120, min_frequency=1)


class Files:
    """Writes small test files into one tmp dir (helpers reachable from tests as the `files` fixture)."""

    sentences = staticmethod(sentences)

    def __init__(self, root):
        self.root = root

    def jsonl(self, name: str, rows) -> str:
        return write_jsonl(self.root / name, rows)

    def lines(self, name: str, lines) -> str:
        return write_lines(self.root / name, lines)


@pytest.fixture
def files(tmp_path) -> Files:
    return Files(tmp_path)


@pytest.fixture
def text_file(tmp_path) -> str:
    """60 one-line documents."""
    return write_lines(tmp_path / "docs.txt", sentences(60))


@pytest.fixture
def text_ds(text_file):
    from loaders import TextDataset

    return TextDataset.from_files(text_file)
