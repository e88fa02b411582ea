"""The 16-way module task built from this Python's standard library: deterministic, large enough for a
standard error <= 0.01 (>= 2,500 evaluation sentences), no sentence in both splits, the corpus's own
validation docstrings all on the evaluation side; bad class counts raise naming the problem."""

import json
import zlib

import pytest

from loaders import default_corpus, module_task
from loaders.module_task import docstring_sentences


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpora")
    return default_corpus(root / "a"), default_corpus(root / "b")


def test_module_task_deterministic_sizes_and_disjoint(corpora):
    a, b = (module_task(16, corpus=c) for c in corpora)
    for split in ("train", "valid"):
        assert open(a.path(split), "rb").read() == open(b.path(split), "rb").read()
    assert a.label_names == b.label_names and len(a.label_names) == 16
    assert a.counts["valid"] >= 2500 and a.counts["train"] >= 4000
    rows = {s: [json.loads(line) for line in open(a.path(s), encoding="utf-8")] for s in ("train", "valid")}
    texts = {s: [r["text"] for r in rs] for s, rs in rows.items()}
    assert not set(texts["train"]) & set(texts["valid"]) and len(set(texts["valid"])) == len(texts["valid"])
    # every label has examples on both sides; no class is a majority (chance is far below 50 %)
    for s, rs in rows.items():
        per = {name: sum(r["label"] == name for r in rs) for name in a.label_names}
        assert min(per.values()) > 20 and max(per.values()) < 0.2 * len(rs), (s, per)
    # the corpus's own validation docstrings (unseen by masked-LM training) are evaluation data only
    valid_docs = [json.loads(line) for line in open(corpora[0].path("pretrain", "valid"), encoding="utf-8")]
    assert all(zlib.crc32(d["text"].encode()) % 10 == 0 for d in valid_docs)
    held = {s for d in valid_docs if d["module"].split(".")[0] in a.label_names for s in docstring_sentences(d["text"])}
    assert held and not held & set(texts["train"])
    ds = a.classification("valid")
    assert len(ds) == a.counts["valid"] and ds.label_names == list(a.label_names)
    assert module_task(16, corpus=corpora[0]).counts == a.counts  # opened, not rebuilt


def test_sentences_split_and_short_ones_dropped():
    doc = "Return the value of the given x.  Raise ValueError if it\nis negative.\n\nShort one.\n\nA second paragraph of text here!"
    assert docstring_sentences(doc) == ["Return the value of the given x.", "Raise ValueError if it is negative.",
                                        "A second paragraph of text here!"]  # fmt: skip


@pytest.mark.parametrize("classes, match", [(1, "classes must be an int >= 2"), (10_000, "fewer than classes=10000")])
def test_bad_class_counts(corpora, classes, match):
    with pytest.raises(ValueError, match=match):
        module_task(classes, corpus=corpora[0])
