"""Scheduling env: masks never empty, illegal actions masked, episodes end with the log speedup."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rl import env as E
from rl.envs import sched_env


@pytest.fixture(scope="module")
def senv():
    return sched_env()[1]


def test_reset_obs_shapes_and_masks(senv):
    obs, s = jax.vmap(senv.reset)(jax.random.split(jax.random.PRNGKey(0), 8))
    assert obs["consumer"].shape == (8, E.N_OP_FEATURES) and obs["history"].shape == (8, E.N_HISTORY)
    assert obs["mask"].shape == (8, E.N_HEADS, E.A_MAX)
    assert bool(jnp.all(obs["mask"].any(-1)))                 # never a fully masked row


def test_tile_mask_only_divisors(senv):
    obs, s = senv.reset_to(0)
    bounds = np.asarray(senv.table.bounds[0, 0])
    tiles = np.asarray(obs["mask"][1:1 + E.L, :E.N_TILE])
    for j, b in enumerate(bounds):
        for c, size in enumerate(E.TILE_SIZES[1:], start=1):
            assert tiles[j, c] == (b % size == 0 and size < b)


def test_random_masked_episodes(senv):
    step = jax.jit(senv.step_env)
    key = jax.random.PRNGKey(1)
    for prog in range(0, senv.n_programs, 5):
        obs, s = senv.reset_to(prog)
        for t in range(E.MAX_OPS * E.MAX_STEPS_OP):
            key, k = jax.random.split(key)
            mask = obs["mask"]
            assert bool(mask.any(-1).all())
            a = jax.random.categorical(k, jnp.where(mask, 0.0, -1e9))
            obs, s, r, term, _ = step(s, a)
            if bool(term):
                assert np.isfinite(float(r))
                break
            assert float(r) == 0.0
        assert bool(term)
        if bool(s.tiled.any()):
            pass


def test_type_mask_follows_order_table(senv):
    obs, s = senv.reset_to(0)
    a = jnp.zeros(E.N_HEADS, jnp.int32).at[0].set(E.TP).at[1:4].set(jnp.array([6, 6, 4]))
    obs, s, *_ = senv.step_env(s, a)
    mask = np.asarray(obs["mask"][0])
    assert not mask[E.T] and not mask[E.TP] and mask[E.NT]   # tiled once: no second tiling
    assert bool(s.parallel[0]) and not bool(s.tiled[1])
