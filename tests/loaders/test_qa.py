"""Extractive-QA records (SQuAD-style JSONL) to batches with answer token positions."""

import warnings

import numpy as np
import pytest

from loaders import DataError, TextDataset, answer_token_span, qa_batches


def _rows(files, n=10):
    rows = []
    for i, context in enumerate(files.sentences(n, seed=3, lo=8, hi=20)):
        words = context.rstrip(".").split()
        answer = " ".join(words[2:4])
        start = context.index(answer)
        rows.append({"question": f"which words {i}?", "context": context,
                     "answers": {"text": [answer], "answer_start": [start]}})  # fmt: skip
    return rows


def test_batches_point_at_the_answer(files, tok):
    rows = _rows(files)
    ds = TextDataset.from_files(files.jsonl("qa.jsonl", rows), text_field="context", question_field="question")
    assert ds.kind == "qa" and ds[0]["answer_text"] == rows[0]["answers"]["text"][0]
    it = qa_batches(ds, tok, batch_size=4, seq_len=64, shuffle=False, drop_last=False, epochs=1,
                    process_index=0, process_count=1)  # fmt: skip
    batches = list(it)
    assert len(batches) == 3 and batches[0]["input_ids"].shape == (4, 64)
    seen = 0
    for b in batches:
        for row in range(4):
            s, e = b["start_positions"][row], b["end_positions"][row]
            if s == -100:  # padding row of the last batch
                assert e == -100 and b["attention_mask"][row].sum() == 0
                continue
            answer = rows[seen]["answers"]["text"][0]
            assert 0 < s <= e and tok.decode(b["input_ids"][row, s : e + 1]) == answer
            seen += 1
    assert seen == len(rows)


def test_truncated_answer_points_at_cls(files, tok):
    context = " ".join(["the quick brown fox"] * 30) + " python modules."
    answer = "python modules"
    rows = [{"question": "what?", "context": context,
             "answers": {"text": [answer], "answer_start": [context.index(answer)]}}]  # fmt: skip
    ds = TextDataset.from_files(files.jsonl("long.jsonl", rows), text_field="context", question_field="question")
    b = next(iter(qa_batches(ds, tok, batch_size=1, seq_len=32, shuffle=False, epochs=1)))
    assert (b["start_positions"][0], b["end_positions"][0]) == (0, 0)


def test_answer_token_span_rules():
    offsets = np.array([[0, 0], [0, 5], [0, 0], [0, 3], [4, 9], [10, 12], [0, 0]])
    seq = np.array([-1, 0, -1, 1, 1, 1, -1])
    assert answer_token_span(offsets, seq, 4, 12) == (4, 5)
    assert answer_token_span(offsets, seq, 5, 7) == (4, 4)  # inside one token
    assert answer_token_span(offsets, seq, 10, 20) == (0, 0)  # runs past the kept context


def test_bad_qa_records(files):
    good = _rows(files, 2)
    wrong_start = dict(good[0], answers={"text": [good[0]["answers"]["text"][0]], "answer_start": [0]})
    no_answers = {k: v for k, v in good[1].items() if k != "answers"}
    path = files.jsonl("bad.jsonl", [good[0], wrong_start, no_answers, dict(good[1], answers={"text": []})])
    with pytest.raises(DataError, match=r"bad.jsonl:2: answer .* is not at context\[0:\]"):
        TextDataset.from_files(path, text_field="context", question_field="question")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = TextDataset.from_files(path, text_field="context", question_field="question", on_error="skip")
    assert len(ds) == 1 and ds.stats.skipped == {"bad_answer": 2, "missing_field": 1}
    with pytest.raises(ValueError, match="expected a qa TextDataset"):
        qa_batches(TextDataset.from_files(files.lines("t.txt", ["a b c"])), None, batch_size=1)


def _run_qa_features(hf_tok, rows, seq_len, stride):
    """Hugging Face's run_qa `prepare_train_features`, restated: windows and answer positions per window."""
    enc = hf_tok([r["question"] for r in rows], [r["context"] for r in rows], truncation="only_second",
                 max_length=seq_len, stride=stride, return_overflowing_tokens=True, return_offsets_mapping=True,
                 padding="max_length")  # fmt: skip
    starts, ends = [], []
    for i, offsets in enumerate(enc["offset_mapping"]):
        ids, seq = enc["input_ids"][i], enc.sequence_ids(i)
        cls = ids.index(hf_tok.cls_token_id)
        row = rows[enc["overflow_to_sample_mapping"][i]]
        start_char = row["answers"]["answer_start"][0]
        end_char = start_char + len(row["answers"]["text"][0])
        first = seq.index(1)
        last = len(ids) - 1 - seq[::-1].index(1)
        if not (offsets[first][0] <= start_char and offsets[last][1] >= end_char):
            starts.append(cls)
            ends.append(cls)
            continue
        while first < len(offsets) and offsets[first][0] <= start_char:
            first += 1
        starts.append(first - 1)
        while offsets[last][1] >= end_char:
            last -= 1
        ends.append(last + 1)
    return np.array(enc["input_ids"]), np.array(starts), np.array(ends)


def test_long_contexts_become_windows_like_run_qa(files, tok, tmp_path):
    """A context of several thousand tokens whose answer lies far beyond the first window: with `stride`
    every window is a training row, the answer's positions in the window that holds it and [CLS] in the
    others — the same rows and labels as Hugging Face's run_qa builds."""
    transformers = pytest.importorskip("transformers")
    filler = " ".join(files.sentences(300, seed=5))
    answer = "seven wizards judge python"
    long_context = filler + " so " + answer + " then " + " ".join(files.sentences(40, seed=6))
    rows = _rows(files, 3) + [{"question": "who judges?", "context": long_context,
                               "answers": {"text": [answer], "answer_start": [long_context.index(answer)]}}]  # fmt: skip
    ds = TextDataset.from_files(files.jsonl("qa.jsonl", rows), text_field="context", question_field="question")
    it = qa_batches(ds, tok, batch_size=16, seq_len=64, stride=16, shuffle=False, drop_last=False, epochs=1,
                    process_index=0, process_count=1)  # fmt: skip
    batches = list(it)
    real = np.concatenate([b["start_positions"] for b in batches]) != -100
    ids = np.concatenate([b["input_ids"] for b in batches])[real]
    starts = np.concatenate([b["start_positions"] for b in batches])[real]
    ends = np.concatenate([b["end_positions"] for b in batches])[real]
    assert len(tok.backend.encode(long_context).ids) > 3000 and len(ids) > 60
    tok.save_pretrained(tmp_path / "hf_tok")
    hf_tok = transformers.DistilBertTokenizerFast.from_pretrained(tmp_path / "hf_tok")
    ref_ids, ref_starts, ref_ends = _run_qa_features(hf_tok, rows, 64, 16)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_array_equal(starts, ref_starts)
    np.testing.assert_array_equal(ends, ref_ends)
    hits = np.flatnonzero(starts > 0)
    assert len(hits) >= 4 and hits.max() > 40  # the long example's answer sits in a late window
    for row in hits[hits >= 3]:
        assert tok.decode(ids[row, starts[row] : ends[row] + 1]) == answer
    with pytest.raises(ValueError, match="stride must be in"):
        qa_batches(ds, tok, batch_size=4, seq_len=64, stride=40)
