"""DistilBERT encoder in Flax Linen. Submodule names mirror the Hugging Face keys
(`embeddings/word_embeddings`, `transformer/layer/0/attention/q_lin`, ...), so weight conversion is
rename + transpose.

Numerics follow `transformers`' PyTorch DistilBERT: post-LayerNorm blocks, LN eps 1e-12, exact GELU,
masked attention scores filled with the float32 minimum (a fully padded row attends uniformly and stays
finite). A BERT config (`model_type="bert"`) runs the same blocks and adds token-type embeddings,
its LayerNorm eps, dropout on the attention output, and the pooler (dense + tanh on the first token).
The RoBERTa family (roberta, xlm-roberta, camembert) is BERT with positions counted from
`pad_token_id + 1` over the non-padding tokens (padding gets `pad_token_id`); ELECTRA is BERT with
embeddings `embedding_size` wide, projected to `dim` by `embeddings_project`, and no pooler.
With `dtype=jnp.bfloat16` the matmuls run in bf16 while params, the residual stream, LayerNorm
and softmax stay float32.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

from . import mkl_gemm
from .config import DistilBertConfig
from .gemm import library_dot

Array = jax.Array
Dtype = Any

LN_EPS = 1e-12


@flax.struct.dataclass
class EncoderOutput:
    """Encoder outputs. `hidden_states` = (embeddings, layer 1, …, layer n); `attentions` per layer
    `[B, H, T, T]`; both None unless asked for."""

    last_hidden_state: Array  # [B, T, D]
    hidden_states: tuple[Array, ...] | None = None
    attentions: tuple[Array, ...] | None = None
    pooler_output: Array | None = None  # [B, D]: BERT's pooler (tanh(dense(hidden[:, 0]))), else None


def activation_fn(name: str):
    """The activation named by `config.activation` (exact erf GELU for 'gelu', as PyTorch)."""
    if name == "gelu":
        return gelu
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return lambda x: nn.gelu(x, approximate=True)
    if name == "relu":
        return nn.relu
    raise ValueError(f"unknown activation {name!r}")


@jax.custom_jvp
def gelu(x: Array) -> Array:
    """Exact GELU, x·Φ(x) = x·(1 + erf(x/√2))/2, as PyTorch computes it. `flax.linen.gelu` goes through
    erfc, which XLA:CPU expands into two branches and selects (its backward pass alone took ~6% of a bf16
    base train step); the derivative Φ(x) + x·φ(x) is written out so the backward is one cheap pass."""
    return x * (0.5 + 0.5 * jax.lax.erf(x * 0.7071067811865476))


@gelu.defjvp
def _gelu_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    cdf = 0.5 + 0.5 * jax.lax.erf(x * 0.7071067811865476)
    pdf = jnp.exp(-0.5 * x * x) * 0.3989422804014327
    return x * cdf, (cdf + x * pdf) * dx


def sinusoidal_table(n_pos: int, dim: int) -> np.ndarray:
    """The fixed sin/cos position table of `sinusoidal_pos_embds=True` ([n_pos, dim], float32)."""
    pos = np.arange(n_pos, dtype=np.float64)[:, None]
    j = np.arange(dim)[None, :]
    angle = pos / np.power(10000.0, 2 * (j // 2) / dim)
    table = np.where(j % 2 == 0, np.sin(angle), np.cos(angle))
    return table.astype(np.float32)


def _dot(a: Array, b: Array, transpose_b: bool) -> Array:
    # a [n, i] @ (b [i, o] | b [o, i] transposed) -> [n, o], accumulated in float32
    if library_dot(a.dtype):  # the `mkl` GEMM back end (distilbert_jax.configure_cpu)
        return mkl_gemm.dot(a, b, transpose_b=transpose_b)
    contract = ((1,), (1,)) if transpose_b else ((1,), (0,))
    return jax.lax.dot_general(a, b, (contract, ((), ())), preferred_element_type=jnp.float32)


def _dot_t(a: Array, b: Array) -> Array:
    # aᵀ b for a [n, i], b [n, o] -> [i, o] float32 (a weight gradient). MKL takes the transposed operand as
    # is; XLA:CPU's GEMM library does not take a contraction over both operands' rows (it upcasts to f32 and
    # runs a generic GEMM at ~40% of the bf16 rate), so there a materialised transpose is multiplied.
    if library_dot(a.dtype):
        return mkl_gemm.dot(a, b, transpose_a=True)
    return _dot(_transposed_16bit(a), b, False)


def _row_sums(g: Array) -> Array:
    # g [n, o] -> [o] float32, as a matrix-vector product: XLA:CPU's column-sum reduction runs at ~2.5 GB/s
    # (50 ms for the [1024, 30522] MLM logits; 3.6 ms as a GEMV)
    ones = jnp.ones((g.shape[0],), g.dtype)
    exact = jax.lax.Precision.HIGHEST if g.dtype == jnp.float32 else None  # bf16 g: read as is, f32 sums
    return jax.lax.dot_general(ones, g, (((0,), (0,)), ((), ())), precision=exact,
                               preferred_element_type=jnp.float32)  # fmt: skip


def _transposed_16bit(x: Array) -> Array:
    # x [n, m] 16-bit float -> xᵀ [m, n] in a row-major buffer of its own, moved as raw bits (a bf16
    # transpose XLA:CPU would run in f32, and a transpose left as a layout change the GEMM library refuses)
    n, m = x.shape
    bits = jax.lax.bitcast_convert_type(x, jnp.uint16).T.reshape(n * m)
    return jax.lax.bitcast_convert_type(jax.lax.optimization_barrier(bits), x.dtype).reshape(m, n)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _low_precision_dot(a: Array, b: Array, b_low: Array | None, bias: Array | None, dtype: Any,
                       transpose_b: bool) -> Array:  # fmt: skip
    y = _dot(a.astype(dtype), b.astype(dtype) if b_low is None else b_low, transpose_b)
    return y if bias is None else y + bias


def _low_precision_dot_fwd(a, b, b_low, bias, dtype, transpose_b):
    a_low, b_low = a.astype(dtype), b.astype(dtype) if b_low is None else b_low
    dtypes = (jnp.zeros((0,), a.dtype), jnp.zeros((0,), b.dtype),  # the primal dtypes, for the cotangents
              None if bias is None else jnp.zeros((0,), bias.dtype))  # fmt: skip
    y = _dot(a_low, b_low, transpose_b)
    return (y if bias is None else y + bias), (a_low, b_low, dtypes)


def _low_precision_dot_bwd(dtype, transpose_b, residuals, g):
    a_low, b_low, (a_dtype, b_dtype, bias_dtype) = residuals
    g_low = g.astype(dtype)  # backward matmuls in `dtype` too (as torch autocast), accumulated in float32
    da = _dot(g_low, b_low, not transpose_b)
    db = _dot_t(g_low, a_low) if transpose_b else _dot_t(a_low, g_low)  # b [o, i]: gᵀ a; b [i, o]: aᵀ g
    dbias = None if bias_dtype is None else _row_sums(g_low).astype(bias_dtype.dtype)
    return da.astype(a_dtype.dtype), db.astype(b_dtype.dtype), None, dbias  # the copy b_low: no gradient


_low_precision_dot.defvjp(_low_precision_dot_fwd, _low_precision_dot_bwd)


@jax.custom_vjp
def add_bias(y: Array, bias: Array) -> Array:
    """y [..., o] + bias [o], whose gradient sums the cotangent's rows as a matrix-vector product."""
    return y + bias


