import json
import warnings

import numpy as np
import pytest

from loaders import DataError, TextDataset



def test_txt_lines_and_blank_lines_counted(tmp_path, files):
    path = files.lines("a.txt", ["first line", "", "second line", "   ", "third"])
    ds = TextDataset.from_files(path)
    assert [ds[i]["text"] for i in range(len(ds))] == ["first line", "second line", "third"]
    assert ds.stats.records == 3 and ds.stats.blank_lines == 2 and ds.stats.num_skipped == 0
    assert ds[-1]["text"] == "third"
    with pytest.raises(IndexError):
        ds[3]


def test_txt_blocks(tmp_path, files):
    path = files.lines("a.txt", ["doc one line a", "doc one line b", "", "", "doc two", ""])
    ds = TextDataset.from_files(path, documents="blocks")
    assert ds.texts([0, 1]) == ["doc one line a\ndoc one line b", "doc two"]


def test_jsonl_field_and_many_files(tmp_path, files):
    a = files.jsonl("a.jsonl", [{"body": "alpha text", "id": 1}, {"body": "beta text"}])
    b = files.lines("b.txt", ["gamma text"])
    ds = TextDataset.from_files([a, b], text_field="body")
    assert ds.texts(range(3)) == ["alpha text", "beta text", "gamma text"] and ds.kind == "text"


def test_csv_classification_with_quoted_newline(tmp_path, files):
    path = tmp_path / "c.csv"
    path.write_text('text,label\n"hello, world",pos\n"multi\nline",neg\nplain,pos\n', encoding="utf-8")
    ds = TextDataset.from_files(str(path), label_field="label")
    assert ds.texts(range(3)) == ["hello, world", "multi\nline", "plain"]
    assert ds.label_names == ["neg", "pos"] and list(ds.labels) == [1, 0, 1] and ds.num_labels == 2
    assert ds[1] == {"text": "multi\nline", "label": 0}


def test_tsv_and_int_labels(tmp_path, files):
    path = files.lines("c.tsv", ["text\tlabel", "a b\t2", "c d\t0"])
    ds = TextDataset.from_files(path, label_field="label")
    assert ds.label_names == ["0", "1", "2"] and list(ds.labels) == [2, 0]


def test_given_label_names_and_unknown_label(tmp_path, files):
    path = files.jsonl("v.jsonl", [{"text": "a", "label": "y"}, {"text": "b", "label": "zz"}])
    with pytest.raises(DataError, match=r"v.jsonl:2: label 'zz' not in label_names"):
        TextDataset.from_files(path, label_field="label", label_names=["x", "y"])
    with pytest.warns(UserWarning, match="unknown_label"):
        ds = TextDataset.from_files(path, label_field="label", label_names=["x", "y"], on_error="skip")
    assert list(ds.labels) == [1] and ds.stats.skipped == {"unknown_label": 1}


def test_token_classification_records(tmp_path, files):
    path = files.jsonl("t.jsonl", [{"tokens": ["New", "York"], "tags": ["B", "I"]},
                                              {"tokens": ["hi"], "tags": ["O"]}])
    ds = TextDataset.from_files(path, tokens_field="tokens", tags_field="tags")
    assert ds.label_names == ["B", "I", "O"] and ds[0] == {"words": ["New", "York"], "tags": [0, 1]}
    bad = files.jsonl("b.jsonl", [{"tokens": ["a", "b"], "tags": ["O"]}])
    with pytest.raises(DataError, match=r"b.jsonl:1: 2 words but 1 tags"):
        TextDataset.from_files(bad, tokens_field="tokens")


# ---- bad input ------------------------------------------------------------------------------------
def test_empty_file(tmp_path, files):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match=r"empty.txt: empty file"):
        TextDataset.from_files(str(empty))
    good = files.lines("good.txt", ["some text"])
    with pytest.warns(UserWarning, match="empty_file"):
        ds = TextDataset.from_files([str(empty), good], on_error="skip")
    assert len(ds) == 1 and ds.stats.skipped == {"empty_file": 1}


