"""Evaluation: geometric-mean speedup on held-out programs for the learned policy and baselines.

Baselines (all scored by the same cost model): no scheduling (1×); a heuristic (TP with the largest legal
tile ≤ 32 on every parallel loop, reduction loops untiled, then NT); random search (best of K episodes of
uniformly random legal actions); the policy greedy (1 evaluation) and best of K sampled episodes (K cost-
model evaluations, the same budget as random search). Gymnax envs: mean greedy episode return.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from . import distributions as dist
from . import env as sched
from .envs import Env

Array = jax.Array
EPISODE_STEPS = sched.MAX_OPS * sched.MAX_STEPS_OP
Policy = Callable[[Array, dict, sched.SchedState], Array]   # (key, obs, state) -> action [N_HEADS]


def rollout_log_speedup(env: sched.SchedulingEnv, policy: Policy, prog: Array, key: Array) -> Array:
    """log10 speedup of one episode on program `prog` (actions frozen after termination)."""
    return rollout(env, policy, prog, key)[1]


def rollout(env: sched.SchedulingEnv, policy: Policy, prog: Array, key: Array) -> tuple[sched.SchedState, Array]:
    """One episode on program `prog`: final state (the schedule) and its modelled log10 speedup."""
    obs, s = env.reset_to(prog)

    def body(carry, k):
        obs, s, done, result = carry
        o2, s2, r, term, _ = env.step_env(s, policy(k, obs, s))
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(done, b, a), new, old)  # noqa: E731
        return (keep(o2, obs), keep(s2, s), done | term, jnp.where(done, result, r)), None

    init = (obs, s, jnp.bool_(False), jnp.float32(0))
    (_, s, _, result), _ = jax.lax.scan(body, init, jax.random.split(key, EPISODE_STEPS))
    return s, result


def random_policy(key: Array, obs: dict, s: sched.SchedState) -> Array:
    """Uniform over legal actions of every head."""
    return dist.sample(key, jnp.zeros(obs["mask"].shape), obs["mask"])


def heuristic_policy(env: sched.SchedulingEnv) -> Policy:
    """TP with the largest legal tile ≤ 32 on parallel loops (reduction loops untiled), then NT."""
    red = jnp.asarray(env.table.is_reduction)

    def policy(key: Array, obs: dict, s: sched.SchedState) -> Array:
        mask = obs["mask"]
        tile_mask = mask[1:1 + sched.L, :sched.N_TILE] & (jnp.arange(sched.N_TILE) <= sched.TILE_SIZES.index(32))
        best = sched.N_TILE - 1 - jnp.argmax(tile_mask[:, ::-1], axis=1)
        tiles = jnp.where(red[s.prog, jnp.minimum(s.cursor, sched.MAX_OPS - 1)], 0, best)
        use_tp = mask[0, sched.TP] & (s.step_in_op == 0)
        return jnp.concatenate([jnp.where(use_tp, sched.TP, sched.NT)[None], tiles, jnp.zeros(1, jnp.int32)])

    return policy


def network_policy(network: Any, params: Any, greedy: bool) -> Policy:
    """The learned policy, greedy (mode of every head) or sampled."""

    def policy(key: Array, obs: dict, s: sched.SchedState) -> Array:
        batched = jax.tree.map(lambda x: x[None], obs)
        logits, _ = network.apply(params, batched)
        a = dist.mode(logits, batched["mask"]) if greedy else dist.sample(key, logits, batched["mask"])
        return a[0]

    return policy


def best_of(env: sched.SchedulingEnv, policy: Policy, k: int, key: Array) -> Array:
    """Per program, the best log10 speedup over `k` episodes: → [P]."""
    progs = jnp.arange(env.n_programs)
    keys = jax.random.split(key, (env.n_programs, k))
    run = jax.vmap(jax.vmap(lambda p, kk: rollout_log_speedup(env, policy, p, kk), (None, 0)), (0, 0))
    return run(progs, keys).max(axis=1)


def evaluate_schedules(env: sched.SchedulingEnv, network: Any = None, params: Any = None, k: int = 32,
                       seed: int = 0) -> dict[str, np.ndarray]:
    """Per-program log10 speedups [P] of every method on `env`'s programs."""
    key = jax.random.PRNGKey(seed)
    k1, k2, k3 = jax.random.split(key, 3)
    out = {"no schedule": np.zeros(env.n_programs),
           "heuristic": np.asarray(jax.jit(lambda kk: best_of(env, heuristic_policy(env), 1, kk))(k1)),
           f"random search (best of {k})": np.asarray(jax.jit(lambda kk: best_of(env, random_policy, k, kk))(k2))}
    if network is not None:
        out["policy (greedy)"] = np.asarray(jax.jit(
            lambda p, kk: best_of(env, network_policy(network, p, True), 1, kk))(params, k3))
        out[f"policy (best of {k} samples)"] = np.asarray(jax.jit(
            lambda p, kk: best_of(env, network_policy(network, p, False), k, kk))(params, k3))
    return out


def geomean_speedups(log10: dict[str, np.ndarray]) -> dict[str, float]:
    """Geometric-mean speedup (×) per method from per-program log10 speedups."""
    return {name: float(10 ** np.mean(v)) for name, v in log10.items()}


def evaluate_gymnax(env: Env, network: Any, params: Any, n_episodes: int = 32, max_steps: int = 500,
                    seed: int = 0) -> float:
    """Mean return of `n_episodes` greedy episodes (each counted until its first done)."""

    def run(key):
        obs, s = jax.vmap(env.reset)(jax.random.split(key, n_episodes))

        def body(c, k):
            obs, s, alive, ret = c
            logits, _ = network.apply(params, obs)
            o, s, r, term, trunc, _ = jax.vmap(env.step)(jax.random.split(k, n_episodes), s,
                                                        dist.mode(logits, obs["mask"]))
            return (o, s, alive & ~(term | trunc), ret + r * alive), None

        init = (obs, s, jnp.ones(n_episodes, bool), jnp.zeros(n_episodes))
        (_, _, _, ret), _ = jax.lax.scan(body, init, jax.random.split(key, max_steps))
        return ret.mean()

    return float(jax.jit(run)(jax.random.PRNGKey(seed)))
