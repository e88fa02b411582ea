"""bf16 inference: params cast once at load, no per-call weight casts, outputs close to float32."""

import re

import jax
import jax.numpy as jnp
import numpy as np

import distilbert_jax as dj
from bench.common import random_inputs

# Documented tolerance (README "bf16"): last hidden state of bf16 params + bf16 matmuls vs float32,
# LayerNorm-scaled values of order 1.
BF16_TOL = 0.1


def test_bf16_params_forward_is_close_to_float32(hf_dir):
    path, _ = hf_dir("base")
    model32, v32 = dj.from_pretrained(path, "base")
    model16, v16 = dj.from_pretrained(path, "base", dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    assert all(leaf.dtype == jnp.bfloat16 for leaf in jax.tree.leaves(v16))
    ids, mask = random_inputs(3, 16, model32.config.vocab_size, seed=1)
    ids, mask = jnp.asarray(ids, jnp.int32), jnp.asarray(mask, jnp.int32)
    ref = np.asarray(model32.apply(v32, ids, mask).last_hidden_state)
    out = model16.apply(v16, ids, mask).last_hidden_state
    assert out.dtype == jnp.float32
    real = np.asarray(mask, bool)
    assert np.abs(np.asarray(out) - ref)[real].max() < BF16_TOL


def test_bf16_forward_casts_no_weights_per_call(hf_dir):
    """With bf16 params the compiled forward converts no weight matrix (a per-call cast of every
    kernel, or a bf16 concatenate XLA:CPU runs as f32, cost about a third of the bf16 forward)."""
    path, _ = hf_dir("base")
    model, variables = dj.from_pretrained(path, "base", dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    ids = jnp.ones((3, 7), jnp.int32)  # 21 tokens: no activation shape equals a kernel shape
    hlo = jax.jit(lambda v, i: model.apply(v, i, i).last_hidden_state).lower(variables, ids).compile().as_text()
    kernels = {tuple(leaf.shape) for leaf in jax.tree.leaves(variables) if leaf.ndim == 2}
    converted = {tuple(map(int, m.groups())) for m in re.finditer(r"= (?:f32|bf16)\[(\d+),(\d+)\]\{[^}]*\} (?:convert|fusion)\([^)]*\)(?:, kind=kLoop, calls=%wrapped_convert)?", hlo) if "convert" in m.group(0)}  # noqa: E501
    assert not kernels & converted, f"weights converted on every call: {sorted(kernels & converted)}"


def test_bf16_attention_matmuls_run_in_bf16(hf_dir):
    """The attention's batched matmuls take bf16 operands. Transposed the plain way, XLA:CPU moves the
    heads in f32 and upcasts both batched matmuls to f32 (half the bf16 rate): see `transpose_heads`."""
    path, _ = hf_dir("base")
    model, variables = dj.from_pretrained(path, "base", dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    ids = jnp.ones((2, 16), jnp.int32)
    hlo = jax.jit(lambda v, i: model.apply(v, i, i).last_hidden_state).lower(variables, ids).compile().as_text()
    types = dict(re.findall(r"%([\w.\-]+) = (\w+)\[", hlo))
    batched = [m for m in re.finditer(r"dot\(%([\w.\-]+), %([\w.\-]+)\), lhs_batch_dims", hlo)]
    assert len(batched) >= 2 * model.config.n_layers  # scores and context, every layer
    assert all(types[m.group(1)] == types[m.group(2)] == "bf16" for m in batched), [
        (types[m.group(1)], types[m.group(2)]) for m in batched
    ]


def test_transpose_heads_is_a_transpose_with_its_gradient():
    from distilbert_jax.modeling import transpose_heads

    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 3, 4, 5)), jnp.bfloat16)
    assert bool((transpose_heads(x) == x.transpose(0, 2, 1, 3)).all())
    w = jnp.asarray(np.random.default_rng(1).standard_normal((2, 4, 3, 5)), jnp.float32)
    ours = jax.grad(lambda x: (transpose_heads(x).astype(jnp.float32) * w).sum())(x)
    plain = jax.grad(lambda x: (x.transpose(0, 2, 1, 3).astype(jnp.float32) * w).sum())(x)
    assert ours.dtype == jnp.bfloat16 and bool((ours == plain).all())
