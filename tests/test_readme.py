"""Issue 21 item 6: every Python block of the README runs on its own (no name from another block), against
tiny model directories at its placeholder paths."""

import os
import re

import pytest

from bench.common import hf_model
from bench.corpus import sentences, train_vocab

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLACEHOLDERS = {"path/to/hf_dir": ("masked_lm", "distilbert"), "path/to/bert_dir": ("base", "bert"),
                "path/to/xlm_roberta_dir": ("sequence_classification", "xlm-roberta"),
                "path/to/electra_dir": ("discriminator", "electra")}


def python_blocks(path: str) -> list[tuple[int, str]]:
    """(line number, code) of every ```python block of a Markdown file."""
    text = open(path, encoding="utf-8").read()
    return [(text[: m.start()].count("\n") + 1, m.group(1)) for m in re.finditer(r"```python\n(.*?)```", text, re.S)]


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> dict[str, str]:
    """A tiny checkpoint + WordPiece vocab per placeholder path (a masked-LM one, as distilbert-base-uncased)."""
    vocab = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    train_vocab(sentences(300), str(vocab), vocab_size=500)
    dirs = {}
    for placeholder, (head, arch) in PLACEHOLDERS.items():
        path = tmp_path_factory.mktemp(arch)
        hf_model(head, "small", arch=arch).save_pretrained(path)
        if arch == "xlm-roberta":      # a SentencePiece-style Unigram tokenizer.json, as XLM-R ships
            import transformers

            from tests.test_families import _unigram

            transformers.XLMRobertaTokenizerFast(tokenizer_object=_unigram(), model_max_length=128).save_pretrained(path)
        else:
            (path / "vocab.txt").write_text(vocab.read_text())
        dirs[placeholder] = str(path)
    return dirs


BLOCKS = python_blocks(os.path.join(ROOT, "README.md"))


def test_the_readme_has_its_snippets():
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("line,code", BLOCKS, ids=[f"README.md:{n}" for n, _ in BLOCKS])
def test_readme_block_runs_alone(line, code, model_dirs, tmp_path, monkeypatch):
    for placeholder, path in model_dirs.items():
        code = code.replace(f'"{placeholder}"', repr(path))
    assert "path/to/" not in code, f"README.md:{line}: a placeholder path the test does not provide"
    monkeypatch.chdir(tmp_path)  # what the snippets write ("out_dir", "out") lands here
    exec(compile(code, f"README.md:{line}", "exec"), {"__name__": "__readme__"})  # a fresh namespace per block