def _add_bias_fwd(y, bias):
    return y + bias, (jnp.zeros((0,), y.dtype), jnp.zeros((0,), bias.dtype))


def _add_bias_bwd(dtypes, g):
    y_dtype, bias_dtype = dtypes
    return g.astype(y_dtype.dtype), _row_sums(g.reshape(-1, g.shape[-1])).astype(bias_dtype.dtype)


add_bias.defvjp(_add_bias_fwd, _add_bias_bwd)


def matmul(x: Array, w: Array, dtype: Dtype, transpose_w: bool = False, w_low: Array | None = None,
           bias: Array | None = None) -> Array:  # fmt: skip
    """x [..., i] @ w [i, o] (or w [o, i] with `transpose_w`) (+ bias [o]) -> [..., o] float32, inputs cast
    to `dtype`. Leading dims are flattened first (XLA:CPU's backward of a batched einsum is ~3× slower
    than 2-D). Below float32 the backward matmuls also take `dtype` inputs (the bias gradient too, from
    the same cast cotangent), so bf16 speeds up training as well. `w_low`: `w` already cast to `dtype`
    (see `compute_copies`), used instead of casting `w` on every call; the gradient still goes to `w`."""
    flat = x.reshape(-1, x.shape[-1])
    if jnp.dtype(dtype) == jnp.float32 and not library_dot(dtype):
        y = _dot(flat.astype(jnp.float32), w.astype(jnp.float32), transpose_w)
        y = y if bias is None else add_bias(y, bias)
    else:
        if w_low is not None and (w_low.shape != w.shape or w_low.dtype != jnp.dtype(dtype)):
            raise ValueError(f"compute copy {w_low.dtype}{w_low.shape} does not match weight {w.shape} in {jnp.dtype(dtype)}")
        y = _low_precision_dot(flat, w, w_low, bias, jnp.dtype(dtype), transpose_w)
    return y.reshape(x.shape[:-1] + (y.shape[-1],))


