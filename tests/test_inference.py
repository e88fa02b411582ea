"""embed() and question-answering span decoding."""

import flax.linen as nn
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
