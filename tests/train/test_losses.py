"""Loss and metric values against hand (numpy) computations."""

import types

import jax.numpy as jnp
import numpy as np
import pytest

from distilbert_jax.train import DistillConfig, Task
from distilbert_jax.train.losses import cosine_distance_sum, kd_kl_sum, labelled_ce_sums, macro_f1


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _ce(logits, labels):
    valid = labels != -100
    lp = _log_softmax(logits)
    picked = np.take_along_axis(lp, np.where(valid, labels, 0)[..., None], -1)[..., 0]
    return -(picked * valid).sum(), valid.sum()


def _out(logits, hidden=None):
    return types.SimpleNamespace(logits=jnp.asarray(logits), last_hidden_state=None if hidden is None else jnp.asarray(hidden))


RNG = np.random.default_rng(0)
LOGITS = RNG.normal(size=(2, 5, 7)).astype(np.float32) * 2
TEACHER = RNG.normal(size=(2, 5, 7)).astype(np.float32) * 2
LABELS = np.array([[3, -100, 1, -100, 6], [-100, -100, 0, 2, -100]], np.int32)
MASK = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]], np.int32)


def test_mlm_loss_accuracy_perplexity():
    task = Task("mlm")
    batch = {"labels": jnp.asarray(LABELS), "attention_mask": jnp.asarray(MASK)}
    m = task.metrics(task.sums(_out(LOGITS), batch), task.denominators(batch))
    ce, n = _ce(LOGITS, LABELS)
    acc = ((LOGITS.argmax(-1) == LABELS) & (LABELS != -100)).sum() / n
    np.testing.assert_allclose([m["loss"], m["perplexity"], m["accuracy"]], [ce / n, np.exp(ce / n), acc], rtol=1e-5)


def test_zero_labelled_tokens_gives_zero_not_nan():
    labels = jnp.full((2, 5), -100, jnp.int32)
    batch = {"labels": labels, "attention_mask": jnp.asarray(MASK)}
    task = Task("mlm")
    m = task.metrics(task.sums(_out(LOGITS), batch), task.denominators(batch))
    assert float(m["loss"]) == 0.0 and float(m["accuracy"]) == 0.0


def test_classification_accuracy_and_macro_f1():
    logits = np.eye(3, dtype=np.float32)[[0, 1, 1, 2, 0, 2]] * 5  # predictions 0 1 1 2 0 2
    labels = np.array([0, 1, 2, 2, 1, -100], np.int32)
    task = Task("classify", num_labels=3)
    batch = {"labels": jnp.asarray(labels), "attention_mask": jnp.ones((6, 4), jnp.int32)}
    m = task.metrics(task.sums(_out(logits), batch), task.denominators(batch))
    # class 0: tp1 fp1 fn0 -> 2/3; class 1: tp1 fp1 fn1 -> 1/2; class 2: tp1 fp0 fn1 -> 2/3
    np.testing.assert_allclose(m["f1"], (2 / 3 + 1 / 2 + 2 / 3) / 3, rtol=1e-6)
    np.testing.assert_allclose(m["accuracy"], 3 / 5, rtol=1e-6)
    np.testing.assert_allclose(m["loss"], _ce(logits, labels)[0] / 5, rtol=1e-5)
    np.testing.assert_allclose(macro_f1(jnp.zeros(3), jnp.zeros(3), jnp.zeros(3)), 0.0)


def test_token_classification_ignores_minus_100():
    sums = labelled_ce_sums(jnp.asarray(LOGITS), jnp.asarray(LABELS), 7)
    ce, n = _ce(LOGITS, LABELS)
    np.testing.assert_allclose(sums["ce"], ce, rtol=1e-5)
    assert float(sums["tp"].sum() + sums["fn"].sum()) == n


def test_qa_loss_is_mean_of_start_and_end():
    start, end = RNG.normal(size=(3, 6)).astype(np.float32), RNG.normal(size=(3, 6)).astype(np.float32)
    sp, ep = np.array([1, 2, 0], np.int32), np.array([3, 2, 5], np.int32)
    out = types.SimpleNamespace(start_logits=jnp.asarray(start), end_logits=jnp.asarray(end))
    batch = {"start_positions": jnp.asarray(sp), "end_positions": jnp.asarray(ep), "attention_mask": jnp.ones((3, 6))}
    task = Task("qa")
    m = task.metrics(task.sums(out, batch), task.denominators(batch))
    expected = (_ce(start, sp)[0] / 3 + _ce(end, ep)[0] / 3) / 2
    np.testing.assert_allclose(m["loss"], expected, rtol=1e-5)
    np.testing.assert_allclose(m["exact_match"], np.mean((start.argmax(1) == sp) & (end.argmax(1) == ep)))


@pytest.mark.parametrize("temperature, alpha, cosine_weight", [(2.0, 0.5, 0.0), (1.0, 1.0, 0.0), (4.0, 0.3, 0.7)])
def test_kd_loss_against_hand_computation(temperature, alpha, cosine_weight):
    hs, ht = RNG.normal(size=(2, 5, 4)).astype(np.float32), RNG.normal(size=(2, 5, 4)).astype(np.float32)
    task = Task("mlm", distill=DistillConfig(teacher="t", temperature=temperature, alpha=alpha, cosine_weight=cosine_weight))
    batch = {"labels": jnp.asarray(LABELS), "attention_mask": jnp.asarray(MASK)}
    m = task.metrics(task.sums(_out(LOGITS, hs), batch, _out(TEACHER, ht)), task.denominators(batch))

    valid = LABELS != -100
    p_t = np.exp(_log_softmax(TEACHER / temperature))
    kl = (p_t * (np.log(p_t) - _log_softmax(LOGITS / temperature))).sum(-1)
    kd = (kl * valid).sum() / valid.sum() * temperature**2
    hard = _ce(LOGITS, LABELS)[0] / valid.sum()
    cos = (hs * ht).sum(-1) / (np.linalg.norm(hs, axis=-1) * np.linalg.norm(ht, axis=-1))
    cos_loss = ((1 - cos) * MASK).sum() / MASK.sum()
    expected = alpha * kd + (1 - alpha) * hard + cosine_weight * cos_loss
    np.testing.assert_allclose(m["kd"], kd, rtol=1e-5)
    np.testing.assert_allclose(m["ce"], hard, rtol=1e-5)
    np.testing.assert_allclose(m["loss"], expected, rtol=1e-5)
    if cosine_weight:
        np.testing.assert_allclose(m["cos"], cos_loss, rtol=1e-5)


def test_kd_shape_and_dim_mismatch_errors():
    with pytest.raises(ValueError, match="share the vocabulary"):
        kd_kl_sum(jnp.zeros((2, 5)), jnp.zeros((2, 6)), 2.0, jnp.ones(2))
    with pytest.raises(ValueError, match="equal hidden sizes"):
        cosine_distance_sum(jnp.zeros((1, 2, 4)), jnp.zeros((1, 2, 8)), jnp.ones((1, 2)))