COMPUTE = "compute"  # the variable collection of low-precision weight copies (see `compute_copies`)


def compute_copies(params: dict, dtype: Dtype) -> dict:
    """The "compute" collection for a model running its matmuls in `dtype` (below float32): every
    Linear kernel and, for a masked-LM head, the word embeddings its vocabulary projection reads, cast
    to `dtype`, at the paths of the params they copy. A training step passes them beside the float32
    params and makes the next step's copies right after its optimizer update, where XLA fuses the cast
    into the update: the separate per-step cast of ~66M weights (~90 ms of a base bf16 step on 2 cores)
    disappears. Gradients still flow to the float32 params."""
    dtype = jnp.dtype(dtype)

    def walk(tree: dict, mlm: bool) -> dict:
        out = {}
        for name, sub in tree.items():
            if not isinstance(sub, dict):
                continue
            if "kernel" in sub and not isinstance(sub["kernel"], dict):
                out[name] = {"kernel": sub["kernel"].astype(dtype)}
            elif mlm and name == "word_embeddings" and "embedding" in sub:
                out[name] = {"embedding": sub["embedding"].astype(dtype)}
            else:
                found = walk(sub, mlm)
                if found:
                    out[name] = found
        return out

    return walk(params, "vocab_projector" in params)


def compute_copy(module: nn.Module, name: str) -> Array | None:
    """The low-precision copy of `module`'s param `name` from the "compute" collection, if given."""
    return module.get_variable(COMPUTE, name) if module.has_variable(COMPUTE, name) else None


