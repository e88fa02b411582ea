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


def test_tiled_fusion_action(senv):
    """TF is legal only on an elementwise consumer of a reduction op in the same layout; it removes the
    consumer's memory traffic in the model and ends the op."""
    fus = E.fusable(senv.table)
    names = list(senv.table.names)
    assert fus[names.index("bert_ffn1_b1s128"), 1] and not fus[names.index("bert_scores_b1s128"), 1]
    assert not fus[:, 0].any() and not fus[names.index("bert_ffn2_b1s128"), 2]    # residual after bias_add
    p = names.index("bert_ffn1_b1s128")
    obs, s = senv.reset_to(p)
    assert not bool(obs["mask"][0, E.TF])                             # first op: nothing to fuse into
    tp = np.zeros(E.N_HEADS, np.int32)
    tp[0], tp[1:3] = E.TP, [3, 4]                                      # TP i→4, j→8
    obs, s, *_ = senv.step_env(s, jnp.asarray(tp))
    obs, s, *_ = senv.step_env(s, jnp.asarray(np.eye(E.N_HEADS, dtype=np.int32)[0] * E.NT))
    assert bool(obs["mask"][0, E.TF])
    _, fused, r_fused, term_f, _ = senv.step_env(s, jnp.asarray(np.eye(E.N_HEADS, dtype=np.int32)[0] * E.TF))
    _, plain, r_plain, term_p, _ = senv.step_env(s, jnp.asarray(np.eye(E.N_HEADS, dtype=np.int32)[0] * E.NT))
    assert bool(term_f) and bool(term_p) and bool(fused.fused[1]) and not bool(plain.fused[1])
    assert float(r_fused) > float(r_plain)


def test_vectorize_mask_uses_the_op_s_own_tile():
    """V is legal when *this op's* tile has ≤ 512 iterations: a 256×768×768 matmul tiled 8×64×1 (512
    elements) may be vectorised, whatever the bounds of the program's other ops (the bias add's 256×768)."""
    from rl.programs import elementwise, matmul, stack_programs

    table = stack_programs([("qkv", [matmul(256, 768, 768), elementwise(256, 768, "bias_add")])])
    env = E.SchedulingEnv(table)
    obs, s = env.reset_to(0)
    tile = [E.TILE_SIZES.index(8), E.TILE_SIZES.index(64), E.TILE_SIZES.index(1)]
    action = np.zeros(E.N_HEADS, np.int32)
    action[0], action[1:4] = E.T, tile
    obs, s, *_ = env.step_env(s, jnp.asarray(action))
    assert bool(obs["mask"][0, E.V])
    # a 16×64×1 tile (1,024 iterations) is not vectorisable
    obs, s = env.reset_to(0)
    action[1] = E.TILE_SIZES.index(16)
    obs, s, *_ = env.step_env(s, jnp.asarray(action))
    assert not bool(obs["mask"][0, E.V])
    # and the legal count on that matmul follows the documented rule (tile product ≤ 512)
    sizes = [t for t in E.TILE_SIZES[1:]]
    legal = sum(1 for a in [0] + sizes for b in [0] + sizes for c in [0] + sizes
                if (a == 0 or 256 % a == 0 and a < 256) and (b == 0 or b < 768) and (c == 0 or c < 768)
                and (a or 256) * (b or 768) * (c or 768) <= E.MAX_VECTOR_ITERS)
    grid = np.stack(np.meshgrid(*[np.arange(E.N_TILE)] * 3, indexing="ij"), -1).reshape(-1, 3)
    actions = np.zeros((len(grid), E.N_HEADS), np.int32)
    actions[:, 0], actions[:, 1:4] = E.T, grid
    s0 = env.reset_to(0)[1]
    obs = jax.jit(jax.vmap(lambda a: env.step_env(s0, a)[0]))(jnp.asarray(actions))
    n_ok = int(obs["mask"][:, 0, E.V].sum())
    assert n_ok == legal and n_ok > 150
