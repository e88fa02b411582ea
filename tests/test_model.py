"""The Linen model as a pure function: jit / grad / vmap, dropout, outputs, input checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import distilbert_jax as dj

CFG = dj.small_config()


@pytest.fixture(scope="module")
def mlm():
    model = dj.build_model(CFG, "masked_lm")
    return model, dj.init_params(model, 0)


def _ids(batch=2, seq=10, seed=0):
    ids = jax.random.randint(jax.random.PRNGKey(seed), (batch, seq), 5, CFG.vocab_size)
    mask = jnp.ones((batch, seq), jnp.int32).at[1, 6:].set(0)
    return ids, mask


def test_jit_grad_vmap(mlm):
    model, variables = mlm
    ids, mask = _ids()
    eager = model.apply(variables, ids, mask).logits
    jitted = jax.jit(model.apply)(variables, ids, mask).logits
    np.testing.assert_allclose(eager, jitted, atol=1e-5)

    def loss(v):
        return model.apply(v, ids, mask).logits.mean()

    grads = jax.grad(loss)(variables)
    norms = [float(jnp.abs(g).sum()) for g in jax.tree_util.tree_leaves(grads)]
    assert all(np.isfinite(norms)) and sum(n > 0 for n in norms) > len(norms) // 2
    per_example = jax.vmap(lambda i, m: model.apply(variables, i[None], m[None]).logits[0])(ids, mask)
    np.testing.assert_allclose(per_example, eager, atol=1e-5)


def test_dropout_on_and_off(mlm):
    model, variables = mlm
    ids, mask = _ids()
    det1 = model.apply(variables, ids, mask).logits
    det2 = model.apply(variables, ids, mask, deterministic=True).logits
    np.testing.assert_array_equal(det1, det2)
    drop = lambda seed: model.apply(variables, ids, mask, deterministic=False,  # noqa: E731
                                    rngs={"dropout": jax.random.PRNGKey(seed)}).logits
    assert not np.allclose(drop(0), det1)
    assert not np.allclose(drop(0), drop(1))
    np.testing.assert_array_equal(drop(3), drop(3))
    with pytest.raises(Exception, match="dropout"):
        model.apply(variables, ids, mask, deterministic=False)  # no rng given


def test_zero_dropout_config_is_deterministic():
    cfg = CFG.replace(dropout=0.0, attention_dropout=0.0)
    model = dj.build_model(cfg)
    variables = dj.init_params(model)
    ids, mask = _ids()
    a = model.apply(variables, ids, mask, deterministic=False, rngs={"dropout": jax.random.PRNGKey(0)})
    np.testing.assert_allclose(a.last_hidden_state, model.apply(variables, ids, mask).last_hidden_state, atol=1e-6)


def test_hidden_states_and_attentions(mlm):
    model, variables = mlm
    ids, mask = _ids()
    out = model.apply(variables, ids, mask, output_hidden_states=True, output_attentions=True)
    assert len(out.hidden_states) == CFG.n_layers + 1
    assert len(out.attentions) == CFG.n_layers
    assert out.attentions[0].shape == (2, CFG.n_heads, 10, 10)
    np.testing.assert_allclose(out.attentions[0].sum(-1), 1.0, atol=1e-5)
    assert float(out.attentions[0][1, :, :, 6:].max()) == 0.0  # padded keys get no attention
    plain = model.apply(variables, ids, mask)
    assert plain.hidden_states is None and plain.attentions is None


def test_fully_padded_row_is_finite(mlm):
    """A row with no real token attends uniformly (like HF's masked_fill with the dtype min): finite."""
    model, variables = mlm
    ids, mask = _ids()
    mask = mask.at[0].set(0)
    for dtype in (jnp.float32, jnp.bfloat16):
        out = dj.build_model(CFG, "masked_lm", dtype).apply(variables, ids, mask)
        assert bool(jnp.isfinite(out.logits).all())


def test_padding_does_not_change_real_tokens(mlm):
    model, variables = mlm
    ids, mask = _ids(1, 6)
    short = model.apply(variables, ids, mask).logits
    padded_ids = jnp.concatenate([ids, jnp.zeros((1, 4), ids.dtype)], 1)
    padded_mask = jnp.concatenate([mask, jnp.zeros((1, 4), mask.dtype)], 1)
    long = model.apply(variables, padded_ids, padded_mask).logits
    np.testing.assert_allclose(short, long[:, :6], atol=1e-5)


def test_inputs_embeds_equals_input_ids():
    model = dj.build_model(CFG)
    variables = dj.init_params(model)
    ids, mask = _ids()
    words = variables["params"]["embeddings"]["word_embeddings"]["embedding"]
    a = model.apply(variables, ids, mask).last_hidden_state
    b = model.apply(variables, None, mask, inputs_embeds=words[ids]).last_hidden_state
    np.testing.assert_allclose(a, b, atol=1e-6)
    # same param tree whichever input is used at init
    tree_b = jax.eval_shape(model.init, jax.random.PRNGKey(0), None, mask, inputs_embeds=words[ids])
    assert jax.tree_util.tree_structure(tree_b) == jax.tree_util.tree_structure(variables)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(input_ids=jnp.ones((1, CFG.max_position_embeddings + 1), jnp.int32)), "max_position_embeddings"),
        (dict(input_ids=jnp.ones((2, 5), jnp.int32), attention_mask=jnp.ones((2, 6), jnp.int32)), "attention_mask shape"),
        (dict(input_ids=jnp.ones((5,), jnp.int32)), r"\[batch, seq_len\]"),
        (dict(input_ids=jnp.ones((2, 5), jnp.float32)), "integer"),
        (dict(), "exactly one"),
        (dict(input_ids=jnp.ones((2, 0), jnp.int32)), "empty"),
    ],
)
def test_bad_inputs_raise_clearly(mlm, kwargs, match):
    model, variables = mlm
    with pytest.raises(ValueError, match=match):
        model.apply(variables, **kwargs)


