import numpy as np
import pytest

from loaders import IGNORE, mask_tokens, mlm_batches


def _masks(tok, text_ds, **kw):
    it = mlm_batches(text_ds, tok, batch_size=4, seq_len=32, num_threads=1, **kw)
    return it, list(it)


def test_statistics_and_never_specials(tok, text_ds):
    # the rule itself on a large synthetic batch: 15% picked, 80/10/10
    ids = np.random.default_rng(0).integers(5, tok.vocab_size, size=(400, 128)).astype(np.int32)
    maskable = np.ones_like(ids, bool)
    maskable[:, :3] = False
    replacement = np.arange(5, tok.vocab_size, dtype=np.int32)
    out, labels = mask_tokens(ids, maskable, np.arange(400), seed=1, epoch=0, mask_prob=0.15,
                              mask_token_id=tok.mask_token_id, replacement_ids=replacement)
    picked = labels != IGNORE
    assert not picked[:, :3].any() and np.array_equal(labels[picked], ids[picked])
    assert abs(picked.sum() / maskable.sum() - 0.15) < 0.01
    as_mask = (out == tok.mask_token_id) & picked
    same = (out == ids) & picked
    rand = picked & ~as_mask & ~same
    n = picked.sum()
    assert abs(as_mask.sum() / n - 0.8) < 0.02 and abs(rand.sum() / n - 0.1) < 0.015
    assert abs(same.sum() / n - 0.1) < 0.015  # (a random draw equal to the original counts here: ~1/V)
    assert np.array_equal(out[~picked], ids[~picked]) and np.isin(out[rand], replacement).all()

    # through the loader: never a special token or padding
    specials = np.array(tok.all_special_ids)
    _, batches = _masks(tok, text_ds, mask_prob=0.5, drop_last=False)
    for b in batches:
        picked = b["labels"] != IGNORE
        assert not np.isin(b["labels"][picked], specials).any()
        assert (b["attention_mask"][picked] == 1).all()
        assert b["input_ids"].dtype == b["labels"].dtype == b["attention_mask"].dtype == np.int32
    assert sum((b["labels"] != IGNORE).sum() for b in batches) > 0


def test_seeded_reproducible_and_new_each_epoch(tok, text_ds):
    _, a = _masks(tok, text_ds, seed=3, shuffle=False, epochs=2)
    _, b = _masks(tok, text_ds, seed=3, shuffle=False, epochs=2)
    _, c = _masks(tok, text_ds, seed=4, shuffle=False, epochs=2)
    assert all(np.array_equal(x["input_ids"], y["input_ids"]) for x, y in zip(a, b))
    half = len(a) // 2
    for e0, e1 in zip(a[:half], a[half:]):  # same windows (fixed order), different masks
        assert not np.array_equal(e0["labels"], e1["labels"])
    assert not all(np.array_equal(x["labels"], y["labels"]) for x, y in zip(a, c))


def test_bad_mask_prob(tok, text_ds):
    with pytest.raises(ValueError, match="mask_prob"):
        next(mlm_batches(text_ds, tok, batch_size=2, seq_len=16, mask_prob=1.5))
