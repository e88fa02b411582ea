"""The per-layer-sum latency predictor (kind "layer_sum"), after nn-Meter's per-kernel sums: time the
few distinct sub-layer shapes once, then predict an arch as

    embeddings(hidden) + Σ over its layers [attention(hidden, heads/qkv of the layer) + FFN(hidden, ffn of the layer)]

calibrated to whole-arch latencies by `ms = c0 + c1 · sum + c2 · layers` (relative least squares on the
measured training archs: `c0` the one call's dispatch, `c1` what fusing the sub-layers into one program
changes, `c2` the per-layer part of timing each sub-layer as a call of its own — what is left of it after
the trivial call's time is removed, which grows with the machine's load).

The table (`LayerTable`) times, at the latency step's batch x seq, the standalone model's own modules
with random weights: the embeddings (+ LayerNorm) per hidden size, the attention sub-layer (q/k/v/out,
softmax, residual, LayerNorm) per (hidden, attention choice) and the FFN sub-layer (lin1, activation,
lin2, residual, LayerNorm) per (hidden, FFN width), each minus the dispatch cost of a trivial jitted
call. Only a few points per width are timed (the grid's ends and evenly spaced values between); the
rest is linear interpolation along each width, where a matmul's cost is near linear. Per-layer values
enter per layer, so heterogeneous archs need nothing else. The original space (8 layers, 41 hidden x 12
heads x 93 FFN widths) needs 5 + 30 + 25 timed sub-layers instead of hundreds of measured archs."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import distilbert_jax as dj
from distilbert_jax.modeling import FFN, Embeddings, MultiHeadSelfAttention, layer_norm

from .predictor import Predictor, PredictorError
from .space import Arch, SearchSpace
from .timing import random_params, spread, time_calls

HIDDEN_POINTS, ATTENTION_POINTS, FFN_POINTS = 5, 6, 5  # timed values per width (ends included)


def grid_points(values: Sequence, k: int) -> list:
    """Up to `k` of `values`, evenly spaced by index, both ends included."""
    n, m = len(values), min(k, len(values))
    return [values[i] for i in sorted({round(j * (n - 1) / max(m - 1, 1)) for j in range(m)})]


class _AttentionSublayer(nn.Module):
    config: dj.DistilBertConfig

    @nn.compact
    def __call__(self, x, mask):
        attn, _ = MultiHeadSelfAttention(self.config, name="attention")(x, mask, True)
        return layer_norm("sa_layer_norm", self.config.layer_norm_eps)(x + attn)


class _FFNSublayer(nn.Module):
    config: dj.DistilBertConfig

    @nn.compact
    def __call__(self, x, mask):
        del mask
        return layer_norm("output_layer_norm", self.config.layer_norm_eps)(x + FFN(self.config, name="ffn")(x, True))


class _EmbeddingsPart(nn.Module):
    config: dj.DistilBertConfig

    @nn.compact
    def __call__(self, ids, mask):
        del mask
        return Embeddings(self.config, name="embeddings")(ids, None, True)


@dataclasses.dataclass(frozen=True)
class LayerTable:
    """Timed sub-layers at `batch` x `seq` (ms, dispatch removed): `emb_ms` [H] per `hidden`,
    `attn_ms` [H, A] per (hidden, attention choice `heads[a]` / `qkv[a]`, ascending qkv), `ffn_ms` [H, F]
    per (hidden, `ffn`); `dispatch_ms` the trivial call's time; `spread` the median IQR / median."""

    hidden: np.ndarray
    heads: np.ndarray
    qkv: np.ndarray
    ffn: np.ndarray
    emb_ms: np.ndarray
    attn_ms: np.ndarray
    ffn_ms: np.ndarray
    dispatch_ms: float
    batch: int
    seq: int
    spread: float = float("nan")

    def raw(self, archs: Sequence[Arch]) -> np.ndarray:
        """[n] embeddings + Σ layers (attention + FFN) of each arch, interpolated along each width (ms)."""
        n, depth = len(archs), max(a.layers for a in archs)
        hidden = np.array([a.hidden for a in archs], np.float64)
        qkv, ffn, used = np.zeros((n, depth)), np.zeros((n, depth)), np.zeros((n, depth), bool)
        for i, a in enumerate(archs):
            qkv[i, : a.layers], ffn[i, : a.layers], used[i, : a.layers] = a.layer_qkv, a.layer_ffn, True
        # along hidden: each table row interpolated at every arch's hidden -> [n, A] / [n, F]
        at_h = lambda table: np.stack([np.interp(hidden, self.hidden, table[:, j]) for j in range(table.shape[1])], 1)  # noqa: E731
        attn_h, ffn_h = at_h(self.attn_ms), at_h(self.ffn_ms)
        attn = np.stack([_interp_rows(qkv[:, l], self.qkv, attn_h) for l in range(depth)], 1)
        ff = np.stack([_interp_rows(ffn[:, l], self.ffn, ffn_h) for l in range(depth)], 1)
        return np.interp(hidden, self.hidden, self.emb_ms) + np.sum((attn + ff) * used, axis=1)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {f.name: np.asarray(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> LayerTable:
        scalars = {"dispatch_ms": float, "batch": int, "seq": int, "spread": float}
        return cls(**{f.name: scalars[f.name](arrays[f.name]) if f.name in scalars else np.asarray(arrays[f.name])
                      for f in dataclasses.fields(cls)})  # fmt: skip


def _interp_rows(x: np.ndarray, grid: np.ndarray, rows: np.ndarray) -> np.ndarray:
    # rows [n, G] values on `grid`; x [n] -> [n]: row i interpolated at x[i] (linear, clamped at the ends)
    j = np.clip(np.searchsorted(grid, x, side="right") - 1, 0, max(len(grid) - 2, 0))
    if len(grid) == 1:
        return rows[:, 0]
    lo, hi = grid[j], grid[j + 1]
    w = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    idx = np.arange(len(x))
    return rows[idx, j] * (1 - w) + rows[idx, j + 1] * w


class LayerTableRuns:
    """The compiled sub-layers of `space` (module docstring) on [batch, seq] inputs with random weights,
    as `(function, args)` runs for `time_calls` (the latency step times them interleaved with the archs,
    so load changes hit both alike); `table(rounds_ms, quantile)` turns their timings into a `LayerTable`."""

    def __init__(self, space: SearchSpace, base: dj.DistilBertConfig, *, batch: int = 1, seq: int = 128, seed: int = 0,
                 progress: bool = True):  # fmt: skip
        from .timing import progress_bar

        self.hidden = grid_points(space.hidden_values, HIDDEN_POINTS)
        self.attention = grid_points(sorted(space.attention_choices(), key=lambda hq: (hq[1], hq[0])), ATTENTION_POINTS)
        self.ffn = grid_points(space.ffn_values, FFN_POINTS)
        self.batch, self.seq = batch, seq
        rng = np.random.default_rng(seed)
        ids = jnp.asarray(rng.integers(0, base.vocab_size, (batch, seq)), jnp.int32)
        mask = jnp.ones((batch, seq), bool)

        def compiled(module, x):
            params = random_params(module, seed, x, mask)
            fn = jax.jit(lambda p, x, m: module.apply({"params": p}, x, m))
            return fn.lower(params, x, mask).compile(), (params, x, mask)

        modules = [(_EmbeddingsPart(base.replace(dim=h)), h, True) for h in self.hidden]
        modules += [(_AttentionSublayer(base.replace(dim=h, n_heads=a[0], qkv_dim=a[1])), h, False)
                    for h in self.hidden for a in self.attention]  # fmt: skip
        modules += [(_FFNSublayer(base.replace(dim=h, hidden_dim=f)), h, False) for h in self.hidden for f in self.ffn]
        self.runs = []
        with progress_bar(len(modules) + 1, "compiling sub-layers", progress) as bar:
            for module, h, takes_ids in modules:
                x = ids if takes_ids else jnp.asarray(rng.standard_normal((batch, seq, h)), jnp.float32)
                self.runs.append(compiled(module, x))
                bar.update()
            x = jnp.zeros((batch, seq, self.hidden[0]), jnp.float32)
            self.runs.append((jax.jit(lambda x: x + 1.0).lower(x).compile(), (x,)))  # the dispatch of one call
            bar.update()

    def table(self, rounds_ms: np.ndarray, quantile: float = 0.25) -> LayerTable:
        """The table from [rounds, len(runs)] timings of `runs`: per run the `quantile` over rounds, minus
        the trivial call's (the dispatch)."""
        ms = np.quantile(rounds_ms, quantile, axis=0)
        dispatch = float(ms[-1])
        timed = np.maximum(ms[:-1] - dispatch, 1e-6)
        nh, na, nf = len(self.hidden), len(self.attention), len(self.ffn)
        return LayerTable(np.array(self.hidden, np.float64), np.array([a[0] for a in self.attention], np.float64),
                          np.array([a[1] for a in self.attention], np.float64), np.array(self.ffn, np.float64),
                          timed[:nh], timed[nh: nh + nh * na].reshape(nh, na), timed[nh + nh * na:].reshape(nh, nf),
                          dispatch, self.batch, self.seq, float(np.median(spread(rounds_ms))))  # fmt: skip


def measure_layer_table(space: SearchSpace, base: dj.DistilBertConfig, *, batch: int = 1, seq: int = 128,
                        rounds: int = 10, calls: int = 3, quantile: float = 0.25, seed: int = 0,
                        progress: bool = True) -> LayerTable:  # fmt: skip
    """Time the sub-layers of `space` on their own (`LayerTableRuns`), each the `quantile` over `rounds`
    rounds as `measure_latencies` does."""
    runs = LayerTableRuns(space, base, batch=batch, seq=seq, seed=seed, progress=progress)
    samples = time_calls(runs.runs, rounds, calls, np.random.default_rng(seed), progress, desc="timing sub-layers")
    return runs.table(samples, quantile)


class LayerSumPredictor(Predictor):
    """kind "layer_sum": `c0 + c1 · table.raw(arch) + c2 · layers` (module docstring)."""

    kind = "layer_sum"

    def __init__(self, table: LayerTable, c0: float, c1: float, space: SearchSpace, meta: dict[str, Any] | None = None,
                 c2: float = 0.0):  # fmt: skip
        self.table, self.c0, self.c1, self.c2, self.space = table, float(c0), float(c1), float(c2), space
        self.meta = dict(meta or {})

    @classmethod
    def fit(cls, table: LayerTable, archs: Sequence[Arch], ms: np.ndarray, space: SearchSpace,
            meta: dict[str, Any] | None = None) -> LayerSumPredictor:  # fmt: skip
        """Calibrate `table` on measured archs: c0, c1, c2 minimising Σ ((c0 + c1 · raw + c2 · layers) / ms − 1)²."""
        ms = np.asarray(ms, np.float64)
        if len(archs) != len(ms) or len(archs) < 3 or not np.all(np.isfinite(ms) & (ms > 0)):
            raise PredictorError(f"calibrating the layer sum needs >= 3 archs with positive latencies, got "
                                 f"{len(archs)} archs and {len(ms)} latencies")  # fmt: skip
        raw, layers = table.raw(archs), np.array([a.layers for a in archs], np.float64)
        (c0, c1, c2), *_ = np.linalg.lstsq(np.stack([1 / ms, raw / ms, layers / ms], 1), np.ones_like(ms), rcond=None)
        if c1 <= 0:  # a degenerate fit (e.g. all archs alike): scale only
            c0, c1, c2 = 0.0, float(np.sum(raw / ms) / np.sum((raw / ms) ** 2)), 0.0
        return cls(table, c0, c1, space, {**(meta or {}), "n_train": len(archs)}, c2)

    def _predict(self, archs: Sequence[Arch]) -> np.ndarray:
        layers = np.array([a.layers for a in archs], np.float64)
        return np.maximum(self.c0 + self.c1 * self.table.raw(archs) + self.c2 * layers, 1e-6)

    def _config(self) -> dict[str, Any]:
        t = self.table
        return {"c0": self.c0, "c1": self.c1, "c2": self.c2, "batch": t.batch, "seq": t.seq, "dispatch_ms": t.dispatch_ms}

    def _arrays(self) -> dict[str, np.ndarray]:
        return self.table.to_arrays()

    @classmethod
    def _from_files(cls, config: dict, arrays: dict, space: SearchSpace, meta: dict) -> LayerSumPredictor:
        return cls(LayerTable.from_arrays(arrays), config["c0"], config["c1"], space, meta, config.get("c2", 0.0))
