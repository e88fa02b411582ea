"""Our WordPiece tokenizer gives the same ids as transformers' DistilBertTokenizerFast."""

import os

import numpy as np
import pytest
import transformers

import distilbert_jax as dj


@pytest.fixture(scope="module")
def pair(vocab_dir):
    return dj.Tokenizer.from_pretrained(vocab_dir), transformers.DistilBertTokenizerFast.from_pretrained(vocab_dir)


def test_same_ids_as_transformers(pair, mixed_texts):
    ours, hf = pair
    batch = ours(mixed_texts, max_length=128)
    ref = hf(mixed_texts, max_length=128, padding=True, truncation=True, return_tensors="np")
    np.testing.assert_array_equal(batch.input_ids, ref["input_ids"])
    np.testing.assert_array_equal(batch.attention_mask, ref["attention_mask"])
    assert batch.input_ids.dtype == np.int32 and batch.input_ids.shape[1] == 128  # the long text was truncated
    assert (batch.input_ids != ours.unk_token_id).sum() > 0.8 * batch.attention_mask.sum()  # a real vocab
    for text in mixed_texts[:15]:
        assert ours([text]).input_ids[0].tolist() == hf(text)["input_ids"], text


def test_pairs_offsets_and_sequence_ids(pair):
    ours, hf = pair
    questions = ["What does json do?", "Where is the file?"]
    contexts = ["The json module encodes and decodes JSON documents. " * 20, "It is in the os module."]
    batch = ours(questions, contexts, max_length=64, truncation="only_second")
    ref = hf(questions, contexts, max_length=64, truncation="only_second", padding=True, return_tensors="np",
             return_offsets_mapping=True)  # fmt: skip
    np.testing.assert_array_equal(batch.input_ids, ref["input_ids"])
    np.testing.assert_array_equal(batch.offsets, ref["offset_mapping"])
    for row in range(2):
        assert batch.sequence_ids[row].tolist() == [-1 if s is None else s for s in ref.sequence_ids(row)] + \
            [-1] * (batch.input_ids.shape[1] - len(ref.sequence_ids(row)))  # fmt: skip
    # offsets of context tokens point into the context text
    tok = np.where(batch.sequence_ids[1] == 1)[0][0]
    s, e = batch.offsets[1, tok]
    assert contexts[1][s:e].lower() == ours.decode([batch.input_ids[1, tok]])


def test_tokenizer_json_and_cased_vocab(pair, vocab_dir, tmp_path, mixed_texts):
    ours, hf = pair
    hf.save_pretrained(tmp_path / "hf")  # writes tokenizer.json
    assert os.path.exists(tmp_path / "hf" / "tokenizer.json")
    from_json = dj.Tokenizer.from_pretrained(tmp_path / "hf")
    np.testing.assert_array_equal(from_json(mixed_texts).input_ids, ours(mixed_texts).input_ids)
    cased = dj.Tokenizer.from_vocab(os.path.join(vocab_dir, "vocab.txt"), lowercase=False)
    hf_cased = transformers.DistilBertTokenizerFast.from_pretrained(vocab_dir, do_lower_case=False)
    texts = ["Héllo Wörld ÀÉÎ", "The JSON Module"]
    np.testing.assert_array_equal(cased(texts).input_ids, hf_cased(texts, padding=True, return_tensors="np")["input_ids"])


def test_save_pretrained_loads_in_transformers(pair, tmp_path, mixed_texts):
    ours, _ = pair
    ours.save_pretrained(tmp_path / "t")
    auto = transformers.AutoTokenizer.from_pretrained(tmp_path / "t")
    ref = auto(mixed_texts, max_length=64, padding=True, truncation=True, return_tensors="np")
    np.testing.assert_array_equal(ours(mixed_texts, max_length=64).input_ids, ref["input_ids"])
    assert ours.decode(ours(["the json module"]).input_ids[0]) == "the json module"


def test_padding_options(pair):
    ours, _ = pair
    assert ours(["a b", "c"], max_length=16, padding="max_length").input_ids.shape == (2, 16)
    assert ours(["a b c d e"], pad_to_multiple_of=8).input_ids.shape == (1, 8)


@pytest.mark.parametrize(
    "args, kwargs, error, match",
    [
        (([],), {}, ValueError, "texts is empty"),
        ((["ok", 3],), {}, TypeError, r"texts\[1\] must be a str, got int"),
        ((None,), {}, TypeError, "must be a string or a list"),
        ((["ok"], ["a", "b"]), {}, ValueError, "texts has 1 items but text_pair has 2"),
        ((["ok"],), dict(max_length=100000), ValueError, "max_length must be in"),
        ((["word " * 600],), dict(truncation=False), ValueError, "longer than max_length=512"),
        ((["ok"],), dict(padding="left"), ValueError, "padding must be"),
        ((["ok"],), dict(truncation="middle"), ValueError, "truncation must be"),
        ((["ok", "\ud800x"],), {}, ValueError, r"texts\[1\] holds '\\ud800' at character 0, a lone surrogate"),
        ((["q"], ["ok", "a\udfffb"][1:]), {}, ValueError, r"text_pair\[0\] holds '\\udfff' at character 1"),
        ((["short", "word " * 30], ["a", "b"]), dict(truncation="only_second", max_length=10), ValueError,
         r"tokenizing texts\[1\] 'word word.* with text_pair\[1\] 'b' failed: Truncation error.*other text alone"),
    ],
)
def test_bad_input(pair, args, kwargs, error, match):
    ours, _ = pair
    with pytest.raises(error, match=match):
        ours(*args, **kwargs)


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither tokenizer.json nor vocab.txt"):
        dj.Tokenizer.from_pretrained(tmp_path)
    (tmp_path / "vocab.txt").write_text("hello\nworld\n")
    with pytest.raises(ValueError, match="lacks the special tokens"):
        dj.Tokenizer.from_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{broken")
    with pytest.raises(ValueError, match="not a valid tokenizers file"):
        dj.Tokenizer.from_pretrained(tmp_path)


def test_overflowing_windows_equal_transformers(pair, mixed_texts):
    """Question + long context split into windows overlapping by `stride`: the same rows, offsets and
    window → example mapping as DistilBertTokenizerFast(return_overflowing_tokens=True, stride=...)."""
    ours, hf = pair
    contexts = [" ".join(mixed_texts[20:60]), "a short context.", mixed_texts[-4]]
    questions = ["what is it?", "a longer question about the thing here?", "why?"]
    for max_length, stride in ((64, 16), (48, 0)):
        b = ours(questions, contexts, max_length=max_length, truncation="only_second", stride=stride,
                 return_overflowing_tokens=True)  # fmt: skip
        ref = hf(questions, contexts, max_length=max_length, truncation="only_second", stride=stride, padding=True,
                 return_overflowing_tokens=True, return_offsets_mapping=True, return_tensors="np")  # fmt: skip
        assert len(b) > len(questions) + 3
        np.testing.assert_array_equal(b.input_ids, ref["input_ids"])
        np.testing.assert_array_equal(b.attention_mask, ref["attention_mask"])
        np.testing.assert_array_equal(b.offsets, ref["offset_mapping"])
        np.testing.assert_array_equal(b.overflow_to_sample_mapping, ref["overflow_to_sample_mapping"])
        for row in range(len(b)):
            want = [-1 if s is None else s for s in ref.sequence_ids(row)]
            assert b.sequence_ids[row].tolist() == want
    assert ours(["x"]).overflow_to_sample_mapping is None
    with pytest.raises(ValueError, match="stride must be"):
        ours(["x"], stride=4)
