"""embed() and question-answering span decoding."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import distilbert_jax as dj


@pytest.fixture(scope="module")
def encoder(vocab_dir):
    tok = dj.Tokenizer.from_pretrained(vocab_dir)
    config = dj.small_config(vocab_size=tok.vocab_size)
    model = dj.build_model(config)
    return model, dj.init_params(model, 1), tok


def test_embed_matches_manual_pooling(encoder):
    model, variables, tok = encoder
    texts = ["The json module.", "Paths and files in the os module are handled here.", "x"]
    for pooling in ("cls", "mean"):
        got = dj.embed(model, variables, tok, texts, pooling=pooling, batch_size=2)
        for i, text in enumerate(texts):
            b = tok([text])
            h = np.asarray(model.apply(variables, b.input_ids, b.attention_mask).last_hidden_state[0])
            want = h[0] if pooling == "cls" else h.mean(0)
            np.testing.assert_allclose(got[i], want, atol=1e-5)
    unit = dj.embed(model, variables, tok, texts, normalize=True)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-5)


def test_embed_sorts_by_length_keeps_order_and_bounds_compilations(encoder):
    """Many texts of mixed lengths (several tokenizer windows): rows come back in input order, equal to
    embedding each text alone, and the encoder compiles once per length bucket at most."""
    from distilbert_jax.inference import pool_hidden

    model, variables, tok = encoder
    rng = np.random.default_rng(0)
    words = "json module paths files handled here data value list".split()
    texts = [" ".join(rng.choice(words, size=int(n))) for n in rng.integers(1, 100, size=300)]
    pool_hidden.clear_cache()
    got = dj.embed(model, variables, tok, texts, batch_size=2)  # windows of 128 texts
    limit = model.config.max_position_embeddings
    assert pool_hidden._cache_size() <= limit // 32
    for i in (0, 1, 150, 299):
        b = tok([texts[i]])
        h = np.asarray(model.apply(variables, b.input_ids, b.attention_mask).last_hidden_state[0])
        np.testing.assert_allclose(got[i], h.mean(0), atol=1e-5)


def test_embed_errors(encoder):
    model, variables, tok = encoder
    with pytest.raises(ValueError, match="pooling"):
        dj.embed(model, variables, tok, ["a"], pooling="weightedmean")
    with pytest.raises(ValueError, match="empty"):
        dj.embed(model, variables, tok, [])
    with pytest.raises(TypeError, match=r"texts\[0\]"):
        dj.embed(model, variables, tok, [b"bytes"])


def test_decode_answer_rules():
    #        [CLS] q   [SEP] c0  c1  c2  c3  [SEP] pad
    seq = np.array([-1, 0, -1, 1, 1, 1, 1, -1, -1])
    offsets = np.array([[0, 0], [0, 4], [0, 0], [0, 3], [4, 7], [8, 11], [12, 15], [0, 0], [0, 0]])
    context = "one two six ten"
    start = np.array([9.0, 9, 0, 0, 5, 0, 0, 9, 9])  # the question and specials score high: never chosen
    end = np.array([9.0, 9, 0, 0, 0, 0, 4, 9, 9])
    best = dj.decode_answer(start, end, offsets, seq, context, max_answer_length=30, top_k=3)
    assert best[0].text == "two six ten" and (best[0].start, best[0].end) == (4, 15)
    assert 0 < best[2].score <= best[1].score <= best[0].score <= 1
    short = dj.decode_answer(start, end, offsets, seq, context, max_answer_length=2)[0]
    assert len(short.text.split()) <= 2
    backwards = dj.decode_answer(np.array([0, 0, 0, 0, 0, 0, 9.0, 0, 0]), np.array([0, 0, 0, 9.0, 0, 0, 0, 0, 0]),
                                 offsets, seq, context)[0]  # fmt: skip
    assert backwards.start <= backwards.end
    assert dj.decode_answer(start, end, offsets, np.full(9, -1), context) == []
    with pytest.raises(ValueError, match="shapes disagree"):
        dj.decode_answer(start[:3], end, offsets, seq, context)


def test_answer_questions_end_to_end(vocab_dir):
    tok = dj.Tokenizer.from_pretrained(vocab_dir)
    model = dj.build_model(dj.small_config(vocab_size=tok.vocab_size), "question_answering")
    variables = dj.init_params(model, 2)
    contexts = ["The json module encodes data.", "Files live in the os module, see pathlib too."]
    answers = dj.answer_questions(model, variables, tok, ["What encodes?", "Where are files?"], contexts)
    for answer, context in zip(answers, contexts):
        assert answer is not None and answer.text and answer.text in context
        assert context[answer.start : answer.end] == answer.text
    with pytest.raises(ValueError, match="question_answering model"):
        dj.answer_questions(dj.build_model(model.config), variables, tok, ["q"], ["c"])


def test_embed_with_bf16(encoder):
    model, variables, tok = encoder
    m16 = dj.build_model(model.config, "base", jnp.bfloat16)
    a = dj.embed(model, variables, tok, ["the json module"])
    b = dj.embed(m16, variables, tok, ["the json module"])
    assert np.abs(a - b).max() < 0.1


class _Pointer(dj.DistilBertForQuestionAnswering):
    """A QA "model" whose start / end logits mark two given token ids (to test window handling)."""

    start_id: int = 0
    end_id: int = 0

    @nn.compact
    def __call__(self, input_ids=None, attention_mask=None, **_):
        start = jnp.where(input_ids == self.start_id, 8.0, 0.0)
        end = jnp.where(input_ids == self.end_id, 8.0, 0.0)
        return dj.HeadOutput(logits=None, last_hidden_state=jnp.zeros(input_ids.shape + (1,)),
                             start_logits=start, end_logits=end)  # fmt: skip


def test_answer_questions_finds_the_answer_beyond_the_first_window(vocab_dir):
    """A context of several thousand tokens used to be truncated to its first 384: the answer near its
    end was never seen. Now every window is scored and the best span of any window wins."""
    tok = dj.Tokenizer.from_pretrained(vocab_dir)
    start_id, end_id = (tok.backend.token_to_id(w) for w in ("integer", "object"))
    filler = "the value of the list returns the module file string . " * 400  # ~4400 tokens
    context = filler + "an integer is an object here . " + filler[:2000]
    model = _Pointer(dj.small_config(vocab_size=tok.vocab_size), start_id=start_id, end_id=end_id)
    batch = tok(["what is it?"], [context], max_length=384, truncation="only_second", stride=128,
                return_overflowing_tokens=True)  # fmt: skip
    assert len(batch) > 10 and batch.attention_mask.sum() > 5000
    [answer] = dj.answer_questions(model, {"params": {}}, tok, ["what is it?"], [context], batch_size=4)
    assert answer.text == "integer is an object" and answer.start == context.index("integer is an object")
    assert answer.score > 0.5
    [short] = dj.answer_questions(model, {"params": {}}, tok, ["what?"], ["an integer or an object"])
    assert short.text == "integer or an object"


@pytest.fixture(scope="module")
def qa_setup(vocab_dir):
    """A tiny random QA model and 140 (question, context) pairs of mixed lengths, one context long
    enough to overflow into several windows of 128 tokens."""
    tok = dj.Tokenizer.from_pretrained(vocab_dir)
    model = dj.build_model(dj.small_config(vocab_size=tok.vocab_size), "question_answering")
    rng = np.random.default_rng(1)
    words = "json module paths files handled here data value list integer object string".split()
    contexts = [" ".join(rng.choice(words, size=int(n))) + " ." for n in rng.integers(1, 110, size=140)]
    contexts[130] = " ".join(rng.choice(words, size=450)) + " ."  # ~6 windows with stride 64
    questions = [" ".join(rng.choice(words, size=int(n))) + "?" for n in rng.integers(1, 8, size=140)]
    return model, dj.init_params(model, 3), tok, questions, contexts


def _reference_answers(model, variables, tok, questions, contexts, max_length):
    """Every row of all pairs tokenized at once, padded to the longest, in one unsorted batch; the best
    window of each pair is the first with the highest score (the rule answer_questions keeps)."""
    b = tok(questions, contexts, max_length=max_length, truncation="only_second", stride=max_length // 2,
            return_overflowing_tokens=True)  # fmt: skip
    out = jax.jit(model.apply)(variables, b.input_ids, b.attention_mask, token_type_ids=b.token_type_ids)
    starts, ends = np.asarray(out.start_logits), np.asarray(out.end_logits)
    best = [None] * len(contexts)
    for row, i in enumerate(b.overflow_to_sample_mapping):
        found = dj.decode_answer(starts[row], ends[row], b.offsets[row], b.sequence_ids[row], contexts[i])
        if found and (best[i] is None or found[0].score > best[i].score):
            best[i] = found[0]
    return best, b


def test_answer_questions_sorted_batches_match_one_unsorted_batch_and_reuse_compilations(qa_setup):
    """Length-sorted, bucketed batches over two tokenizer windows (batch_size 2 → windows of 128 pairs)
    give the answers of one unsorted batch, a context of several windows included; the QA function
    compiles at most max_length / 32 shapes, and a second call compiles none."""
    from distilbert_jax.inference import qa_logits

    model, variables, tok, questions, contexts = qa_setup
    want, batch = _reference_answers(model, variables, tok, questions, contexts, 128)
    assert (batch.overflow_to_sample_mapping == 130).sum() >= 4  # the long context spans several windows
    assert len(np.unique(batch.attention_mask.sum(1))) > 20  # many lengths, yet few shapes below
    qa_logits.clear_cache()
    got = dj.answer_questions(model, variables, tok, questions, contexts, max_length=128, batch_size=2)
    compiled = qa_logits._cache_size()
    assert 1 <= compiled <= 128 // 32
    again = dj.answer_questions(model, variables, tok, questions[::-1], contexts[::-1], max_length=128, batch_size=2)
    assert qa_logits._cache_size() == compiled  # shapes reused across calls: no recompilation
    for g, w in zip(got + again[::-1], want + want):  # other batch companions: same answers, float noise
        assert (g.text, g.start, g.end) == (w.text, w.start, w.end)
        assert g.score == pytest.approx(w.score, rel=1e-4)


def test_answer_questions_error_names_the_window_of_a_bad_pair(vocab_dir):
    tok = dj.Tokenizer.from_pretrained(vocab_dir)
    model = _Pointer(dj.small_config(vocab_size=tok.vocab_size))
    questions = ["what?"] * 70
    questions[66] = "what " * 200  # the question alone is longer than max_length: cannot truncate the context
    with pytest.raises(ValueError, match=r"texts\[2\].*counts from input 64"):
        dj.answer_questions(model, {"params": {}}, tok, questions, ["a context ."] * 70, max_length=64, batch_size=1)


def test_sorted_batches_pad_to_buckets_sorted_by_length_with_few_filler_rows(vocab_dir):
    """The batching embed and answer_questions share: every row once, batches sorted longest first
    within a tokenizer window, widths multiples of 32 covering each row, few rows for small inputs."""
    from distilbert_jax.inference import _sorted_batches

    tok = dj.Tokenizer.from_pretrained(vocab_dir)
    texts = ["word " * n for n in (3, 70, 10, 40, 1, 100, 33)] * 20  # 140 texts: windows of 64 with batch 1
    for batch_size, n in ((1, 140), (4, 140), (32, 3)):
        seen, shapes = [], set()
        batches = _sorted_batches(lambda lo, hi: tok(texts[lo:hi], max_length=128), n, batch_size, 128,
                                  tok.pad_token_id, lambda ids, mask, types: (ids, mask))  # fmt: skip
        for first, batch, rows, (ids, mask) in batches:
            lengths = batch.attention_mask[rows].sum(1)
            assert (np.diff(lengths) <= 0).all() and ids.shape[1] % 32 == 0 and ids.shape[1] >= lengths.max()
            np.testing.assert_array_equal(mask[: len(rows)].sum(1), lengths)
            common = min(ids.shape[1], batch.input_ids.shape[1])
            np.testing.assert_array_equal(ids[: len(rows), :common], batch.input_ids[rows, :common])
            seen += list(first + rows)
            shapes.add(ids.shape)
        assert sorted(seen) == list(range(n))
        assert {rows for rows, _ in shapes} == {min(batch_size, 4)} and len(shapes) <= 128 // 32
