"""Measured rewards inside the jitted PPO loop: the episode-end reward comes from IREE through `io_callback`.

`MeasuredSchedulingEnv(table)` is the scheduling env whose terminal reward is log10(t_unscheduled /
t_measured) of the whole program, measured with `rl.mlir.measure` (disk cache keyed by the exact MLIR, so a
schedule seen before costs a file read). The env step stays pure JAX; a `jax.experimental.io_callback`
hands the host each env's terminal flag and schedule (under `vmap`, JAX calls it once per env); the host
measures only the episodes that just ended and returns 0 for the rest. PPO (`rl.ppo.make_train(cfg, env=measured_env(...))`) is still one jitted program, traced once.
A schedule IREE rejects (or that fails verification / the numpy check) gets `failed_reward` (MLIR-RL's
penalty for a failed transformation) and is logged with program and schedule.

Cost: a new schedule is one IREE compile per op (~0.3–1 s) plus its runs, so measured-reward training is
for small programs (`rl.mlir.suite.validation_programs()`), typically as fine-tuning of a policy trained
on the (calibrated) cost model.
"""

from __future__ import annotations

import logging
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import io_callback

from ..env import SchedState, SchedulingEnv
from ..envs import Env
from ..programs import ProgramTable
from .emit import program_specs
from .measure import measure_program
from .schedule import from_env_state, unscheduled
from .timer import MIN_DEADLINE_S

log = logging.getLogger("rl.mlir")
ProgramTimer = Callable[[ProgramTable, int, list], float]   # (table, program, schedules) -> seconds (nan = failed)


def iree_program_time(repeats: int = 3, stop_factor: float | None = 10.0) -> ProgramTimer:
    """Program time measured with IREE (nan when a schedule fails). A schedule still running after
    `stop_factor` × the unscheduled program's time is stopped and gets that time (reward clipped at
    −log10(stop_factor) = −1, MLIR-RL's failure penalty), so one bad schedule costs at most that long."""

    def timer(table: ProgramTable, p: int, schedules: list | None) -> float:
        specs = program_specs(table, p)
        base = measure_program(specs, [unscheduled(s) for s in specs], repeats)     # cached after the first
        if schedules is None or not base.ok:
            return base.time_s if base.ok else float("nan")
        if stop_factor is None:
            m = measure_program(specs, schedules, repeats)
            return m.time_s if m.ok else float("nan")
        cap = stop_factor * base.time_s
        m = measure_program(specs, schedules, repeats, deadline_s=max(cap, MIN_DEADLINE_S))
        return min(m.time_s, cap) if m.ok else cap if m.status == "slow" else float("nan")

    return timer


class MeasuredSchedulingEnv(SchedulingEnv):
    """`SchedulingEnv` whose episode-end reward is measured on the host (see the module docstring)."""

    def __init__(self, table: ProgramTable, timer: ProgramTimer | None = None, failed_reward: float = -1.0,
                 **kw):
        super().__init__(table, **kw)
        self.timer = timer or iree_program_time()
        self.failed_reward = float(failed_reward)
        self.measured_base = np.asarray([self.timer(table, p, None) for p in range(self.n_programs)])
        if np.isnan(self.measured_base).any():
            bad = [table.names[p] for p in np.flatnonzero(np.isnan(self.measured_base))]
            raise ValueError(f"unscheduled program(s) {bad} could not be measured")
        self.n_measured = 0

    def _host_reward(self, terminated, prog, tile_choice, parallel, vectorized, perm, fused) -> np.ndarray:
        terminated = np.asarray(terminated)
        shape = terminated.shape
        flat = lambda x: np.asarray(x).reshape((-1,) + np.asarray(x).shape[len(shape):])  # noqa: E731
        term, progs = terminated.reshape(-1), np.asarray(prog).reshape(-1)
        tc, par, vec, pm, fu = (flat(x) for x in (tile_choice, parallel, vectorized, perm, fused))
        out = np.zeros(term.shape, np.float32)
        for b in np.flatnonzero(term):
            p = int(progs[b])
            s = SchedState(p, 0, 0, tc[b], par[b], par[b], vec[b], pm[b], 0, fu[b])
            t = self.timer(self.table, p, from_env_state(self.table, s))
            self.n_measured += 1
            if np.isnan(t):
                log.warning("measured reward: schedule failed on %s", self.table.names[p])
                out[b] = self.failed_reward
            else:
                out[b] = np.log10(self.measured_base[p] / t)
        return out.reshape(shape)

    def step_env(self, s: SchedState, action: jax.Array):
        obs, new, _, terminated, info = super().step_env(s, action)
        r = io_callback(self._host_reward, jax.ShapeDtypeStruct(terminated.shape, jnp.float32), terminated,
                        new.prog, new.tile_choice, new.parallel, new.vectorized, new.perm, new.fused)
        r = jnp.where(terminated, r, 0.0)
        return obs, new, r, terminated, {**info, "log10_speedup": r}


def measured_env(table: ProgramTable, timer: ProgramTimer | None = None, failed_reward: float = -1.0,
                 machine=None) -> tuple[Env, MeasuredSchedulingEnv]:
    """(`Env` for `rl.ppo.make_train(cfg, env=...)`, the underlying env), episode returns logged."""
    from ..env import A_MAX, ACTIVE_HEADS, N_HEADS
    from ..envs import log_wrapper

    e = MeasuredSchedulingEnv(table, timer, failed_reward, **({"machine": machine} if machine else {}))
    return log_wrapper(Env(e.reset, e.step, N_HEADS, A_MAX, ACTIVE_HEADS, False)), e
