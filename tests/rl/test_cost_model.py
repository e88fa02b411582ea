"""Cost-model invariants: FLOPs/iterations never change; cache-fitting tiles lower traffic; roofline sanity."""

import jax.numpy as jnp
import numpy as np
import pytest

from rl import programs as P
from rl.cost_model import default_perm, op_cost


def cost(op, tile=None, par=False, perm=None, vec=False):
    b = jnp.asarray(op.bounds)
    return op_cost(b, jnp.asarray(op.is_reduction), jnp.asarray(op.coef), jnp.asarray(op.tensor_valid),
                   jnp.asarray(op.arith), b if tile is None else jnp.asarray(tile), jnp.asarray(par),
                   default_perm(op.n_loops) if perm is None else jnp.asarray(perm), jnp.asarray(vec))


OPS = [P.matmul(256, 768, 768), P.batch_matmul(24, 128, 128, 64, True), P.conv2d(28, 28, 128, 3, 3, 128),
       P.pooling(28, 28, 64, 3, 2), P.elementwise(512, 768, "bias_gelu"), P.reduction(1536, 128, True)]


@pytest.mark.parametrize("op", OPS, ids=lambda o: P.OP_TYPES[o.op_type])
def test_schedule_never_changes_flops(op):
    rng = np.random.default_rng(0)
    base = cost(op)
    for _ in range(5):
        tile = np.array([rng.choice([d for d in (1, 2, 4, 8, 16, 32, 64, b) if b % d == 0]) for b in op.bounds])
        perm = np.concatenate([np.arange(op.n_loops, P.MAX_LOOPS), rng.permutation(op.n_loops)])
        c = cost(op, tile, bool(rng.integers(2)), perm, bool(rng.integers(2)))
        assert float(c.flops) == float(base.flops)
        assert float(c.iterations) == float(np.prod(op.bounds))
        assert np.isfinite(float(c.time)) and float(c.time) > 0


def test_tiling_that_fits_cache_lowers_traffic():
    op = P.matmul(512, 512, 512)   # 3 MiB of operands: far beyond L1/L2
    base, tiled = cost(op), cost(op, [32, 32, 32, 1, 1, 1])
    assert np.all(np.asarray(tiled.traffic)[:2] < np.asarray(base.traffic)[:2])
    assert float(tiled.time) < float(base.time)


def test_roofline_speedups():
    mm = P.matmul(512, 768, 768)
    best = cost(mm, [32, 16, 4, 1, 1, 1], True, [3, 4, 5, 0, 2, 1], True)
    assert float(cost(mm).time / best.time) >= 10           # compute-bound: tiling+parallel+vector pays
    ew = P.elementwise(512, 768)
    ew_best = cost(ew, [32, 768, 1, 1, 1, 1], True, None, True)
    assert float(cost(ew).time / ew_best.time) < 4          # memory-bound: little to gain