class Linear(nn.Module):
    """`y = x @ kernel + bias` with float32 params; inputs and kernel are cast to `dtype` and the
    product accumulates in float32 (bf16 × bf16 → f32 is both safer and ~2× faster on CPU than bf16 out).
    Output is float32."""

    features: int
    dtype: Dtype = jnp.float32
    kernel_init: Any = nn.initializers.lecun_normal()

    @nn.compact
    def weights(self, in_features: int) -> tuple[Array, Array]:
        """The float32 (kernel [in, out], bias [out]), created on first use."""
        kernel = self.param("kernel", self.kernel_init, (in_features, self.features), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
        return kernel, bias

    def __call__(self, x: Array) -> Array:
        # x [..., in] -> [..., features]
        kernel, bias = self.weights(x.shape[-1])
        return matmul(x, kernel, self.dtype, w_low=compute_copy(self, "kernel"), bias=bias)


def dense(config: DistilBertConfig, features: int, name: str, dtype: Dtype) -> Linear:
    """A Linear layer initialised as HF does (normal(initializer_range), zero bias)."""
    return Linear(features, dtype, nn.initializers.normal(config.initializer_range), name=name)


def layer_norm(name: str, eps: float = LN_EPS) -> nn.LayerNorm:
    """A float32 LayerNorm with PyTorch's numerics (eps 1e-12 unless given, two-pass variance)."""
    return nn.LayerNorm(epsilon=eps, use_fast_variance=False, dtype=jnp.float32, name=name)


def keep_mask(key: Array, shape: tuple[int, ...], rate: float) -> Array:
    """A bool mask with P(True) = 1 - rate: a counter-based hash (two 32-bit seeds drawn from `key`,
    then an integer mixer of the element index). XLA vectorises it, so it is ~30× faster on CPU than
    `jax.random.bernoulli`'s per-element threefry, which dominated small models' training steps."""
    size = int(np.prod(shape))
    if size >= 2**32:
        raise ValueError(f"dropout on {size} elements: more than the 2**32 a 32-bit counter covers")
    seed = jax.random.bits(key, (2,), jnp.uint32)
    x = jax.lax.iota(jnp.uint32, size).reshape(shape) * jnp.uint32(0x9E3779B9) + seed[0]
    x = (x ^ (x >> 16)) * jnp.uint32(0x7FEB352D)
    x = ((x ^ (x >> 15)) ^ seed[1]) * jnp.uint32(0x846CA68B)
    x = x ^ (x >> 16)
    return x >= jnp.uint32(min(int(round(rate * 2**32)), 2**32 - 1))


class Dropout(nn.Module):
    """Inverted dropout drawing its mask from the "dropout" rng stream (see `keep_mask`)."""

    rate: float

    @nn.compact
    def __call__(self, x: Array, deterministic: bool) -> Array:
        if deterministic or self.rate == 0.0:
            return x
        keep = keep_mask(self.make_rng("dropout"), x.shape, self.rate)
        return jnp.where(keep, x / (1.0 - self.rate), 0.0).astype(x.dtype)


def embedding_lookup(table: Array, ids: Array) -> Array:
    """Rows `ids` [...] of `table` [V, D] -> [..., D] in the table's dtype. A 16-bit float table is
    gathered as its raw bits: XLA:CPU otherwise converts the *whole* table to f32 on every call to
    gather a few rows (23M elements for DistilBERT's vocabulary)."""
    if jnp.dtype(table.dtype).itemsize != 2 or not jnp.issubdtype(table.dtype, jnp.floating):
        return jnp.take(table, ids, axis=0)
    return _half_lookup(table, ids)


@jax.custom_vjp
def _half_lookup(table: Array, ids: Array) -> Array:
    bits = jax.lax.bitcast_convert_type(table, jnp.uint16)
    return jax.lax.bitcast_convert_type(jnp.take(bits, ids, axis=0), table.dtype)


def _half_lookup_fwd(table, ids):
    return _half_lookup(table, ids), (jnp.zeros((0,), table.dtype), table.shape, ids)


def _half_lookup_bwd(residuals, g):  # the embedding gradient: scatter-add the rows' cotangents
    dtype, shape, ids = residuals
    return jnp.zeros(shape, jnp.float32).at[ids].add(g.astype(jnp.float32)).astype(dtype.dtype), None


_half_lookup.defvjp(_half_lookup_fwd, _half_lookup_bwd)


def check_input_ids(input_ids: Array, vocab_size: int) -> None:
    """Raise `ValueError` naming the ids of `input_ids` [B, T] outside [0, vocab_size) and where they are.
    Under a trace (jit, grad, vmap) the values are unknown: there it adds a `jax.experimental.checkify`
    check instead, reported by a `checkify.checkify`-wrapped caller (see `checked_apply`)."""
    if isinstance(input_ids, jax.core.Tracer):
        bad = (input_ids < 0) | (input_ids >= vocab_size)
        first = jnp.argmax(bad.reshape(-1))
        checkify.check(
            ~bad.any(),
            f"input_ids hold {{count}} id(s) outside the vocabulary [0, {vocab_size}), "
            f"first {{value}} at flat index {{index}} of shape {tuple(input_ids.shape)}",
            count=bad.sum(), value=input_ids.reshape(-1)[first], index=first,
        )  # fmt: skip
        return
    ids = np.asarray(input_ids)
    bad = np.argwhere((ids < 0) | (ids >= vocab_size))
    if len(bad):
        shown = ", ".join(f"{int(ids[tuple(i)])} at {tuple(int(j) for j in i)}" for i in bad[:5])
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        raise ValueError(
            f"input_ids hold {len(bad)} id(s) outside the vocabulary [0, vocab_size={vocab_size}): "
            f"{shown}{more}; does the tokenizer match the model's config?"
        )


def ids_for_lookup(input_ids: Array, vocab_size: int) -> Array:
    """`input_ids` checked (concrete: `check_input_ids` raises; traced: unchecked) with negative ids
    mapped out of range, so that under `jit` every out-of-vocabulary id, negative or ≥ vocab_size,
    embeds as NaN (the embedding lookup's fill value) instead of wrapping around silently."""
    if not isinstance(input_ids, jax.core.Tracer):
        check_input_ids(input_ids, vocab_size)
    return jnp.where(input_ids < 0, vocab_size, input_ids)


class Embeddings(nn.Module):
    config: DistilBertConfig
    dtype: Dtype = jnp.float32

    def setup(self):
        c = self.config
        init = nn.initializers.normal(c.initializer_range)
        width = c.embedding_dim  # = dim except for ELECTRA's embedding_size
        self.word_embeddings = nn.Embed(c.vocab_size, width, embedding_init=init, name="word_embeddings")
        if c.sinusoidal_pos_embds:
            table = jnp.asarray(sinusoidal_table(c.max_position_embeddings, c.dim))
            pos_init = lambda *_: table  # noqa: E731
        else:
            pos_init = init
        self.position_embeddings = nn.Embed(
            c.max_position_embeddings, width, embedding_init=pos_init, name="position_embeddings"
        )
        if c.type_vocab_size:
            self.token_type_embeddings = nn.Embed(c.type_vocab_size, width, embedding_init=init,
                                                  name="token_type_embeddings")  # fmt: skip
        self.LayerNorm = layer_norm("LayerNorm", c.layer_norm_eps)
        self.dropout = Dropout(c.dropout)

    def __call__(self, input_ids: Array | None, inputs_embeds: Array | None, deterministic: bool,
                 token_type_ids: Array | None = None) -> Array:  # fmt: skip
        # input_ids [B, T] int  |  inputs_embeds [B, T, E]; token_type_ids [B, T] (BERT)  ->  [B, T, E] float32
        # (E = embedding_size for ELECTRA, else D)
        if input_ids is not None:
            ids = ids_for_lookup(input_ids, self.config.vocab_size)
            x = embedding_lookup(self.word_embeddings.embedding, ids).astype(jnp.float32)
        else:
            _ = self.word_embeddings.embedding  # keep the param tree identical in both modes
            x = inputs_embeds.astype(jnp.float32)
        if self.config.type_vocab_size:  # BERT: word + token type, then + position (transformers' order)
            types = jnp.zeros(x.shape[:2], jnp.int32) if token_type_ids is None else token_type_ids
            x = x + self.token_type_embeddings(types)
        c = self.config
        seq_len = x.shape[1]
        if seq_len > c.max_seq_len:
            offset = f" - {c.position_offset} (positions start after the padding index)" if c.position_offset else ""
            raise ValueError(
                f"sequence length {seq_len} exceeds max_position_embeddings={c.max_position_embeddings}{offset}; "
                "truncate the input (the tokenizer does by default)"
            )
        if c.position_offset:  # RoBERTa family: pad_token_id + 1, + 2, … over non-padding ids; padding: pad_token_id
            if input_ids is None:
                positions = (jnp.arange(seq_len) + c.position_offset)[None]
            else:
                real = (input_ids != c.pad_token_id).astype(jnp.int32)
                positions = jnp.cumsum(real, axis=1) * real + c.pad_token_id
            x = x + embedding_lookup(self.position_embeddings.embedding, positions).astype(jnp.float32)
        else:
            x = x + embedding_lookup(self.position_embeddings.embedding, jnp.arange(seq_len))[None].astype(jnp.float32)
        x = self.LayerNorm(x)
        return self.dropout(x, deterministic=deterministic)

    def word_matrix(self) -> tuple[Array, Array | None]:
        # the word embeddings [V, D] and their low-precision compute copy (None unless given)
        return self.word_embeddings.embedding, compute_copy(self.word_embeddings, "embedding")


def transpose_heads(x: Array) -> Array:
    """[B, T, H, Dh] -> [B, H, T, Dh]. A 16-bit float array is moved as its raw bits into a buffer of its
    own (`optimization_barrier`): otherwise XLA:CPU transposes it in f32 and runs the batched matmul it
    feeds in f32 too, at half the bf16 rate (base b8 bf16 forward: 260 -> 247 ms on Zen 4)."""
    if jnp.dtype(x.dtype).itemsize != 2 or not jnp.issubdtype(x.dtype, jnp.floating):
        return x.transpose(0, 2, 1, 3)
    return _half_swap_axes_1_2(x)


@jax.custom_vjp
def _half_swap_axes_1_2(x: Array) -> Array:
    # x [A, B, C, D] 16-bit float -> [A, C, B, D], as bits, materialised
    a, b, c, d = x.shape
    bits = jax.lax.bitcast_convert_type(x, jnp.uint16).transpose(0, 2, 1, 3).reshape(a * c, b, d)
    return jax.lax.bitcast_convert_type(jax.lax.optimization_barrier(bits), x.dtype).reshape(a, c, b, d)


_half_swap_axes_1_2.defvjp(lambda x: (_half_swap_axes_1_2(x), None), lambda _, g: (_half_swap_axes_1_2(g),))


class MultiHeadSelfAttention(nn.Module):
    config: DistilBertConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, mask: Array, deterministic: bool) -> tuple[Array, Array]:
        # x [B, T, D], mask [B, T] bool  ->  out [B, T, D], weights [B, H, T, T]; q/k/v [B, T, qkv_dim]
        c = self.config
        batch, seq_len, _ = x.shape
        # q, k, v as three matmuls: concatenating [Wq | Wk | Wv] for one matmul copies the kernels on
        # every call (and XLA:CPU runs a bf16 concatenate as f32 with a convert on each side)
        width = c.attention_dim  # = dim unless qkv_dim sets the attention width apart

        def heads(name: str, scale: float = 1.0) -> Array:  # x [B, T, D] -> [B, H, T, Dh] in `dtype` (heads-major: the
            # batched matmuls run fastest so); cast before the transpose, so a bf16 model moves half the bytes
            y = dense(c, width, name, self.dtype)(x)
            y = (y * scale if scale != 1.0 else y).astype(self.dtype)
            return transpose_heads(y.reshape(batch, seq_len, c.n_heads, c.head_dim))

        q, k, v = heads("q_lin", c.head_dim**-0.5), heads("k_lin"), heads("v_lin")
        scores = jnp.einsum("bhqd,bhkd->bhqk", q, k, preferred_element_type=jnp.float32)
        scores = jnp.where(mask[:, None, None, :], scores, jnp.finfo(jnp.float32).min)
        # softmax, normalised after the value product (one fewer pass over [B, H, T, T]); dropout
        # commutes with the per-row scaling, so this is dropout(softmax(scores)) @ v exactly
        unnormalised = jnp.exp(scores - jax.lax.stop_gradient(scores.max(-1, keepdims=True)))
        row_sums = unnormalised.sum(-1, keepdims=True)  # [B, H, T, 1]
        dropped = Dropout(c.attention_dropout)(unnormalised, deterministic=deterministic)
        context = jnp.einsum("bhqk,bhkd->bhqd", dropped.astype(self.dtype), v,
                             preferred_element_type=jnp.float32) / row_sums  # fmt: skip
        out = dense(c, c.dim, "out_lin", self.dtype)(context.transpose(0, 2, 1, 3).reshape(batch, seq_len, width))
        weights = unnormalised / row_sums  # only computed when output_attentions asks for it
        return out, weights


