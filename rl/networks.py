"""Observation embeddings (MLP, LSTM, DistilBERT project / tokenize) and the hierarchical actor-critic.

Every embedding maps an observation dict (`consumer` [B,F], `producer` [B,F'] features) to [B, D]:
* `MLPEmbedding`  — concat → 2 × (Dense, tanh). For gymnax envs (CartPole) and as a cheap baseline.
* `LSTMEmbedding` — MLIR-RL style: the feature vector is cut into chunks of `chunk` features (one chunk per
  step, consumer then producer), each chunk → Dense, an LSTM runs over the chunks; the last hidden state.
* `DistilBertEmbedding(mode="project")` — consumer and producer vectors each → Linear→LayerNorm→GELU→
  Dropout→Linear to the model width; DistilBERT over `[CLS] consumer producer [SEP]` (learnable CLS/SEP).
* `DistilBertEmbedding(mode="tokenize")` — every feature is its own token: signed log1p value bucketised
  into `n_buckets` buckets with ids unique per (feature, bucket) (NaN/Inf → [UNK]); DistilBERT over
  `[CLS] consumer_tokens producer_tokens [SEP]`, producer tokens masked out when there is no producer.
The [CLS] output (or the embedding) is concatenated with `history` and fed to policy and value heads.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import distilbert_jax as dj

Array = jax.Array
MODEL_TYPES = ("mlp", "lstm", "distilbert-project", "distilbert-tokenize")
PAD, CLS, SEP, UNK, N_SPECIAL = 0, 1, 2, 3, 4
BUCKET_RANGE = 5.0   # signed log1p values are bucketised over [-5, 5] (|x| up to ~147; beyond saturates)


def orthogonal(scale: float = 1.0, column_axis: int = -1, dtype: Any = jnp.float32):
    """`jax.nn.initializers.orthogonal` with the same values, whose QR stays unbatched under `vmap`
    (a `lax.map` over the batch instead).

    Why: a batched QR runs jaxlib's LAPACK kernels (`geqrf`, `orgqr`), which fan the batch out over XLA:CPU's
    intra-op Eigen pool *from a worker of that same pool* and block on a counter. When every worker of
    the pool (2 on a 2-core machine) is inside such a kernel, nobody is left to run the fanned-out work:
    the process wedges with all threads asleep (gdb: both `tf_XLAEigen` workers in
    `jax::ParallelBatchMap` → `BlockingCounter::Wait`, under `lapack_sgeqrf_ffi` / `lapack_sorgqr_ffi`).
    Reproducer (hung 3 of 3 runs on the 2-core EPYC with flax's `orthogonal`, fine with this one):
        setup = ppo.make_setup(PPOConfig.from_json("rl/configs/cartpole.json"))
        jax.jit(jax.vmap(lambda k: ppo.init_runner(setup, k)))(jax.random.split(jax.random.PRNGKey(0), 4))
    This replaces the process-wide `--xla_cpu_multi_thread_eigen=false` that `import rl` used to set."""
    base = jax.nn.initializers.orthogonal(scale, column_axis, dtype)

    def init(key: Array, shape: tuple[int, ...], dtype: Any = dtype) -> Array:
        @jax.custom_batching.custom_vmap
        def draw(k):
            return base(k, shape, dtype)

        @draw.def_vmap
        def _one_at_a_time(axis_size, in_batched, k):
            if not in_batched[0]:
                return draw(k), False
            return jax.lax.map(draw, k), True

        return draw(key)

    return init


def bucketize(x: Array, n_buckets: int, offset: int = 0) -> Array:
    """Token ids [..., F] for features x [..., F]: id = N_SPECIAL + (offset+f)·n_buckets + bucket."""
    s = jnp.sign(x) * jnp.log1p(jnp.abs(x))
    b = jnp.clip(jnp.floor((s + BUCKET_RANGE) / (2 * BUCKET_RANGE) * n_buckets), 0, n_buckets - 1)
    f = jnp.arange(x.shape[-1]) + offset
    ids = N_SPECIAL + f * n_buckets + b.astype(jnp.int32)
    return jnp.where(jnp.isfinite(x), ids, UNK)


def tokenize(consumer: Array, producer: Array, n_buckets: int) -> tuple[Array, Array]:
    """`[CLS] consumer producer [SEP]` ids and attention mask, both [B, 2 + F + F']."""
    b = consumer.shape[0]
    ids = jnp.concatenate([jnp.full((b, 1), CLS), bucketize(consumer, n_buckets),
                           bucketize(producer, n_buckets, consumer.shape[-1]), jnp.full((b, 1), SEP)], 1)
    has_prod = jnp.any(producer != 0, axis=-1, keepdims=True)
    mask = jnp.concatenate([jnp.ones((b, 1 + consumer.shape[-1]), bool),
                            jnp.broadcast_to(has_prod, producer.shape), jnp.ones((b, 1), bool)], 1)
    return ids, mask


def bert_config(n_features: int, mode: str, dim: int = 32, n_layers: int = 2, n_heads: int = 4,
                hidden_dim: int = 64, n_buckets: int = 50, dropout: float = 0.0,
                base: dj.DistilBertConfig | None = None) -> dj.DistilBertConfig:
    """DistilBERT config for an embedding: tokenize mode gets its own vocab and enough positions for
    every feature token; `base` (e.g. a pretrained checkpoint's config) supplies the architecture."""
    cfg = base or dj.small_config(dim=dim, n_layers=n_layers, n_heads=n_heads, hidden_dim=hidden_dim)
    cfg = cfg.replace(dropout=dropout, attention_dropout=dropout)
    if mode == "tokenize":
        seq = 2 + 2 * n_features
        cfg = cfg.replace(vocab_size=N_SPECIAL + 2 * n_features * n_buckets,
                          max_position_embeddings=max(cfg.max_position_embeddings, seq))
    return cfg


class MLPEmbedding(nn.Module):
    width: int = 64

    @nn.compact
    def __call__(self, obs: dict[str, Array], deterministic: bool = True) -> Array:
        x = jnp.concatenate([obs["consumer"], obs["producer"]], -1)
        for _ in range(2):
            x = nn.tanh(nn.Dense(self.width, kernel_init=orthogonal(np.sqrt(2)))(x))
        return x


class LSTMEmbedding(nn.Module):
    width: int = 64
    chunk: int = 6

    @nn.compact
    def __call__(self, obs: dict[str, Array], deterministic: bool = True) -> Array:
        x = jnp.concatenate([obs["consumer"], obs["producer"]], -1)                 # [B, F]
        pad = (-x.shape[-1]) % self.chunk
        x = jnp.pad(x, ((0, 0), (0, pad))).reshape(x.shape[0], -1, self.chunk)     # [B, S, chunk]
        x = nn.Dense(self.width)(x)
        out = nn.RNN(nn.OptimizedLSTMCell(self.width, recurrent_kernel_init=orthogonal()))(x)  # [B, S, W]
        return out[:, -1]


class Projector(nn.Module):
    """Linear → LayerNorm → GELU → Dropout → Linear."""

    dim: int
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x: Array, deterministic: bool = True) -> Array:
        x = nn.gelu(nn.LayerNorm()(nn.Dense(self.dim)(x)), approximate=False)
        return nn.Dense(self.dim)(nn.Dropout(self.dropout)(x, deterministic=deterministic))


class DistilBertEmbedding(nn.Module):
    config: dj.DistilBertConfig
    mode: str = "project"
    n_buckets: int = 50

    @nn.compact
    def __call__(self, obs: dict[str, Array], deterministic: bool = True) -> Array:
        bert = dj.DistilBertModel(self.config, name="bert")
        if self.mode == "project":
            d = self.config.dim
            c = Projector(d, self.config.dropout, name="consumer_proj")(obs["consumer"], deterministic)
            p = Projector(d, self.config.dropout, name="producer_proj")(obs["producer"], deterministic)
            init = nn.initializers.normal(0.02)
            cls = jnp.broadcast_to(self.param("cls", init, (d,)), c.shape)
            sep = jnp.broadcast_to(self.param("sep", init, (d,)), c.shape)
            x = jnp.stack([cls, c, p, sep], 1)                                     # [B, 4, D]
            out = bert(inputs_embeds=x, deterministic=deterministic)
        elif self.mode == "tokenize":
            ids, mask = tokenize(obs["consumer"], obs["producer"], self.n_buckets)
            out = bert(ids, mask, deterministic=deterministic)
        else:
            raise ValueError(f"unknown DistilBertEmbedding mode {self.mode!r}; expected 'project' or 'tokenize'")
        return out.last_hidden_state[:, 0]


def make_embedding(model_type: str, width: int, lstm_chunk: int, bert: dj.DistilBertConfig | None,
                   n_buckets: int, name: str) -> nn.Module:
    """The embedding module for `model_type` (one of MODEL_TYPES)."""
    if model_type == "mlp":
        return MLPEmbedding(width, name=name)
    if model_type == "lstm":
        return LSTMEmbedding(width, lstm_chunk, name=name)
    if model_type in ("distilbert-project", "distilbert-tokenize"):
        return DistilBertEmbedding(bert, model_type.split("-")[1], n_buckets, name=name)
    raise ValueError(f"unknown model_type {model_type!r}; expected one of {MODEL_TYPES}")


class ActorCritic(nn.Module):
    """obs → (logits [B, H, A], value [B]). `shared_embedding` shares the embedding between both heads."""

    model_type: str
    n_heads: int
    n_actions: int
    width: int = 64
    lstm_chunk: int = 6
    bert: Any = None
    n_buckets: int = 50
    shared_embedding: bool = True

    @nn.compact
    def __call__(self, obs: dict[str, Array], deterministic: bool = True) -> tuple[Array, Array]:
        mk = lambda n: make_embedding(self.model_type, self.width, self.lstm_chunk, self.bert,  # noqa: E731
                                      self.n_buckets, n)
        emb_pi = mk("embedding")(obs, deterministic)
        emb_v = emb_pi if self.shared_embedding else mk("critic_embedding")(obs, deterministic)
        ortho = orthogonal
        hist = obs["history"]
        x = nn.tanh(nn.Dense(self.width, kernel_init=ortho(np.sqrt(2)))(jnp.concatenate([emb_pi, hist], -1)))
        logits = nn.Dense(self.n_heads * self.n_actions, kernel_init=ortho(0.01))(x)
        v = nn.tanh(nn.Dense(self.width, kernel_init=ortho(np.sqrt(2)))(jnp.concatenate([emb_v, hist], -1)))
        value = nn.Dense(1, kernel_init=ortho(1.0))(v)[..., 0]
        return logits.reshape(*logits.shape[:-1], self.n_heads, self.n_actions), value


def load_pretrained_bert(params: dict, path: str, mode: str) -> dict:
    """Copy a pretrained HF DistilBERT (loaded with `dj.from_pretrained`) into every `bert` subtree of
    `params`. In tokenize mode the word embeddings (different vocab) and any extra positions keep their
    fresh initialisation. Raises on a shape mismatch (the embedding must be built from the checkpoint's
    config: see `bert_config(base=...)`)."""
    _, variables = dj.from_pretrained(path, head="base")
    loaded = variables["params"]

    def merge(ours: Any, theirs: Any, key: str = "") -> Any:
        if isinstance(ours, dict):
            return {k: merge(v, theirs.get(k) if isinstance(theirs, dict) else None, f"{key}/{k}")
                    for k, v in ours.items()}
        if theirs is None or (mode == "tokenize" and "word_embeddings" in key):
            return ours
        theirs = jnp.asarray(theirs, ours.dtype)
        if "position_embeddings" in key and theirs.shape[0] >= ours.shape[0]:
            theirs = theirs[: ours.shape[0]]
        if theirs.shape != ours.shape:
            raise ValueError(f"pretrained {key}: shape {theirs.shape} != embedding's {ours.shape}")
        return theirs

    def walk(tree: Any) -> Any:
        if not isinstance(tree, dict):
            return tree
        return {k: merge(v, loaded) if k == "bert" else walk(v) for k, v in tree.items()}

    return walk(dict(params))


__all__ = ["MODEL_TYPES", "ActorCritic", "MLPEmbedding", "LSTMEmbedding", "DistilBertEmbedding", "Projector",
           "bucketize", "tokenize", "bert_config", "make_embedding", "load_pretrained_bert"]