def test_heads_output_shapes():
    for head in dj.HEADS:
        model = dj.build_model(CFG.replace(num_labels=2 if head == "question_answering" else 5), head)
        variables = dj.init_params(model)
        shape = (2, 3, 7) if head == "multiple_choice" else (2, 7)
        out = model.apply(variables, jnp.ones(shape, jnp.int32), jnp.ones(shape, jnp.int32))
        expect = {"masked_lm": (2, 7, CFG.vocab_size), "sequence_classification": (2, 5),
                  "token_classification": (2, 7, 5), "multiple_choice": (2, 3)}  # fmt: skip
        if head in expect:
            assert out.logits.shape == expect[head], head
        if head == "question_answering":
            assert out.start_logits.shape == out.end_logits.shape == (2, 7)


def test_qa_needs_two_labels():
    model = dj.build_model(CFG.replace(num_labels=3), "question_answering")
    with pytest.raises(ValueError, match="num_labels == 2"):
        dj.init_params(model)


def test_multiple_choice_needs_3d_input():
    model = dj.build_model(CFG, "multiple_choice")
    variables = dj.init_params(model)
    with pytest.raises(ValueError, match="num_choices"):
        model.apply(variables, jnp.ones((2, 7), jnp.int32))


def test_unknown_head():
    with pytest.raises(ValueError, match="unknown head 'summarization'"):
        dj.build_model(CFG, "summarization")


def test_mlm_masked_positions_equal_gathered_full_logits(mlm):
    model, variables = mlm
    ids, mask = _ids(2, 10)
    positions = jnp.array([[1, 4, 4], [0, 9, 2]])
    full = model.apply(variables, ids, mask).logits
    part = model.apply(variables, ids, mask, masked_positions=positions).logits
    assert part.shape == (2, 3, CFG.vocab_size)
    np.testing.assert_allclose(part, jnp.take_along_axis(full, positions[..., None], 1), atol=1e-5)
    with pytest.raises(ValueError, match="masked_positions must be"):
        model.apply(variables, ids, mask, masked_positions=positions[0])