class FFN(nn.Module):
    config: DistilBertConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, deterministic: bool) -> Array:
        c = self.config
        h = activation_fn(c.activation)(dense(c, c.hidden_dim, "lin1", self.dtype)(x))
        h = dense(c, c.dim, "lin2", self.dtype)(h)
        return Dropout(c.dropout)(h, deterministic=deterministic)


class TransformerBlock(nn.Module):
    config: DistilBertConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, mask: Array, deterministic: bool) -> tuple[Array, Array]:
        c = self.config
        attn, weights = MultiHeadSelfAttention(c, self.dtype, name="attention")(x, mask, deterministic)
        if c.is_bert:  # BertSelfOutput: dropout after the attention output projection
            attn = Dropout(c.dropout)(attn, deterministic=deterministic)
        x = layer_norm("sa_layer_norm", c.layer_norm_eps)(x + attn)
        ffn = FFN(c, self.dtype, name="ffn")(x, deterministic)
        x = layer_norm("output_layer_norm", c.layer_norm_eps)(x + ffn)
        return x, weights


class LayerStack(nn.Module):
    """HF `transformer.layer`: blocks named "0", "1", …"""

    config: DistilBertConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, mask, deterministic, output_hidden_states, output_attentions):
        hidden, attentions = [x], []
        for i in range(self.config.n_layers):
            x, weights = TransformerBlock(self.config.layer(i), self.dtype, name=str(i))(x, mask, deterministic)
            hidden.append(x)
            attentions.append(weights)
        return EncoderOutput(
            last_hidden_state=x,
            hidden_states=tuple(hidden) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
        )


