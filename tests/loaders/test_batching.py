import numpy as np
import pytest

from loaders import BatchIterator, TokenStore, classification_batches, mlm_batches


def _ids_iter(n, **kw):
    """An iterator whose batches are just the example ids (makes order checks direct)."""
    kw.setdefault("process_index", 0)
    kw.setdefault("process_count", 1)
    return BatchIterator(n, lambda rows, epoch: {"ids": rows.copy(), "epoch": epoch}, num_threads=1, **kw)


def _ids(it):
    return [b["ids"] for b in it]


def test_fixed_order_vs_shuffled_per_epoch():
    fixed = _ids(_ids_iter(10, batch_size=5, shuffle=False, seed=0, drop_last=True, epochs=2))
    assert [list(b) for b in fixed] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]] * 2
    shuf = np.concatenate(_ids(_ids_iter(10, batch_size=5, shuffle=True, seed=0, drop_last=True, epochs=2)))
    e0, e1 = shuf[:10], shuf[10:]
    assert sorted(e0) == sorted(e1) == list(range(10)) and not np.array_equal(e0, e1)
    again = np.concatenate(_ids(_ids_iter(10, batch_size=5, shuffle=True, seed=0, drop_last=True, epochs=2)))
    other = np.concatenate(_ids(_ids_iter(10, batch_size=5, shuffle=True, seed=1, drop_last=True, epochs=2)))
    assert np.array_equal(shuf, again) and not np.array_equal(shuf, other)


def test_drop_last_vs_keep_all():
    dropped = _ids_iter(11, batch_size=4, shuffle=True, seed=0, drop_last=True)
    assert dropped.steps_per_epoch == 2 and len(np.concatenate(_ids(dropped))) == 8
    padded = _ids_iter(11, batch_size=4, shuffle=False, seed=0, drop_last=False)
    batches = _ids(padded)
    assert padded.steps_per_epoch == 3 == len(batches) and all(len(b) == 4 for b in batches)
    assert list(batches[-1]) == [8, 9, 10, -1]  # padding row keeps the shape static
    short = _ids(_ids_iter(11, batch_size=4, shuffle=False, seed=0, drop_last=False, pad_last=False))
    assert list(short[-1]) == [8, 9, 10]
    with pytest.raises(ValueError, match="cannot fill one batch"):
        _ids_iter(3, batch_size=4, shuffle=False, seed=0, drop_last=True)


def test_epochs_forever_and_state():
    it = _ids_iter(6, batch_size=3, shuffle=True, seed=0, drop_last=True, epochs=None)
    seen = [next(it) for _ in range(7)]
    assert [b["epoch"] for b in seen] == [0, 0, 1, 1, 2, 2, 3]
    assert it.state_dict()["epoch"] == 3 and it.state_dict()["position"] == 1
    with pytest.raises(ValueError, match="saved with batch_size=3"):
        _ids_iter(6, batch_size=2, shuffle=True, seed=0, drop_last=True).load_state_dict(it.state_dict())


def test_resume_mid_epoch_equals_uninterrupted(tok, text_ds):
    kw = dict(batch_size=4, seq_len=32, seed=7, shuffle=True, epochs=3, process_index=0, process_count=1)
    full = list(mlm_batches(text_ds, tok, **kw))
    steps = len(full) // 3
    first = mlm_batches(text_ds, tok, **kw)
    for _ in range(steps + 2):  # into the second epoch
        next(first)
    state = first.state_dict()
    assert state["epoch"] == 1 and state["position"] == 2
    resumed = mlm_batches(text_ds, tok, **kw)
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert len(rest) == len(full) - steps - 2
    for a, b in zip(rest, full[steps + 2 :]):
        for k in a:
            assert np.array_equal(a[k], b[k]), k


def test_sharding_disjoint_and_covering(tok, text_ds):
    store = TokenStore(text_ds, tok)
    kw = dict(batch_size=8, seq_len=32, seed=1, shuffle=True, drop_last=False, num_threads=1)
    whole = list(mlm_batches(store, tok, process_index=0, process_count=1, **kw))
    parts = [list(mlm_batches(store, tok, process_index=p, process_count=2, **kw)) for p in (0, 1)]
    assert len(parts[0]) == len(parts[1]) == len(whole)
    for g, p0, p1 in zip(whole, *parts):
        assert p0["input_ids"].shape == (4, 32)
        for k in g:  # the two local shares stack into the global batch, masks included
            assert np.array_equal(np.concatenate([p0[k], p1[k]]), g[k])
    # and the shares themselves are disjoint windows that together cover every window once
    rows = [np.concatenate(_ids(_ids_iter(13, batch_size=4, shuffle=True, seed=2, drop_last=False,
                                          process_index=p, process_count=2))) for p in (0, 1)]  # fmt: skip
    real = [r[r >= 0] for r in rows]
    assert not set(real[0]) & set(real[1]) and sorted(np.concatenate(real)) == list(range(13))
    with pytest.raises(ValueError, match="not divisible by process_count 3"):
        mlm_batches(store, tok, batch_size=8, process_index=0, process_count=3)


def test_classification_shards_read_only_their_rows(tok, files):
    from loaders import TextDataset

    ds = TextDataset.from_files(files.jsonl("c.jsonl", [{"text": s, "label": i % 3} for i, s in
                                                        enumerate(files.sentences(10))]), label_field="label")
    read = []
    original = ds.texts
    ds.texts = lambda idx: (read.extend(idx), original(idx))[1]
    it = classification_batches(ds, tok, batch_size=4, seq_len=16, shuffle=False, drop_last=False,
                                process_index=1, process_count=2, num_threads=1)
    batches = list(it)
    assert sorted(read) == [2, 3, 6, 7]  # rows 2-3 of each global batch of 4; the last has only 8, 9
    assert list(batches[-1]["labels"]) == [-100, -100] and (batches[-1]["attention_mask"] == 0).all()
