import json
import os

import numpy as np
import pytest

import distilbert_jax as dj
from loaders import PACKAGES, TAGS, build_tokenizer, default_corpus, mlm_batches
from loaders.corpus import word_tag


def _fake_stdlib(root, files) -> str:
    """A tiny stand-in for the standard library: a few modules with docstrings."""
    lines = files.sentences(40, seed=2, lo=8, hi=14)
    for k, module in enumerate(["asyncio/__init__.py", "asyncio/tasks.py", "email/parser.py", "json/decoder.py",
                                "test/test_skip.py", "xml/dom/minidom.py", "broken.py"]):  # fmt: skip
        path = root / module
        path.parent.mkdir(parents=True, exist_ok=True)
        body = "def (:\n" if module == "broken.py" else "".join(
            f'def f{i}():\n    """{lines[(5 * k + i) % 40]} call os.path.join() 42 times."""\n' for i in range(5))
        path.write_text(f'"""Module {module}: {lines[k]}"""\n' + body, encoding="utf-8")
    return str(root)


def test_default_corpus_deterministic_and_labelled(tmp_path, files):
    stdlib = _fake_stdlib(tmp_path / "lib", files)
    a = default_corpus(tmp_path / "a", stdlib=stdlib)
    b = default_corpus(tmp_path / "b", stdlib=stdlib)
    for task in ("pretrain", "classify", "tokens"):
        for split in ("train", "valid"):
            assert open(a.path(task, split), "rb").read() == open(b.path(task, split), "rb").read()
    manifest = json.load(open(os.path.join(a.root, "manifest.json")))
    counts = manifest["counts"]
    assert counts["pretrain_train"] + counts["pretrain_valid"] == 30  # 5 modules x 6 docstrings (test/ and broken.py skipped)
    assert counts["classify_train"] + counts["classify_valid"] == 24  # asyncio, email, xml (json is not a label)
    cls = a.classification("train")
    assert cls.label_names == list(PACKAGES) and {cls.label_names[i] for i in cls.labels} <= {"asyncio", "email", "xml"}
    tokens = a.token_classification("train")
    rec = tokens[0]
    assert tokens.label_names == list(TAGS) and len(rec["words"]) == len(rec["tags"])
    assert [word_tag(w) for w in ("os.path.join()", "42", "times.", "`sys_exit`")] == ["CODE", "NUM", "O", "CODE"]


def test_build_tokenizer_hf_loadable(tmp_path, files):
    path = files.lines("c.txt", files.sentences(100))
    tok = build_tokenizer([path], tmp_path / "tok", vocab_size=100, min_frequency=1)
    assert {"tokenizer.json", "vocab.txt", "tokenizer_config.json"} <= set(os.listdir(tmp_path / "tok"))
    again = dj.Tokenizer.from_pretrained(tmp_path / "tok")
    text = files.sentences(3, seed=8)
    assert np.array_equal(again(text).input_ids, tok(text).input_ids)
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    assert hf(text[0])["input_ids"] == tok(text[:1]).input_ids[0].tolist()


def test_default_corpus_end_to_end(tmp_path, files):
    corpus = default_corpus(tmp_path / "c", stdlib=_fake_stdlib(tmp_path / "lib", files))
    tok = corpus.tokenizer(vocab_size=150)
    assert os.path.isdir(os.path.join(corpus.root, "tokenizer-150")) and tok.vocab_size <= 150
    batch = next(mlm_batches(corpus.pretrain("train"), tok, batch_size=2, seq_len=32, process_count=1, process_index=0))
    assert batch["input_ids"].shape == (2, 32)