def test_malformed_jsonl_raise_and_skip(tmp_path, files):
    path = tmp_path / "m.jsonl"
    path.write_text('{"text": "ok one"}\n{"text": "broken\n{"text": "ok two"}\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"m.jsonl:2: invalid JSON"):
        TextDataset.from_files(str(path))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        ds = TextDataset.from_files(str(path), on_error="skip")
    assert ds.texts(range(len(ds))) == ["ok one", "ok two"]
    assert ds.stats.skipped == {"invalid_json": 1, "bad_type": 1} and ds.stats.num_skipped == 2
    assert "m.jsonl:2" in ds.stats.examples[0] and "skipped 2 bad record(s)" in str(w[0].message)


def test_missing_field_and_wrong_type(tmp_path, files):
    path = files.jsonl("f.jsonl", [{"text": "fine"}, {"body": "no text"}, {"text": 5}, {"text": " "}])
    with pytest.raises(DataError, match=r"f.jsonl:2: missing field 'text' \(has \['body'\]\)"):
        TextDataset.from_files(path)
    with pytest.warns(UserWarning):
        ds = TextDataset.from_files(path, on_error="skip")
    assert len(ds) == 1 and ds.stats.skipped == {"missing_field": 1, "bad_type": 1, "empty_text": 1}
    wrong = files.jsonl("w.jsonl", [{"text": 5}])
    with pytest.raises(DataError, match=r"w.jsonl:1: field 'text' must be str, got int: 5"):
        TextDataset.from_files(wrong)


@pytest.mark.parametrize("ext", ["txt", "jsonl"])
def test_non_utf8(tmp_path, files, ext):
    path = tmp_path / f"u.{ext}"
    good = b'{"text": "good"}' if ext == "jsonl" else b"good"
    path.write_bytes(good + b"\n" + good[:-2] + b"\xff\xfe" + good[-2:] + b"\n" + good + b"\n")
    with pytest.raises(DataError, match=rf"u.{ext}:2: not valid UTF-8 \(byte 0xff at column"):
        TextDataset.from_files(str(path))
    with pytest.warns(UserWarning, match="not_utf8"):
        ds = TextDataset.from_files(str(path), on_error="skip")
    assert len(ds) == 2 and ds.stats.skipped == {"not_utf8": 1}


def test_csv_errors(tmp_path, files):
    no_col = files.lines("h.csv", ["body,label", "x,1"])
    with pytest.raises(DataError, match=r"h.csv:1: CSV header \['body', 'label'\] lacks the column\(s\) \['text'\]"):
        TextDataset.from_files(no_col, label_field="label")
    ragged = files.lines("r.csv", ["text,label", "x,1,extra", "y,0"])
    with pytest.raises(DataError, match=r"r.csv:2: expected 2 columns, got 3"):
        TextDataset.from_files(ragged, label_field="label")


def test_all_bad_and_bad_arguments(tmp_path, files):
    path = tmp_path / "bad.jsonl"
    path.write_text("nope\n", encoding="utf-8")
    with pytest.warns(UserWarning), pytest.raises(DataError, match="no records found"):
        TextDataset.from_files(str(path), on_error="skip")
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        TextDataset.from_files(str(tmp_path / "missing.txt"))
    with pytest.raises(ValueError, match="cannot tell the format"):
        TextDataset.from_files(files.lines("x.dat", ["a"]))
    with pytest.raises(ValueError, match="on_error"):
        TextDataset.from_files(files.lines("y.txt", ["a"]), on_error="ignore")


def test_grain_source_and_pickle(text_ds, files):
    import pickle

    import grain

    assert list(grain.MapDataset.source(text_ds)[:2]) == [text_ds[0], text_ds[1]]
    clone = pickle.loads(pickle.dumps(text_ds))
    assert clone.texts(range(5)) == text_ds.texts(range(5)) and np.array_equal(clone._starts, text_ds._starts)
    assert text_ds.texts([0]) == [files.sentences(60)[0]]
    assert json.dumps(text_ds.stats.skipped) == "{}"
