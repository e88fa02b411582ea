"""Environment adapters: one interface for the scheduling env and gymnax envs, plus episode logging.

`Env` exposes `reset(key) -> (obs, state)` and `step(key, state, action [H]) -> (obs, state, reward,
terminated, truncated, info)` with auto-reset, obs as a dict with `consumer`, `producer`, `history` and
`mask` [H, A]; `info` carries `returned_episode_return` / `returned_episode` and, for envs that truncate,
`final_obs` (the observation before auto-reset, to bootstrap truncated episodes).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import env as sched
from .config import GYMNAX_ENVS
from .programs import test_programs, train_programs

Array = jax.Array


class LogState(NamedTuple):
    env_state: Any
    episode_return: Array
    episode_length: Array


class Env(NamedTuple):
    """A jittable environment with hierarchical discrete actions (see module docstring)."""

    reset: Callable
    step: Callable
    n_heads: int
    n_actions: int
    active: np.ndarray        # [n_types, n_heads] heads used by each action type
    can_truncate: bool


def _gymnax_obs(o: Array, n: int) -> dict[str, Array]:
    z = jnp.zeros((0,), jnp.float32)
    return {"consumer": o.astype(jnp.float32), "producer": z, "history": z, "mask": jnp.ones((1, n), bool)}


def gymnax_env(name: str) -> Env:
    """Wrap a gymnax env (flat discrete actions become a single type head)."""
    import gymnax

    if name not in GYMNAX_ENVS:
        raise ValueError(f"unknown gymnax env {name!r}; expected one of {GYMNAX_ENVS}")
    env, params = gymnax.make(name)
    n = env.action_space(params).n

    def reset(key):
        o, s = env.reset(key, params)
        return _gymnax_obs(o, n), s

    def step(key, s, action):
        o, s, r, term, trunc, info = env.step(key, s, action[0], params)
        info = {"final_obs": _gymnax_obs(info["final_observation"], n)}
        return _gymnax_obs(o, n), s, r.astype(jnp.float32), term, trunc, info

    return Env(reset, step, 1, n, np.ones((n, 1), bool), True)


def sched_env(test: bool = False, machine: Any = None, table: Any = None) -> tuple[Env, sched.SchedulingEnv]:
    """The scheduling env over the training (or held-out, or the given `table` of) programs (cost model on
    `machine`, default `cost_model.Machine()`)."""
    table = table if table is not None else test_programs() if test else train_programs()
    e = sched.SchedulingEnv(table, *([machine] if machine else []))
    return Env(e.reset, e.step, sched.N_HEADS, sched.A_MAX, sched.ACTIVE_HEADS, False), e


def make_env(name: str, machine: Any = None) -> Env:
    """`Env` for "sched" (cost model on `machine`) or a gymnax id, wrapped with episode-return logging."""
    env = sched_env(machine=machine)[0] if name == "sched" else gymnax_env(name)
    return log_wrapper(env)


def log_wrapper(env: Env) -> Env:
    """Track episode returns: info gets `returned_episode_return` and `returned_episode` (done flag)."""

    def reset(key):
        o, s = env.reset(key)
        return o, LogState(s, jnp.float32(0), jnp.int32(0))

    def step(key, s, action):
        o, es, r, term, trunc, info = env.step(key, s.env_state, action)
        done = term | trunc
        ret, length = s.episode_return + r, s.episode_length + 1
        info = {**info, "returned_episode_return": ret, "returned_episode_length": length,
                "returned_episode": done}
        new = LogState(es, jnp.where(done, 0.0, ret), jnp.where(done, 0, length))
        return o, new, r, term, trunc, info

    return env._replace(reset=reset, step=step)
