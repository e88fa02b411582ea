"""Pure-JAX loop-nest scheduling environment with MLIR-RL's observation and hierarchical action space.

Episode: the ops of one benchmark program are scheduled in order; for the current op the agent picks an
action *type* and, depending on the type, its parameters:

| type | id | parameters (heads) | allowed when (order table) | effect |
|---|---|---|---|---|
| NT | 0 | — | always | done with this op |
| T  | 1 | tile choice per loop | op not tiled yet | tile all loops |
| TP | 2 | tile choice per loop | op not tiled yet | tile + run parallel tile loops as `forall` |
| I  | 3 | loop to move innermost | ≥ 2 loops, < 2 interchanges so far | interchange |
| V  | 4 | — | tile iteration count ≤ 512 | vectorize; done with this op |
| TF | 5 | — | op untiled, first step, it can fuse | tiled fusion into the producer's tiles; done with this op |

TF (MLIR-RL's tiled fusion) is offered for an elementwise op that reads its producer's result in the
producer's layout, when the producer has a reduction loop (matmul / batch matmul → bias add (+ GELU)): the
consumer runs inside the producer's tile loops, so the intermediate never goes to memory.

Tile choices are {none, 1, 2, 4, …, 64}, only sizes that divide the bound (and are smaller than it). After
`MAX_STEPS_OP` steps the op ends. Reward is 0 until the last op ends, then log10(t_unscheduled / t_scheduled)
of the whole program under `rl.cost_model`.

Observation (dict): `consumer` [F] and `producer` [F] op features (zeros when there is no producer),
`history` [H] the current op's schedule so far (one-hot tile choices, permutation, flags, step, cursor) and
`mask` [N_HEADS, A_MAX] bool action masks (row 0: type, rows 1..L: tile choice per loop, row L+1: loop to
interchange). Every row has at least one legal entry.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import cost_model
from .programs import MAX_LOOPS, MAX_OPS, N_TENSORS, OP_TYPES, ProgramTable

Array = jax.Array
L = MAX_LOOPS
N_TYPES = 6
NT, T, TP, I, V, TF = range(N_TYPES)
TILE_SIZES = (0, 1, 2, 4, 8, 16, 32, 64)   # 0 = not tiled
N_TILE = len(TILE_SIZES)
N_HEADS = 2 + L                             # type, L tile heads, interchange
A_MAX = max(N_TYPES, N_TILE, L)
MAX_STEPS_OP = 4
MAX_INTERCHANGES = 2
MAX_VECTOR_ITERS = 512
N_OP_FEATURES = len(OP_TYPES) + 5 + 1 + L * (2 + N_TENSORS)
N_HISTORY = L * N_TILE + L * L + 4 + MAX_STEPS_OP + MAX_OPS
# which heads each type uses: [N_TYPES, N_HEADS]
ACTIVE_HEADS = np.zeros((N_TYPES, N_HEADS), bool)
ACTIVE_HEADS[:, 0] = True
ACTIVE_HEADS[[T, TP], 1:1 + L] = True
ACTIVE_HEADS[I, 1 + L] = True


class SchedState(NamedTuple):
    """Environment state (one episode)."""

    prog: Array          # [] int program index
    cursor: Array        # [] int current op
    step_in_op: Array    # [] int
    tile_choice: Array   # [MAX_OPS, L] int index into TILE_SIZES
    tiled: Array         # [MAX_OPS] bool
    parallel: Array      # [MAX_OPS] bool
    vectorized: Array    # [MAX_OPS] bool
    perm: Array          # [MAX_OPS, L] loop ids outer→inner
    n_interchanges: Array  # [MAX_OPS] int
    fused: Array         # [MAX_OPS] bool: op k runs fused into op k-1's tiles (TF)


def op_features(table: ProgramTable) -> np.ndarray:
    """Static op features [P, MAX_OPS, F]: op one-hot, arith counts, #loops, per loop (log2 bound,
    reduction flag, log2(1+stride) in each tensor)."""
    onehot = np.eye(len(OP_TYPES))[table.op_type]
    dims = np.einsum("potdl,pol->potd", np.abs(table.coef), table.bounds - 1) + 1
    strides = np.cumprod(np.concatenate([dims[..., 1:], np.ones_like(dims[..., :1])], -1)[..., ::-1], -1)[..., ::-1]
    loop_stride = np.einsum("potdl,potd->potl", table.coef, strides) * table.tensor_valid[..., None]
    per_loop = np.concatenate([np.log2(table.bounds)[..., None], table.is_reduction[..., None],
                               np.log2(1 + np.moveaxis(loop_stride, -2, -1))], -1)      # [P, O, L, 2+T]
    feats = np.concatenate([onehot, table.arith, table.n_loops[..., None],
                            per_loop.reshape(*per_loop.shape[:2], -1)], -1)
    return (feats * table.op_valid[..., None]).astype(np.float32)


def fusable(table: ProgramTable) -> np.ndarray:
    """[P, MAX_OPS] bool: TF is possible (elementwise op reading its producer's result in the producer's
    layout, the producer having a reduction loop)."""
    dims = np.einsum("potdl,pol->potd", np.abs(table.coef), table.bounds - 1) + 1      # [P, O, T, D]
    out = np.zeros(table.op_valid.shape, bool)
    ew = OP_TYPES.index("elementwise")
    out[:, 1:] = (table.op_valid[:, 1:] & (table.op_type[:, 1:] == ew) & table.is_reduction[:, :-1].any(-1)
                  & np.all(dims[:, 1:, 0] == dims[:, :-1, N_TENSORS - 1], -1))
    return out


class SchedulingEnv:
    """Jittable, vmappable scheduling env over a `ProgramTable` (gymnax-style reset/step, auto-reset)."""

    def __init__(self, table: ProgramTable, machine: cost_model.Machine = cost_model.Machine()):
        self.table = table
        self.machine = machine
        self.n_programs = len(table.op_valid)
        self._t = jax.tree.map(jnp.asarray, table._replace(names=()))
        self._features = jnp.asarray(op_features(table))
        self._fusable = jnp.asarray(fusable(table))
        self.base_times = np.asarray(jax.jit(jax.vmap(self._program_time))(
            jax.vmap(self._initial_state)(jnp.arange(self.n_programs))))

    # ---- state ----------------------------------------------------------------------------------
    def _initial_state(self, prog: Array) -> SchedState:
        perms = jax.vmap(cost_model.default_perm)(self._t.n_loops[prog])
        z = jnp.zeros(MAX_OPS, bool)
        return SchedState(prog, jnp.int32(0), jnp.int32(0), jnp.zeros((MAX_OPS, L), jnp.int32), z, z, z,
                          perms.astype(jnp.int32), jnp.zeros(MAX_OPS, jnp.int32), z)

    def tile_extents(self, prog: Array, tile_choice: Array) -> Array:
        """Tile extents [MAX_OPS, L] of every op of `prog` from choices [MAX_OPS, L] (an untiled loop has
        extent = bound)."""
        sizes = jnp.asarray(TILE_SIZES)[tile_choice]
        return jnp.where(sizes == 0, self._t.bounds[prog], sizes)

    def op_tile_extents(self, prog: Array, op: Array, tile_choice: Array) -> Array:
        """Tile extents [L] of op `op` of `prog` from its choices [L] (its own bounds, not every op's)."""
        sizes = jnp.asarray(TILE_SIZES)[tile_choice]
        return jnp.where(sizes == 0, self._t.bounds[prog, op], sizes)

    def op_costs(self, s: SchedState) -> cost_model.OpCost:
        """Cost breakdown of every op of the program under the current schedule (fields [MAX_OPS])."""
        t, p = self._t, s.prog
        tiles = self.tile_extents(p, s.tile_choice)
        f = lambda *a: cost_model.op_cost(*a, m=self.machine)  # noqa: E731
        return jax.vmap(f)(t.bounds[p], t.is_reduction[p], t.coef[p], t.tensor_valid[p], t.arith[p],
                           tiles, s.parallel, s.perm, s.vectorized)

    def _program_time(self, s: SchedState) -> Array:
        """Σ op times; a fused (TF) op costs only its compute, spread over its producer's cores (its input
        tile is in cache, its result is the producer's tile)."""
        costs = self.op_costs(s)
        t, p = self._t, s.prog
        tiles = self.tile_extents(p, s.tile_choice)
        cores = jax.vmap(lambda *a: cost_model.parallel_cores(*a, m=self.machine))(
            t.bounds[p], t.is_reduction[p], tiles, s.parallel)
        cores = jnp.where(s.parallel, cores, 1.0)
        fused_time = costs.compute_time / jnp.concatenate([jnp.ones(1), cores[:-1]])
        return jnp.sum(jnp.where(s.fused, fused_time, costs.time) * self._t.op_valid[s.prog])

    # ---- observation ----------------------------------------------------------------------------
    def action_mask(self, s: SchedState) -> Array:
        """Legal actions [N_HEADS, A_MAX] bool for the current op."""
        t, p, c = self._t, s.prog, s.cursor
        bounds, n = t.bounds[p, c], t.n_loops[p, c]
        real = jnp.arange(L) < n
        extents = self.op_tile_extents(p, c, s.tile_choice[c])          # this op's tile only
        has_par = jnp.any(real & ~t.is_reduction[p, c] & (bounds > 1))
        types = jnp.stack([True, ~s.tiled[c], ~s.tiled[c] & has_par,
                           (n >= 2) & (s.n_interchanges[c] < MAX_INTERCHANGES),
                           jnp.prod(extents.astype(jnp.float32)) <= MAX_VECTOR_ITERS,
                           self._fusable[p, c] & ~s.tiled[c] & (s.step_in_op == 0)])
        sizes = jnp.asarray(TILE_SIZES)[1:]
        tile_ok = real[:, None] & (bounds[:, None] % sizes == 0) & (sizes < bounds[:, None])
        tiles = jnp.concatenate([jnp.ones((L, 1), bool), tile_ok], 1)
        inter = real & (s.perm[c, -1] != jnp.arange(L))
        inter = inter.at[0].set(inter[0] | ~jnp.any(inter))
        pad = lambda x: jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, A_MAX - x.shape[-1])])  # noqa: E731
        return jnp.concatenate([pad(types[None]), pad(tiles), pad(inter[None])], 0)

    def observe(self, s: SchedState) -> dict[str, Array]:
        """Observation dict of state `s` (see module docstring)."""
        c = jnp.minimum(s.cursor, MAX_OPS - 1)
        s = s._replace(cursor=c)
        feats = self._features[s.prog]
        producer = jnp.where(c > 0, feats[jnp.maximum(c - 1, 0)], 0.0)
        pos = jnp.argsort(s.perm[c])                                   # position of each loop
        history = jnp.concatenate([
            jax.nn.one_hot(s.tile_choice[c], N_TILE).ravel(), jax.nn.one_hot(pos, L).ravel(),
            jnp.stack([s.tiled[c], s.parallel[c], s.vectorized[c], s.fused[c]]).astype(jnp.float32),
            jax.nn.one_hot(s.step_in_op, MAX_STEPS_OP), jax.nn.one_hot(c, MAX_OPS)])
        return {"consumer": feats[c], "producer": producer, "history": history, "mask": self.action_mask(s)}

    # ---- dynamics -------------------------------------------------------------------------------
    def reset_to(self, prog: Array) -> tuple[dict[str, Array], SchedState]:
        """Start an episode on program `prog`."""
        s = self._initial_state(jnp.asarray(prog, jnp.int32))
        return self.observe(s), s

    def reset(self, key: Array) -> tuple[dict[str, Array], SchedState]:
        """Start an episode on a uniformly drawn program."""
        return self.reset_to(jax.random.randint(key, (), 0, self.n_programs))

    def step_env(self, s: SchedState, action: Array) -> tuple[dict[str, Array], SchedState, Array, Array, dict]:
        """Apply `action` [N_HEADS] int (no auto-reset). Returns obs, state, reward, terminated, info."""
        a, c = action[0], s.cursor
        tiling = (a == T) | (a == TP)
        tile_choice = s.tile_choice.at[c].set(jnp.where(tiling, action[1:1 + L], s.tile_choice[c]))
        j = action[1 + L]
        perm_c = s.perm[c]
        idx = jnp.arange(L)
        at = jnp.argmax(perm_c == j)
        moved = jnp.where(idx < at, perm_c, jnp.where(idx < L - 1, jnp.roll(perm_c, -1), j))
        perm = s.perm.at[c].set(jnp.where(a == I, moved, perm_c))
        op_done = (a == NT) | (a == V) | (a == TF) | (s.step_in_op + 1 >= MAX_STEPS_OP)
        new = SchedState(
            s.prog, c + op_done.astype(jnp.int32), jnp.where(op_done, 0, s.step_in_op + 1), tile_choice,
            s.tiled.at[c].set(s.tiled[c] | tiling), s.parallel.at[c].set(s.parallel[c] | (a == TP)),
            s.vectorized.at[c].set(s.vectorized[c] | (a == V)), perm,
            s.n_interchanges.at[c].add((a == I).astype(jnp.int32)), s.fused.at[c].set(s.fused[c] | (a == TF)))
        n_ops = jnp.sum(self._t.op_valid[s.prog])
        terminated = new.cursor >= n_ops
        log_speedup = jnp.log10(jnp.asarray(self.base_times)[s.prog] / self._program_time(new))
        reward = jnp.where(terminated, log_speedup, 0.0)
        info = {"log10_speedup": reward, "program": s.prog}
        return self.observe(new), new, reward, terminated, info

    def step(self, key: Array, s: SchedState, action: Array) -> tuple[dict, SchedState, Array, Array, Array, dict]:
        """gymnax-style step with auto-reset: (obs, state, reward, terminated, truncated, info)."""
        obs, new, reward, terminated, info = self.step_env(s, action)
        obs_r, s_r = self.reset(key)
        pick = lambda r, x: jnp.where(terminated, r, x)  # noqa: E731
        return (jax.tree.map(pick, obs_r, obs), jax.tree.map(pick, s_r, new), reward, terminated,
                jnp.zeros((), bool), info)
