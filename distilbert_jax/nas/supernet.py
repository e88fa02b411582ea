"""The weight-sharing SuperNet: the largest arch's DistilBERT masked-LM params, of which a sub-network
uses the *leading slice* of every weight (embedding columns, q/k/v/out rows and columns, FFN, LayerNorm
over the active hidden units, the MLM head's transform and the tied projector) and the first L layers.

The arch is data, not a static argument. Shapes come from a *bucket* — per width (hidden, qkv, FFN) the
smallest of a few grid values that holds the arch — and inside a bucket the arch's exact widths are
masks. So one XLA program per bucket serves every arch in it (at most `buckets**3` programs in all), and
each layer past the arch's count is skipped by `lax.cond` (no compute).

Attention heads: a bucket lays q/k/v out as `head_slots × slot_size` columns (enough for any (heads,
qkv) of the bucket); column `h·slot_size + d` takes the SuperNet's column `h·(qkv/heads) + d`, so the
sub-network's heads are exactly the standalone model's heads-major split of its first `qkv` columns.

Heterogeneous archs (per-layer heads / qkv / FFN width, hidden shared): the arch arrays hold one value
per layer, the bucket is that of the widest layer, and each layer builds its own masks and head layout
inside it — the same programs serve uniform and heterogeneous archs."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

import distilbert_jax as dj
from distilbert_jax.modeling import LN_EPS, activation_fn, keep_mask, matmul

from .space import LIMITS, Arch, SearchSpace

Array = jax.Array
F32 = jnp.float32


MAX_LAYERS = LIMITS["layers"][1]  # per-layer arrays have this many entries, whatever the space


@flax.struct.dataclass
class ArchArrays:
    """An `Arch` as int32 data inside jit: `layers`, `hidden` scalars; `heads`, `qkv`, `ffn` [MAX_LAYERS]
    per layer (past the arch's layers: its last layer's values, unused). The same shapes for every arch,
    uniform or not, so no arch compiles a program of its own."""

    layers: Array
    hidden: Array
    heads: Array
    qkv: Array
    ffn: Array

    @staticmethod
    def _row(arch: Arch) -> tuple:
        pad = lambda v: v + (v[-1],) * (MAX_LAYERS - len(v))  # noqa: E731
        return (arch.layers, arch.hidden, pad(arch.layer_heads), pad(arch.layer_qkv), pad(arch.layer_ffn))

    @classmethod
    def of(cls, arch: Arch) -> "ArchArrays":
        return cls(*(np.asarray(v, np.int32) for v in cls._row(arch)))

    @classmethod
    def stack(cls, archs: list[Arch]) -> "ArchArrays":
        return cls(*(np.asarray(v, np.int32) for v in zip(*(cls._row(a) for a in archs))))


@dataclasses.dataclass(frozen=True)
class Bucket:
    """Static shapes of one compiled program: widths (hidden, qkv, ffn) and the head layout."""

    hidden: int
    qkv: int
    ffn: int
    head_slots: int
    slot_size: int


@flax.struct.dataclass
class SuperNetOutput:
    """`logits` [B, T|M, V]; `last_hidden_state` [B, T, bucket.hidden] (zero past the arch's hidden);
    `attention` [B, head_slots, T, T] of the arch's last layer (when asked; zero for unused slots)."""

    logits: Array | None
    last_hidden_state: Array
    attention: Array | None = None


def _edges(values: tuple[int, ...], n: int) -> tuple[int, ...]:
    """`n` bucket upper edges over a sorted grid: evenly spaced indices, the last the grid's max."""
    n = max(1, min(n, len(values)))
    return tuple(sorted({values[math.ceil((k + 1) * len(values) / n) - 1] for k in range(n)}))


def _masked_layer_norm(x: Array, p: dict, m: Array, n: Array) -> Array:
    # LayerNorm over the active units: m [D] 1/0 mask, n = its count (eps 1e-12, two-pass variance)
    d = x.shape[-1]
    mean = jnp.sum(x * m, -1, keepdims=True) / n
    centred = (x - mean) * m
    var = jnp.sum(centred * centred, -1, keepdims=True) / n
    return centred * jax.lax.rsqrt(var + LN_EPS) * (p["scale"][:d] * m) + p["bias"][:d] * m


def _dropout(x: Array, rng: Array | None, rate: float, salt: int) -> Array:
    # inverted dropout with the core model's mask generator; `salt` picks the mask's stream
    if rng is None or rate == 0.0:
        return x
    keep = keep_mask(jax.random.fold_in(rng, salt), x.shape, rate)
    return jnp.where(keep, x / (1.0 - rate), 0.0)


@dataclasses.dataclass(frozen=True)
class SuperNet:
    """A search space over a DistilBERT masked-LM whose other settings (vocabulary, positions,
    activation, dropouts) come from `base`. Hashable: usable as a static jit argument."""

    space: SearchSpace
    base: dj.DistilBertConfig = dataclasses.field(default_factory=dj.DistilBertConfig)
    buckets: int = 3  # bucket edges per width dimension
    dtype: Any = jnp.float32

    def __post_init__(self):
        if self.base.model_type != "distilbert":
            raise ValueError(f"a SuperNet is a DistilBERT search space; base has model_type={self.base.model_type!r}")

    # ---- configs and params ---------------------------------------------------------------------------
    def config(self, arch: Arch | None = None) -> dj.DistilBertConfig:
        """The standalone `DistilBertConfig` of `arch` (default: the largest, i.e. the SuperNet's own);
        per-layer sizes (heterogeneous archs) in its `layer_*` fields."""
        a = self.space.largest() if arch is None else self.space.check(arch)
        return arch_config(self.base, a)

    def model(self, arch: Arch | None = None):
        """The standalone masked-LM module of `arch` (default: the largest)."""
        return dj.build_model(self.config(arch), "masked_lm", self.dtype)

    def init(self, rng: Array | int = 0) -> dict:
        """Fresh SuperNet params (the largest arch's masked-LM param tree, without {"params": …})."""
        return dj.init_params(self.model(), rng)["params"]

    # ---- buckets --------------------------------------------------------------------------------------
    def bucket(self, arch: Arch) -> Bucket:
        """The static shapes serving `arch` (checked against the space): per width the bucket of its widest
        layer (a heterogeneous arch's narrower layers are masks inside it)."""
        arch = self.space.check(arch)
        s = self.space
        up = lambda v, grid: next(e for e in _edges(grid, self.buckets) if e >= v)  # noqa: E731
        qkv = up(max(arch.layer_qkv), s.qkv_values)
        pairs = [(h, q) for h, q in s.attention_choices() if q <= qkv]
        return Bucket(up(arch.hidden, s.hidden_values), qkv, up(max(arch.layer_ffn), s.ffn_values),
                      max(h for h, _ in pairs), max(q // h for h, q in pairs))  # fmt: skip

    def all_buckets(self) -> set[Bucket]:
        """Every bucket the space can need (the bound on compilations of a jitted SuperNet function)."""
        s = self.space
        return {self.bucket(Arch(s.layer_values[0], h, a, q, f)) for h in _edges(s.hidden_values, self.buckets)
                for a, q in s.attention_choices() for f in _edges(s.ffn_values, self.buckets)}  # fmt: skip

    # ---- the forward pass -----------------------------------------------------------------------------
    def apply(self, params: dict, arch: ArchArrays, bucket: Bucket, input_ids: Array, attention_mask: Array, *,
              masked_positions: Array | None = None, rng: Array | None = None,
              output_attention: bool = False) -> SuperNetOutput:  # fmt: skip
        """The sub-network `arch` (data) in `bucket` (static) on input_ids / attention_mask [B, T].
        `masked_positions` [B, M] restricts the vocabulary projection (logits [B, M, V]); `rng` turns on
        dropout. Equal to the extracted standalone model at `arch` (fp32, up to rounding)."""
        out = self.encode(params, arch, bucket, input_ids, attention_mask, rng=rng, output_attention=output_attention)
        return out.replace(logits=self.mlm_logits(params, arch, bucket, out.last_hidden_state, masked_positions))

    def encode(self, params: dict, arch: ArchArrays, bucket: Bucket, input_ids: Array, attention_mask: Array, *,
               rng: Array | None = None, output_attention: bool = False) -> SuperNetOutput:
        """The encoder part of `apply` (`logits` None)."""
        c, b = self.base, bucket
        enc = params["distilbert"]
        m_h = (jnp.arange(b.hidden) < arch.hidden).astype(F32)  # [Hb]
        n_h = arch.hidden.astype(F32)
        batch, seq_len = input_ids.shape
        mask = attention_mask.astype(bool)

        emb = enc["embeddings"]
        x = emb["word_embeddings"]["embedding"][:, : b.hidden][input_ids] + emb["position_embeddings"]["embedding"][None, :seq_len, : b.hidden]  # fmt: skip
        x = _dropout(_masked_layer_norm(x, emb["LayerNorm"], m_h, n_h), rng, c.dropout, salt=0)

        slot = jnp.arange(b.head_slots * b.slot_size)
        h_idx, d_idx = slot // b.slot_size, slot % b.slot_size
        act = activation_fn(c.activation)

        def block(i: int, x: Array):
            lp = enc["transformer"]["layer"][str(i)]
            a = lp["attention"]
            # layer i's head layout: slot column h·slot_size + d <- SuperNet column h·head_dim + d (valid slots)
            heads = arch.heads[i]
            head_dim = arch.qkv[i] // heads
            valid = ((h_idx < heads) & (d_idx < head_dim)).astype(F32)  # [S]
            source = jnp.where(valid > 0, h_idx * head_dim + d_idx, 0)
            head_valid = (jnp.arange(b.head_slots) < heads).astype(F32)  # [slots]
            m_f = (jnp.arange(b.ffn) < arch.ffn[i]).astype(F32)

            def qkv_weights(name):  # [Hb, S], [S]
                w = jnp.take(a[name]["kernel"][: b.hidden, : b.qkv], source, axis=1) * valid
                return w, jnp.take(a[name]["bias"][: b.qkv], source) * valid

            ws, bs = zip(*(qkv_weights(n) for n in ("q_lin", "k_lin", "v_lin")))
            qkv = matmul(x, jnp.concatenate(ws, 1), self.dtype) + jnp.concatenate(bs)
            q, k, v = qkv.reshape(batch, seq_len, 3, b.head_slots, b.slot_size).transpose(2, 0, 3, 1, 4)
            q = q * jax.lax.rsqrt(head_dim.astype(F32))
            scores = jnp.einsum("bhqd,bhkd->bhqk", q.astype(self.dtype), k.astype(self.dtype), preferred_element_type=F32)
            scores = jnp.where(mask[:, None, None, :], scores, jnp.finfo(F32).min)
            unnorm = jnp.exp(scores - jax.lax.stop_gradient(scores.max(-1, keepdims=True)))
            row_sums = unnorm.sum(-1, keepdims=True)
            dropped = _dropout(unnorm, rng, c.attention_dropout, salt=2 * i + 1)
            context = jnp.einsum("bhqk,bhkd->bhqd", dropped.astype(self.dtype), v.astype(self.dtype),
                                 preferred_element_type=F32) / row_sums  # fmt: skip
            context = context.transpose(0, 2, 1, 3).reshape(batch, seq_len, -1)
            w_out = jnp.take(a["out_lin"]["kernel"][: b.qkv, : b.hidden], source, axis=0) * valid[:, None] * m_h
            out = matmul(context, w_out, self.dtype) + a["out_lin"]["bias"][: b.hidden] * m_h
            x = _masked_layer_norm(x + out, lp["sa_layer_norm"], m_h, n_h)
            f = lp["ffn"]
            hid = act(matmul(x, f["lin1"]["kernel"][: b.hidden, : b.ffn] * m_f, self.dtype) + f["lin1"]["bias"][: b.ffn] * m_f)
            y = matmul(hid, f["lin2"]["kernel"][: b.ffn, : b.hidden] * m_h, self.dtype) + f["lin2"]["bias"][: b.hidden] * m_h
            y = _dropout(y, rng, c.dropout, salt=2 * i + 2)
            x = _masked_layer_norm(x + y, lp["output_layer_norm"], m_h, n_h)
            attn = unnorm / row_sums * head_valid[None, :, None, None] if output_attention else None
            return x, attn

        carry = block(0, x)  # every arch has a first layer
        for i in range(1, self.space.layer_values[-1]):  # a layer past the arch's count is skipped, not masked
            run = lambda carry, i=i: block(i, carry[0])  # noqa: E731
            carry = jax.lax.cond(i < arch.layers, run, lambda carry: carry, carry)
        x, attn = carry
        return SuperNetOutput(None, x, attn)

    def mlm_logits(self, params: dict, arch: ArchArrays, bucket: Bucket, hidden: Array,
                   masked_positions: Array | None = None) -> Array:  # fmt: skip
        """The masked-LM head on `encode`'s hidden [B, T, bucket.hidden] -> logits [B, T|M, V]."""
        b, h = bucket, hidden
        m_h = (jnp.arange(b.hidden) < arch.hidden).astype(F32)
        n_h = arch.hidden.astype(F32)
        act = activation_fn(self.base.activation)
        enc = params["distilbert"]
        if masked_positions is not None:
            h = jnp.take_along_axis(h, masked_positions[..., None].astype(jnp.int32), axis=1)
        t = params["vocab_transform"]
        h = act(matmul(h, t["kernel"][: b.hidden, : b.hidden] * m_h, self.dtype) + t["bias"][: b.hidden] * m_h)
        h = _masked_layer_norm(h, params["vocab_layer_norm"], m_h, n_h)
        words = enc["embeddings"]["word_embeddings"]["embedding"][:, : b.hidden]
        return matmul(h, words, self.dtype, transpose_w=True) + params["vocab_projector"]["bias"]

    # ---- extraction -----------------------------------------------------------------------------------
    def extract(self, params: dict, arch: Arch | str | dict) -> tuple[Any, dict]:
        """The standalone masked-LM `(model, {"params": tree})` of `arch`: leading slices of every weight
        and the first `layers` layers. Its outputs equal `apply` at `arch`."""
        arch = self.space.check(arch)
        H = arch.hidden
        enc = params["distilbert"]

        def lin(p, rows, cols):
            return {"kernel": p["kernel"][:rows, :cols], "bias": p["bias"][:cols]}

        def ln(p):
            return {"scale": p["scale"][:H], "bias": p["bias"][:H]}

        layers = {}
        for i in range(arch.layers):
            Q, F = arch.layer_qkv[i], arch.layer_ffn[i]
            lp = enc["transformer"]["layer"][str(i)]
            a = lp["attention"]
            layers[str(i)] = {
                "attention": {**{n: lin(a[n], H, Q) for n in ("q_lin", "k_lin", "v_lin")}, "out_lin": lin(a["out_lin"], Q, H)},
                "sa_layer_norm": ln(lp["sa_layer_norm"]),
                "ffn": {"lin1": lin(lp["ffn"]["lin1"], H, F), "lin2": lin(lp["ffn"]["lin2"], F, H)},
                "output_layer_norm": ln(lp["output_layer_norm"]),
            }
        emb = enc["embeddings"]
        tree = {
            "distilbert": {
                "embeddings": {"word_embeddings": {"embedding": emb["word_embeddings"]["embedding"][:, :H]},
                               "position_embeddings": {"embedding": emb["position_embeddings"]["embedding"][:, :H]},
                               "LayerNorm": ln(emb["LayerNorm"])},
                "transformer": {"layer": layers},
            },
            "vocab_transform": lin(params["vocab_transform"], H, H),
            "vocab_layer_norm": ln(params["vocab_layer_norm"]),
            "vocab_projector": {"bias": params["vocab_projector"]["bias"]},
        }  # fmt: skip
        tree = jax.tree.map(lambda v: jnp.array(v), tree)  # own copies, not views of the SuperNet
        return self.model(arch), {"params": tree}


def arch_config(base: dj.DistilBertConfig, arch: Arch) -> dj.DistilBertConfig:
    """`base` with the arch's sizes: dim, n_layers and, per layer, heads / attention width / FFN width
    (scalar fields for uniform archs; the `layer_*` fields for heterogeneous ones)."""
    return base.replace(dim=arch.hidden, n_layers=arch.layers, n_heads=max(arch.layer_heads), qkv_dim=max(arch.layer_qkv),
                        hidden_dim=max(arch.layer_ffn), layer_n_heads=arch.layer_heads, layer_qkv_dims=arch.layer_qkv,
                        layer_hidden_dims=arch.layer_ffn)  # fmt: skip
