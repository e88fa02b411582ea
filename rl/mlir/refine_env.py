"""The refinement space (`rl.mlir.refine`) as a jittable env with measured rewards, for `rl.ppo`.

An episode schedules one op (drawn uniformly from the env's ops) in ≤ 3 steps: KEEP / DATA_TILING end it at
once; DIST, then RED, then VEC change IREE's config level by level (VEC or DONE end it). Masks are exact
(`refine.head_masks`, precomputed per op as tables: the only state they depend on is the workgroup tile the
DIST step chose and the reduction vector the RED step chose). At the episode's end an `io_callback` scores the
schedule on the host (an `EpisodeScorer`): measured with IREE (`Measurer`) — reward log10(t_IREE default / t) —
or predicted by a learned cost model (`rl.costnet.reward.LearnedRewards`, log10(t̂_default / t̂)), so the empty schedule scores 0 and a policy that learns nothing loses
nothing; a schedule that fails (never expected: masks) gets `failed_reward` and is counted.
Observation `consumer` = static op features ⊕ the choices so far; `producer` / `history` are empty.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import threading
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.custom_batching
import jax.numpy as jnp
import numpy as np
from jax.experimental import io_callback

from ..envs import Env, log_wrapper
from ..programs import ProgramTable
from . import refine as R
from .emit import OpSpec, program_specs

log = logging.getLogger("rl.mlir")
KINDS = ("matmul", "batch_matmul", "conv2d", "pooling", "bias_add", "bias_gelu", "relu", "residual_add",
         "row_sum", "exp_sum")
N_SLOTS = 4                      # config dims described in the features (the innermost four)
N_STATIC = len(KINDS) + 6 * N_SLOTS + 6
N_DYNAMIC = R.N_DIST * len(R.DIST_FACTORS) + R.N_VEC * len(R.VEC_SIZES) + len(R.VRED_SIZES) \
    + len(R.CRED_SIZES) + len(R.TYPE_NAMES) + 3
N_FEATURES = N_STATIC + N_DYNAMIC


def _log2(x: float) -> float:
    return float(np.log2(1.0 + max(x, 0)))


def static_features(spec: OpSpec, d: R.DefaultConfig) -> np.ndarray:
    """[N_STATIC]: kind one-hot; per innermost config dim: log2 bound, reduction flag, IREE's workgroup /
    register / reduction-vector tile (log2), present; log2 FLOPs, log2 bytes, intensity, flags."""
    f = np.zeros(N_STATIC, np.float32)
    f[KINDS.index(spec.kind)] = 1.0
    n = len(d.bounds)
    dist, vec, vred = d.level("distribution"), d.level("vector_common_parallel"), d.level("vector_reduction")
    for slot in range(N_SLOTS):
        dim = n - N_SLOTS + slot
        if dim < 0:
            continue
        o = len(KINDS) + 6 * slot
        f[o:o + 6] = [_log2(d.bounds[dim]) / 12, float(d.reduction[dim]), _log2(dist[dim]) / 12,
                      _log2(vec[dim]) / 6, _log2(vred[dim]) / 6, 1.0]
    flops = float(np.prod(spec.bounds))
    nbytes = 4.0 * sum(float(np.prod(spec.shape(t))) for t in range(len(spec.maps)))
    f[-6:] = [_log2(flops) / 30, _log2(nbytes) / 30, np.log2(flops / nbytes + 1) / 8, float(d.refinable),
              float(d.data_tiling), n / 4]
    return f


class OpTables(NamedTuple):
    """Per-op static tables ([N, ...] numpy) the jitted env indexes."""

    features: np.ndarray      # [N, N_STATIC]
    types_first: np.ndarray   # [N, A_MAX] legal types at step 0
    dist_ok: np.ndarray       # [N, N_DIST, A_MAX]
    vec_ok: np.ndarray        # [N, N_VEC, len(DIST_FACTORS), A_MAX, A_MAX]: legal register tiles given the
    #                           DIST choice of the slot's loop and the vector_reduction choice
    red_ok: np.ndarray        # [N, 2, A_MAX]: vector_reduction, cache_reduction
    has_vec: np.ndarray       # [N] any register-tile choice (without DIST)
    has_red: np.ndarray       # [N]


def op_tables(ops: list[tuple[OpSpec, R.DefaultConfig]]) -> OpTables:
    n, A = len(ops), R.A_MAX
    feats = np.stack([static_features(s, d) for s, d in ops]) if ops else np.zeros((0, N_STATIC), np.float32)
    types_first = np.zeros((n, A), bool)
    dist_ok = np.zeros((n, R.N_DIST, A), bool)
    vec_ok = np.zeros((n, R.N_VEC, len(R.DIST_FACTORS), A, A), bool)
    red_ok = np.zeros((n, 2, A), bool)
    for i, (_, d) in enumerate(ops):
        s0 = R.initial_state(d)
        m0 = R.head_masks(d, s0)
        types_first[i] = m0[0]
        dist_ok[i] = m0[R.H_DIST:R.H_DIST + R.N_DIST]
        red_ok[i] = m0[[R.H_VRED, R.H_CRED]]
        dslots = R.dist_slots(d)
        for h, dim in enumerate(R.vec_slots(d)):
            hd = dslots.index(dim)
            for c in np.flatnonzero(m0[R.H_DIST + hd]):
                for v in np.flatnonzero(m0[R.H_VRED]):
                    choice = np.zeros(R.N_HEADS, np.int64)
                    choice[R.H_DIST + hd], choice[R.H_VRED] = c, v
                    types = ([R.DIST] if c else []) + ([R.RED] if v else [])
                    vec_ok[i, h, c, v] = R.head_masks(d, R.replay(d, types, choice))[R.H_VEC + h]
    vec_ok[..., 0] = True
    return OpTables(feats, types_first, dist_ok, vec_ok, red_ok, vec_ok[:, :, 0, 0, 1:].any((1, 2)),
                    red_ok[:, :, 1:].any((1, 2)))


def vec_dist_slot(ops: list[tuple[OpSpec, R.DefaultConfig]]) -> np.ndarray:
    """[N, N_VEC] the dist head whose choice bounds each register-tile head (0 where unused)."""
    out = np.zeros((len(ops), R.N_VEC), np.int32)
    for i, (_, d) in enumerate(ops):
        for h, dim in enumerate(R.vec_slots(d)):
            out[i, h] = R.dist_slots(d).index(dim)
    return out


class RefineState(NamedTuple):
    op: jax.Array          # [] int
    step: jax.Array        # [] int
    done_types: jax.Array  # [len(TYPE_NAMES)] bool
    choices: jax.Array     # [N_HEADS] int: last choice per head (0 = keep)


def training_ops(table: ProgramTable, refinable_only: bool = True) -> list[tuple[str, OpSpec]]:
    """(program/op name, spec) of every distinct op of `table` (by IREE source), optionally only the ones
    the space can change (IREE's default pipeline is `DoubleTilingExpert`)."""
    out, seen = [], set()
    for p, name in enumerate(table.names):
        for k, spec in enumerate(program_specs(table, p)):
            src = R.default_source(spec)
            if src in seen:
                continue
            seen.add(src)
            if refinable_only and not (R.default_config(spec).refinable or R.default_config(spec).data_tiling):
                continue
            out.append((f"{name}/{k}:{spec.name}", spec))
    return out


def episode_refinement(d: R.DefaultConfig, done_types: np.ndarray, choices: np.ndarray) -> R.Refinement:
    """The `Refinement` an ended episode chose (its step types `done_types`, last choice per head `choices`);
    ValueError when it is illegal (never expected: masks)."""
    return R.to_refinement(d, R.replay(d, [t for t in R.STEP_ORDER if done_types[t]], choices))


class EpisodeScorer:
    """Host side of the env's end-of-episode `io_callback`: `rewards` flattens the batch and scores the ended
    episodes with `score` (a subclass: measured with IREE, or predicted by a learned cost model)."""

    ops: list[tuple[OpSpec, R.DefaultConfig]]
    failed_reward: float = -1.0

    def score(self, op: np.ndarray, done_types: np.ndarray, choices: np.ndarray) -> np.ndarray:
        """Rewards [n] of n ended episodes (op index [n], done types [n, T], choices [n, N_HEADS])."""
        raise NotImplementedError

    def rewards(self, terminated, op, done_types, choices) -> np.ndarray:
        term = np.asarray(terminated)
        shape = term.shape
        flat_t, flat_op = term.reshape(-1), np.asarray(op).reshape(-1)
        dt = np.asarray(done_types).reshape(-1, len(R.TYPE_NAMES))
        ch = np.asarray(choices).reshape(-1, R.N_HEADS)
        out = np.zeros(flat_t.shape, np.float32)
        idx = np.flatnonzero(flat_t)
        if len(idx):
            out[idx] = self.score(flat_op[idx].astype(int), dt[idx], ch[idx])
        return out.reshape(shape)


class Measurer(EpisodeScorer):
    """Host side: measures ended episodes (a thread pool compiles in parallel; IREE's compiler runs as a
    subprocess) and turns times into rewards against each op's measured IREE default."""

    def __init__(self, ops: list[tuple[OpSpec, R.DefaultConfig]], names: list[str], repeats: int = 5,
                 timing: str = "cpu", failed_reward: float = -1.0, workers: int | None = None,
                 log_path: str | None = None):
        self.ops, self.names, self.repeats, self.timing = ops, names, repeats, timing
        self.failed_reward = failed_reward
        self.log_path = log_path          # JSONL: one line per measured episode (op, schedule, time, status)
        self._lock = threading.Lock()
        self.pool = concurrent.futures.ThreadPoolExecutor(workers or os.cpu_count() or 1)
        self.n_measured = self.n_failed = 0
        self.default_s = np.asarray(list(self.pool.map(
            lambda o: self.time_of(o[0], o[1], R.Refinement("keep")), ops)))
        if np.isnan(self.default_s).any():
            bad = [names[i] for i in np.flatnonzero(np.isnan(self.default_s))]
            raise RuntimeError(f"IREE's default could not be measured for {bad}")

    def time_of(self, spec: OpSpec, d: R.DefaultConfig, r: R.Refinement, i: int | None = None) -> float:
        m = R.measure_refinement(spec, d, r, self.repeats, timing=self.timing)
        if self.log_path and i is not None:
            rec = {"op": self.names[i], "schedule": r.key(), "status": m.status, "time_s": m.time_s,
                   "default_s": float(self.default_s[i]), "timing": self.timing}
            with self._lock, open(self.log_path, "a") as f:
                f.write(json.dumps(rec) + "\n")
        return m.time_s if m.ok else float("nan")

    def refinement(self, i: int, done_types: np.ndarray, choices: np.ndarray) -> R.Refinement:
        return episode_refinement(self.ops[i][1], done_types, choices)

    def _reward(self, i: int, done_types: np.ndarray, choices: np.ndarray) -> float:
        spec, d = self.ops[i]
        try:
            r = self.refinement(i, done_types, choices)
        except ValueError as e:
            log.warning("illegal schedule reached the host for %s: %s", self.names[i], e)
            t = float("nan")
        else:
            t = self.time_of(spec, d, r, i)
        self.n_measured += 1
        if np.isnan(t):
            self.n_failed += 1
            return self.failed_reward
        return float(max(np.log10(self.default_s[i] / t), self.failed_reward))

    def score(self, op: np.ndarray, done_types: np.ndarray, choices: np.ndarray) -> np.ndarray:
        return np.asarray(list(self.pool.map(lambda b: self._reward(int(op[b]), done_types[b], choices[b]),
                                             range(len(op)))), np.float32)


def batched_io_callback(fn: Callable[..., np.ndarray], terminated: jax.Array, *args: jax.Array) -> jax.Array:
    """`io_callback(fn)` → float32 of `terminated`'s shape, where `fn` works on any leading batch shape
    (`EpisodeScorer.rewards`). Under `vmap` (the envs, the seeds) it is called once with the whole batch —
    `io_callback`'s own batching rule calls it once per element in sequence, so a rollout step of 64 envs
    would make 64 host round trips (64 cost-model calls, or 64 measurements one after another)."""

    @jax.custom_batching.custom_vmap
    def call(t, *a):
        return io_callback(fn, jax.ShapeDtypeStruct(t.shape, jnp.float32), t, *a)

    @call.def_vmap
    def _rule(axis_size, in_batched, t, *a):
        full = [x if b else jnp.broadcast_to(x, (axis_size,) + x.shape) for x, b in zip((t, *a), in_batched)]
        return call(*full), True

    return call(terminated, *args)


class RefineEnv:
    """Jittable env over a list of ops (see the module docstring)."""

    def __init__(self, ops: list[tuple[OpSpec, R.DefaultConfig]], measurer: EpisodeScorer | None = None):
        self.ops = ops
        self.n_ops = len(ops)
        self.measurer = measurer
        self.tables = op_tables(ops)
        self._t = jax.tree.map(jnp.asarray, self.tables)
        self._vec_dslot = jnp.asarray(vec_dist_slot(ops))

    def _mask(self, s: RefineState) -> jax.Array:
        t, i = self._t, s.op
        first = s.step == 0
        dt = s.done_types
        dist_c = s.choices[R.H_DIST:R.H_DIST + R.N_DIST]
        vred_c = s.choices[R.H_VRED]
        vec_rows = jax.vmap(lambda h: t.vec_ok[i, h, dist_c[self._vec_dslot[i, h]], vred_c])(jnp.arange(R.N_VEC))
        vec_any = jnp.any(vec_rows[:, 1:])
        types = jnp.zeros(R.A_MAX, bool)
        types = types.at[R.KEEP].set(first).at[R.DATA_TILING].set(first & t.types_first[i, R.DATA_TILING])
        types = types.at[R.DIST].set(first & t.types_first[i, R.DIST])
        types = types.at[R.RED].set(~dt[R.RED] & ~dt[R.VEC] & t.has_red[i])
        types = types.at[R.VEC].set(~dt[R.VEC] & vec_any).at[R.DONE].set(~first)
        return jnp.concatenate([types[None], t.dist_ok[i], vec_rows, t.red_ok[i]], 0)

    def observe(self, s: RefineState) -> dict[str, jax.Array]:
        c = s.choices
        dyn = [jax.nn.one_hot(c[R.H_DIST:R.H_DIST + R.N_DIST], len(R.DIST_FACTORS)).ravel(),
               jax.nn.one_hot(c[R.H_VEC:R.H_VEC + R.N_VEC], len(R.VEC_SIZES)).ravel(),
               jax.nn.one_hot(c[R.H_VRED], len(R.VRED_SIZES)), jax.nn.one_hot(c[R.H_CRED], len(R.CRED_SIZES)),
               s.done_types.astype(jnp.float32), jax.nn.one_hot(s.step, 3)]
        z = jnp.zeros((0,), jnp.float32)
        return {"consumer": jnp.concatenate([self._t.features[s.op]] + dyn), "producer": z, "history": z,
                "mask": self._mask(s)}

    def reset_to(self, op) -> tuple[dict, RefineState]:
        s = RefineState(jnp.asarray(op, jnp.int32), jnp.int32(0), jnp.zeros(len(R.TYPE_NAMES), bool),
                        jnp.zeros(R.N_HEADS, jnp.int32))
        return self.observe(s), s

    def reset(self, key) -> tuple[dict, RefineState]:
        return self.reset_to(jax.random.randint(key, (), 0, self.n_ops))

    def step_env(self, s: RefineState, action: jax.Array):
        """Apply a joint action [N_HEADS] (no auto-reset) → (obs, state, reward, terminated, info)."""
        a = action[0]
        use = jnp.asarray(R.ACTIVE_HEADS)[a] & (jnp.arange(R.N_HEADS) > 0)
        choices = jnp.where(use, action, s.choices).astype(jnp.int32)
        new = RefineState(s.op, s.step + 1, s.done_types.at[a].set(True), choices)
        terminated = (a == R.KEEP) | (a == R.DATA_TILING) | (a == R.DONE) | (a == R.VEC) | (new.step >= 3)
        if self.measurer is None:
            reward = jnp.zeros((), jnp.float32)
        else:
            reward = batched_io_callback(self.measurer.rewards, terminated, new.op, new.done_types, new.choices)
            reward = jnp.where(terminated, reward, 0.0)
        info = {"log10_speedup": reward, "op": s.op}
        return self.observe(new), new, reward, terminated, info

    def step(self, key, s: RefineState, action: jax.Array):
        """gymnax-style step with auto-reset."""
        obs, new, reward, terminated, info = self.step_env(s, action)
        obs_r, s_r = self.reset(key)
        pick = lambda r, x: jnp.where(terminated, r, x)  # noqa: E731
        return (jax.tree.map(pick, obs_r, obs), jax.tree.map(pick, s_r, new), reward, terminated,
                jnp.zeros((), bool), info)


def refine_env(table: ProgramTable, measured: bool = True, scorer: Callable[..., EpisodeScorer] | None = None,
               **measurer_kw) -> tuple[Env, RefineEnv]:
    """(`Env` for `rl.ppo.make_train(cfg, env=...)` with episode logging, the env) over the distinct ops of
    `table` that the space can change. Rewards: `scorer(ops, names)` when given (e.g. a learned cost model,
    `rl.costnet.reward.LearnedRewards`), else IREE measurements (`Measurer(ops, names, **measurer_kw)`) when
    `measured`, else none."""
    named = training_ops(table)
    ops = [(spec, R.default_config(spec)) for _, spec in named]
    names = [n for n, _ in named]
    if scorer is not None:
        rewarder: EpisodeScorer | None = scorer(ops, names)
    else:
        rewarder = Measurer(ops, names, **measurer_kw) if measured else None
    e = RefineEnv(ops, rewarder)
    return log_wrapper(Env(e.reset, e.step, R.N_HEADS, R.A_MAX, R.ACTIVE_HEADS, False)), e
