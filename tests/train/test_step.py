"""The jitted step: gradient accumulation equals one big batch; evaluation sums combine exactly."""

import jax
import jax.numpy as jnp
import numpy as np

import distilbert_jax as dj
from distilbert_jax.train import (
    OptimConfig, SyntheticBatches, Task, create_state, data_mesh, enable_compile_cache, evaluate, jit_train_step,
    make_eval_step, make_optimizer, make_train_step,
)  # fmt: skip
from distilbert_jax.train.config import TINY_MODEL

enable_compile_cache()

CONFIG = dj.DistilBertConfig().replace(**TINY_MODEL, dropout=0.0, attention_dropout=0.0, num_labels=3)


def _run(task: Task, k: int, steps: int = 3):
    model = dj.build_model(CONFIG, task.head)
    params = dj.init_params(model, 0)["params"]
    tx, schedule = make_optimizer(OptimConfig(learning_rate=1e-3, eps=1e-6), steps)
    state = create_state(params, tx, 0)
    step = jit_train_step(make_train_step(model, task, tx, schedule, grad_accum_steps=k), state)
    source = SyntheticBatches(task.name, CONFIG.vocab_size, 16, 16, num_labels=3)
    losses = []
    for _ in range(steps):
        state, metrics = step(state, {k_: jnp.asarray(v) for k_, v in next(source).items()})
        losses.append(float(metrics["loss"]))
    return state, losses


def test_grad_accumulation_equals_one_big_batch():
    # MLM: micro-batches hold different numbers of masked tokens, so a mean of means would differ
    big, big_losses = _run(Task("mlm"), 1)
    acc, acc_losses = _run(Task("mlm"), 4)
    np.testing.assert_allclose(acc_losses, big_losses, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(acc.params), jax.tree.leaves(big.params)):
        np.testing.assert_allclose(a, b, atol=2e-6)
    assert int(acc.step) == int(big.step) == 3


def test_eval_metrics_combine_over_batches():
    task = Task("classify", num_labels=3)
    model = dj.build_model(CONFIG, task.head)
    params = dj.init_params(model, 1)["params"]
    tx, _ = make_optimizer(OptimConfig(), 1)
    state = create_state(params, tx, 0)
    source = SyntheticBatches("classify", CONFIG.vocab_size, 8, 16, num_labels=3, seed=5)
    batches = [next(source) for _ in range(3)]
    metrics = evaluate(jax.jit(make_eval_step(model, task)), state, iter(batches), data_mesh(), 3, task)

    forward = jax.jit(lambda ids, mask: model.apply({"params": params}, ids, mask).logits)
    logits = np.concatenate([np.asarray(forward(b["input_ids"], b["attention_mask"])) for b in batches])
    labels = np.concatenate([b["labels"] for b in batches])
    pred = logits.argmax(-1)
    lp = logits - logits.max(-1, keepdims=True)
    lp = lp - np.log(np.exp(lp).sum(-1, keepdims=True))
    f1s = []
    for c in range(3):
        tp, fp, fn = ((pred == c) & (labels == c)).sum(), ((pred == c) & (labels != c)).sum(), ((pred != c) & (labels == c)).sum()
        if tp + fp + fn:
            f1s.append(2 * tp / (2 * tp + fp + fn))
    np.testing.assert_allclose(metrics["loss"], -np.take_along_axis(lp, labels[:, None], 1).mean(), rtol=1e-5)
    np.testing.assert_allclose(metrics["accuracy"], (pred == labels).mean(), rtol=1e-6)
    np.testing.assert_allclose(metrics["f1"], np.mean(f1s), rtol=1e-5)


def test_mlm_masked_only_projection_is_exact():
    """Vocabulary logits at the masked tokens only (max_predictions) give the same training run as the
    full projection — both when every row fits (gathered path) and when one does not (fallback)."""
    full, full_losses = _run(Task("mlm"), 1)
    for m in (8, 2):  # 16-token rows with ~15% masked: 8 always fits, 2 overflows in some batches
        part, part_losses = _run(Task("mlm", max_predictions=m), 1)
        np.testing.assert_allclose(part_losses, full_losses, rtol=1e-5)
        for a, b in zip(jax.tree.leaves(part.params), jax.tree.leaves(full.params)):
            np.testing.assert_allclose(a, b, atol=2e-6)


def test_mlm_positions_gathers_labelled_tokens_first():
    from distilbert_jax.train.step import mlm_positions

    labels = jnp.array([[-100, 7, -100, 9, -100], [5, -100, -100, -100, -100]])
    positions, picked = mlm_positions(labels, 3)
    assert positions[:, :2].tolist() == [[1, 3], [0, 1]]
    assert picked.tolist() == [[7, 9, -100], [5, -100, -100]]


def test_bf16_compute_copies_change_nothing_but_the_cast():
    """bf16 training with the weights' bf16 copies carried in the state (made after each update)
    takes exactly the steps of casting the float32 weights in every forward, and the forward of the
    jitted step converts no weight matrix."""
    import re

    model = dj.build_model(CONFIG, "masked_lm", jnp.bfloat16)
    params = dj.init_params(model, 0)["params"]
    tx, schedule = make_optimizer(OptimConfig(learning_rate=1e-3, warmup_steps=1), 10)
    source = SyntheticBatches("mlm", CONFIG.vocab_size, 4, 16, seed=1, mask_prob=0.3)
    batch = {k: jnp.asarray(v) for k, v in next(source).items()}
    plain, copied = create_state(params, tx, 0), create_state(params, tx, 0, compute_dtype=jnp.bfloat16)
    assert plain.compute is None
    kernels = {tuple(leaf.shape) for leaf in jax.tree.leaves(copied.compute)}
    assert (CONFIG.vocab_size, CONFIG.dim) in kernels  # the tied projector's word matrix
    assert all(leaf.dtype == jnp.bfloat16 for leaf in jax.tree.leaves(copied.compute))
    for max_predictions in (None, 6):
        step = jax.jit(make_train_step(model, Task("mlm", max_predictions=max_predictions), tx, schedule))
        a, b = plain, copied
        for _ in range(3):
            (a, ma), (b, mb) = step(a, batch), step(b, batch)
            assert float(ma["loss"]) == float(mb["loss"])
        for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
            assert bool((x == y).all())
        fresh = dj.modeling.compute_copies(b.params, jnp.bfloat16)
        assert all(bool((x == y).all()) for x, y in zip(jax.tree.leaves(b.compute), jax.tree.leaves(fresh)))
    forward = jax.jit(lambda p, c, i: model.apply({"params": p, "compute": c}, i, i).logits)
    ids = batch["input_ids"][:3, :7]  # 21 tokens: no activation shape equals a kernel shape
    hlo = forward.lower(copied.params, copied.compute, ids).compile().as_text()
    converted = {tuple(map(int, m.groups())) for m in re.finditer(r"= bf16\[(\d+),(\d+)\]\{[^}]*\} (?:convert|fusion)\([^)]*\)(?:, kind=kLoop, calls=%wrapped_convert)?", hlo) if "convert" in m.group(0)}  # noqa: E501
    assert not kernels & converted, sorted(kernels & converted)
