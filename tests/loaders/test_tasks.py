import numpy as np
import pytest

from loaders import (IGNORE, TextDataset, classification_batches, clm_batches, mlm_batches,
                     token_classification_batches)


def _stream(tok, ds):
    return [t for text in ds.texts(range(len(ds))) for t in
            tok.backend.encode(text, add_special_tokens=False).ids + [tok.sep_token_id]]


def test_mlm_windows_pack_the_stream(tok, text_ds):
    it = mlm_batches(text_ds, tok, batch_size=4, seq_len=24, mask_prob=0.0, shuffle=False, drop_last=False)
    batches = list(it)
    rows = np.concatenate([b["input_ids"] for b in batches])
    mask = np.concatenate([b["attention_mask"] for b in batches])
    assert (rows[mask == 1][:1] == tok.cls_token_id).all() and (rows[:, 0][mask[:, 0] == 1] == tok.cls_token_id).all()
    content = [r[1 : m.sum() - 1] for r, m in zip(rows, mask) if m.sum()]
    assert np.array_equal(np.concatenate(content), _stream(tok, text_ds))  # every token once, in order
    assert all(r[m.sum() - 1] == tok.sep_token_id for r, m in zip(rows, mask) if m.sum())
    assert (rows[mask == 0] == tok.pad_token_id).all()
    assert all((b["labels"] == IGNORE).all() for b in batches)  # mask_prob 0


def test_clm_labels_shifted(tok, text_ds):
    it = clm_batches(text_ds, tok, batch_size=4, seq_len=16, shuffle=False, drop_last=False)
    batches = list(it)
    stream = _stream(tok, text_ds)
    ids = np.concatenate([b["input_ids"] for b in batches])
    labels = np.concatenate([b["labels"] for b in batches])
    mask = np.concatenate([b["attention_mask"] for b in batches])
    assert np.array_equal(ids[mask == 1], stream)
    assert np.array_equal(labels[:, :-1][mask[:, 1:] == 1], ids[:, 1:][mask[:, 1:] == 1])
    assert (labels[:, -1] == IGNORE).all() and (labels[:, :-1][mask[:, 1:] == 0] == IGNORE).all()
    assert it.steps_per_epoch == len(batches) == -(-(-(-len(stream) // 16)) // 4)


def test_classification_batches(tok, files):
    texts = files.sentences(9)
    ds = TextDataset.from_files(files.jsonl("c.jsonl", [{"text": t, "label": ["a", "b", "c"][i % 3]}
                                                        for i, t in enumerate(texts)]), label_field="label")
    it = classification_batches(ds, tok, batch_size=4, seq_len=12, shuffle=False, drop_last=False)
    assert it.num_labels == 3 and it.label_names == ["a", "b", "c"] and it.steps_per_epoch == 3
    batches = list(it)
    b = batches[0]
    assert b["input_ids"].shape == (4, 12) and b["labels"].shape == (4,) and b["labels"].dtype == np.int32
    assert list(b["labels"]) == [0, 1, 2, 0]
    want = tok(texts[:4], max_length=12, padding="max_length")
    assert np.array_equal(b["input_ids"], want.input_ids) and np.array_equal(b["attention_mask"], want.attention_mask)
    assert list(batches[-1]["labels"]) == [2, -100, -100, -100]
    with pytest.raises(ValueError, match="expected a classification TextDataset"):
        classification_batches(TextDataset.from_files(files.lines("t.txt", texts)), tok, batch_size=2)


def test_token_classification_first_piece_labels(tok, files):
    rows = [{"tokens": ["quickly", "zzqx", "fox"], "tags": ["ADV", "X", "N"]}, {"tokens": ["dog"], "tags": ["N"]}]
    ds = TextDataset.from_files(files.jsonl("t.jsonl", rows), tokens_field="tokens", tags_field="tags")
    it = token_classification_batches(ds, tok, batch_size=2, seq_len=16, shuffle=False, drop_last=False)
    assert it.label_names == ["ADV", "N", "X"]
    b = next(it)
    enc = tok.backend.encode(rows[0]["tokens"], is_pretokenized=True, add_special_tokens=False)
    n = len(enc.ids)
    assert b["input_ids"][0, 0] == tok.cls_token_id and b["input_ids"][0, n + 1] == tok.sep_token_id
    expected = [IGNORE] + [IGNORE if k and enc.word_ids[k - 1] == w else [0, 2, 1][w]
                           for k, w in enumerate(enc.word_ids)] + [IGNORE] * (16 - n - 1)  # fmt: skip
    assert list(b["labels"][0]) == expected and n > 3  # "zzqx" splits into several pieces
    dog = len(tok.backend.encode(["dog"], is_pretokenized=True, add_special_tokens=False).ids)
    assert b["labels"][1].tolist() == [IGNORE, 1] + [IGNORE] * 14 and b["attention_mask"][1].sum() == dog + 2


def test_seq_len_checked(tok, text_ds):
    with pytest.raises(ValueError, match="seq_len must be in"):
        mlm_batches(text_ds, tok, batch_size=2, seq_len=10_000)