class Transformer(nn.Module):
    config: DistilBertConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, mask, deterministic, output_hidden_states, output_attentions):
        return LayerStack(self.config, self.dtype, name="layer")(
            x, mask, deterministic, output_hidden_states, output_attentions
        )


class Pooler(nn.Module):
    """BERT's pooler: tanh(`dense`(hidden[:, 0]))."""

    config: DistilBertConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, hidden: Array) -> Array:
        # hidden [B, T, D] -> [B, D]
        return jnp.tanh(dense(self.config, self.config.dim, "dense", self.dtype)(hidden[:, 0]))


def _check_token_types(token_type_ids, shape, config: DistilBertConfig) -> None:
    if token_type_ids is None or not config.type_vocab_size:
        return  # DistilBERT has no token types: ignored
    if tuple(token_type_ids.shape) != tuple(shape) or not jnp.issubdtype(token_type_ids.dtype, jnp.integer):
        raise ValueError(f"token_type_ids must be an integer array of the input shape {tuple(shape)}, got "
                         f"{token_type_ids.dtype}{tuple(token_type_ids.shape)}")  # fmt: skip
    if not isinstance(token_type_ids, jax.core.Tracer):
        bad = np.asarray(token_type_ids)
        if bad.size and (bad.min() < 0 or bad.max() >= config.type_vocab_size):
            raise ValueError(f"token_type_ids must be in [0, type_vocab_size={config.type_vocab_size}), "
                             f"got values in [{bad.min()}, {bad.max()}]")  # fmt: skip