def test_dropout_mask_statistics():
    from distilbert_jax.modeling import keep_mask

    shape = (64, 4, 32, 32)
    a = np.asarray(keep_mask(jax.random.PRNGKey(0), shape, 0.1))
    b = np.asarray(keep_mask(jax.random.PRNGKey(1), shape, 0.1))
    assert abs(a.mean() - 0.9) < 0.003 and abs(b.mean() - 0.9) < 0.003
    assert abs(np.asarray(keep_mask(jax.random.PRNGKey(2), shape, 0.5)).mean() - 0.5) < 0.003
    flat = a.reshape(-1).astype(float)
    assert abs(np.corrcoef(flat[:-1], flat[1:])[0, 1]) < 0.01  # neighbours independent
    assert abs(np.corrcoef(flat, b.reshape(-1).astype(float))[0, 1]) < 0.01  # keys independent
    assert np.asarray(keep_mask(jax.random.PRNGKey(0), shape, 0.0)).all()


def test_bf16_matmul_gradients_match_float32():
    """bf16 compute runs its backward matmuls in bf16 too (custom vjp); grads stay close to float32's."""
    from distilbert_jax.modeling import matmul

    x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 16))
    for transpose in (False, True):
        w = jax.random.normal(jax.random.PRNGKey(1), (4, 16) if transpose else (16, 4))
        loss = lambda dtype: lambda x, w: (matmul(x, w, dtype, transpose) ** 2).sum()  # noqa: E731
        exact = jax.grad(loss(jnp.float32), argnums=(0, 1))(x, w)
        low = jax.grad(loss(jnp.bfloat16), argnums=(0, 1))(x, w)
        for a, b in zip(exact, low):
            assert b.dtype == jnp.float32 and b.shape == a.shape
            assert float(jnp.abs(a - b).max()) < 0.02 * float(jnp.abs(a).max())
    model = dj.build_model(CFG, "masked_lm", jnp.bfloat16)
    variables = dj.init_params(dj.build_model(CFG, "masked_lm"))
    ids, mask = _ids()
    grads = jax.grad(lambda v: model.apply(v, ids, mask).logits.std())(variables)
    assert all(bool(jnp.isfinite(g).all()) and g.dtype == jnp.float32 for g in jax.tree_util.tree_leaves(grads))


def test_out_of_vocab_ids_raise_when_concrete(mlm):
    """Ids ≥ vocab_size gave NaN and negative ids wrapped around silently; PyTorch raises, so do we."""
    model, variables = mlm
    ids, mask = _ids()
    for bad_id in (CFG.vocab_size, CFG.vocab_size + 7, -1):
        bad = np.array(ids)
        bad[1, 3] = bad_id
        with pytest.raises(ValueError, match=rf"vocab_size={CFG.vocab_size}\): {bad_id} at \(1, 3\)"):
            model.apply(variables, bad, mask)


def test_out_of_vocab_ids_under_jit_are_nan_or_checked(mlm):
    """Under jit the values are unknown: every out-of-vocabulary id (negative ones too) gives NaN, never
    a finite wrong answer; `checked_apply` raises naming the id instead."""
    model, variables = mlm
    ids, mask = _ids()
    jitted = jax.jit(model.apply)
    for bad_id in (-1, CFG.vocab_size):
        logits = jitted(variables, ids.at[0, 2].set(bad_id), mask).logits
        assert np.isnan(logits[0]).all() and np.isfinite(logits[1]).all()
    checked = dj.checked_apply(model)
    np.testing.assert_allclose(checked(variables, ids, mask).logits, jitted(variables, ids, mask).logits, atol=1e-5)
    with pytest.raises(Exception, match=rf"1 id\(s\) outside the vocabulary \[0, {CFG.vocab_size}\), first -3 at flat index 12"):
        checked(variables, ids.at[1, 2].set(-3), mask)


def test_gelu_and_its_gradient_match_torch():
    import torch

    from distilbert_jax.modeling import gelu

    x = np.linspace(-12, 12, 20001, dtype=np.float32)
    xt = torch.from_numpy(x).requires_grad_()
    torch.nn.functional.gelu(xt).sum().backward()
    np.testing.assert_allclose(np.asarray(gelu(jnp.asarray(x))), torch.nn.functional.gelu(xt).detach().numpy(), atol=2e-6)
    np.testing.assert_allclose(np.asarray(jax.vmap(jax.grad(gelu))(jnp.asarray(x))), xt.grad.numpy(), atol=1e-6)
    assert gelu(jnp.ones(3, jnp.bfloat16)).dtype == jnp.bfloat16