def _check_inputs(input_ids, attention_mask, inputs_embeds) -> tuple[int, int]:
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("pass exactly one of input_ids [B, T] or inputs_embeds [B, T, D]")
    shape = input_ids.shape if input_ids is not None else inputs_embeds.shape[:-1]
    if input_ids is not None and (input_ids.ndim != 2 or not jnp.issubdtype(input_ids.dtype, jnp.integer)):
        raise ValueError(f"input_ids must be an integer array [batch, seq_len], got {input_ids.dtype}{input_ids.shape}")
    if inputs_embeds is not None and inputs_embeds.ndim != 3:
        raise ValueError(f"inputs_embeds must be [batch, seq_len, dim], got shape {inputs_embeds.shape}")
    if attention_mask is not None and tuple(attention_mask.shape) != tuple(shape):
        raise ValueError(f"attention_mask shape {tuple(attention_mask.shape)} != input shape {tuple(shape)}")
    if shape[1] == 0:
        raise ValueError("empty input: seq_len is 0")
    return shape


class DistilBertModel(nn.Module):
    """The bare encoder: `apply(params, input_ids [B,T], attention_mask [B,T]) -> EncoderOutput`.
    For the BERT-style families, `token_type_ids [B,T]` (default zeros) select the segment embeddings and,
    with `add_pooling_layer` (BERT, RoBERTa family), `pooler_output` is set; DistilBERT ignores both."""

    config: DistilBertConfig
    dtype: Dtype = jnp.float32
    add_pooling_layer: bool = True  # BERT / RoBERTa family only: build the pooler (`pooler/dense`)

    def setup(self):
        self.embeddings = Embeddings(self.config, self.dtype, name="embeddings")
        if self.config.embedding_size is not None:  # ELECTRA: embedding_size -> dim
            self.embeddings_project = dense(self.config, self.config.dim, "embeddings_project", self.dtype)
        self.transformer = Transformer(self.config, self.dtype, name="transformer")
        if self.has_pooler:
            self.pooler = Pooler(self.config, self.dtype, name="pooler")

    @property
    def has_pooler(self) -> bool:
        return self.config.has_pooler and self.add_pooling_layer

    def __call__(
        self,
        input_ids: Array | None = None,
        attention_mask: Array | None = None,
        *,
        inputs_embeds: Array | None = None,
        deterministic: bool = True,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        token_type_ids: Array | None = None,
    ) -> EncoderOutput:
        shape = _check_inputs(input_ids, attention_mask, inputs_embeds)
        _check_token_types(token_type_ids, shape, self.config)
        mask = jnp.ones(shape, bool) if attention_mask is None else attention_mask.astype(bool)
        x = self.embeddings(input_ids, inputs_embeds, deterministic, token_type_ids)
        if self.config.embedding_size is not None:
            x = self.embeddings_project(x)
        out = self.transformer(x, mask, deterministic, output_hidden_states, output_attentions)
        if self.has_pooler:
            out = out.replace(pooler_output=self.pooler(out.last_hidden_state))
        return out

    def word_matrix(self) -> tuple[Array, Array | None]:
        """The word-embedding matrix [V, D] (tied to the masked-LM projector) and its low-precision compute
        copy (None unless the "compute" collection holds one, see `compute_copies`)."""
        return self.embeddings.word_matrix()


def checked_apply(model: nn.Module) -> Any:
    """`model.apply` jitted with a runtime check of the token ids: `checked_apply(model)(params,
    input_ids, attention_mask, **kwargs)` raises `checkify.JaxRuntimeError` naming an id outside
    [0, vocab_size) (plain `jax.jit(model.apply)` gives NaN outputs for such ids instead)."""
    vocab_size = model.config.vocab_size

    def apply(variables, input_ids=None, attention_mask=None, **kwargs):
        if input_ids is not None:
            check_input_ids(input_ids, vocab_size)
        return model.apply(variables, input_ids, attention_mask, **kwargs)

    checked = jax.jit(checkify.checkify(apply, errors=checkify.user_checks),
                      static_argnames=("deterministic", "output_hidden_states", "output_attentions"))  # fmt: skip

    def run(variables, input_ids=None, attention_mask=None, **kwargs):
        err, out = checked(variables, input_ids, attention_mask, **kwargs)
        err.throw()
        return out

    return run
