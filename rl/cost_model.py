"""Analytic cost model of a scheduled (tiled, interchanged, parallelised, vectorised) loop nest. Pure JAX.

Machine (`Machine` defaults; a 16-core AVX-512 server CPU in the spirit of Zen 4):

| parameter | value | meaning |
|---|---|---|
| cores | 16 | cores available to `forall` (tiled parallelization) |
| freq | 3.0 GHz | core clock |
| scalar_ops_per_cycle | 2 | unvectorised code: ~2 arithmetic ops / cycle (load-port bound) |
| simd_width | 16 | fp32 lanes (AVX-512) |
| vector_pipes | 2 | FMA pipes; a + and a * fuse into one FMA (×2 ops) |
| l1 / l2 / l3 | 32 KiB / 1 MiB per core / 32 MiB shared | capacities (80 % usable) |
| bw_l2 / bw_l3 | 64 / 32 B/cycle per core | refill bandwidth into L1 / into L2 |
| bw_dram | 30 GB/s one core, 80 GB/s all cores | refill bandwidth into L3 |
| line | 64 B | cache-line granularity on a tensor's innermost dim |
| tile_overhead | 30 cycles | per tile-loop iteration (loop/pointer setup) |
| fork_overhead | 5 µs | per parallel region |

Model (for one op; a program's time is the sum over its ops):
* Loop order: outer *tile* loops (trip ⌈N/T⌉; parallelised ones hoisted outermost), then *point* loops
  (trip T), both in the op's permutation order. Schedules only use tile sizes dividing the bound, so the
  iteration count and the FLOP count never change.
* Footprint of tensor t for the sub-nest starting at position k: per dim, `Σ_j |coef| (E_j − 1) + 1`
  where E_j is loop j's extent inside the sub-nest; bytes = product of outer dims × innermost dim rounded
  up to 64-byte lines.
* Traffic into a cache of capacity C: take the outermost sub-nest whose total footprint fits in C; each
  tensor moves its footprint once per outer iteration, divided by the trip counts of the consecutive
  enclosing loops that do not index it (reuse that LRU keeps because the sub-nest fits). Stores count ×2
  (read for ownership + write back).
* Compute: iterations × weighted ops (/ costs 4, exp 8) at the scalar rate, or when vectorised at
  `simd_width · vector_pipes · (2 if FMA)` ops/cycle × lane use `min(W, T_inner)/W` × 0.25 if any tensor is
  strided (gather) along the innermost loop × 0.7 if the innermost loop is a reduction.
* Parallel: M = product of the parallelised tile loops' trips, effective cores e = M / ⌈M/cores⌉; compute
  and private-cache bandwidth scale by e, L3 capacity is shared, DRAM bandwidth saturates at 80 GB/s.
* time = max(compute, L2→L1, L3→L2, DRAM→L3 transfer times) + tile-loop and fork overheads (roofline).

Limits: no instruction-level detail (latencies, register pressure, unrolling, prefetch), no TLB or
associativity conflicts, one tiling level, no fusion between ops (a producer's output is re-read from
memory), perfect overlap of compute and memory, and reuse across parallel tiles in shared L3 is ignored.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from .programs import MAX_DIMS, MAX_LOOPS

Array = jax.Array
ARITH_WEIGHTS = (1.0, 1.0, 1.0, 4.0, 8.0)  # + - * / exp


@dataclasses.dataclass(frozen=True)
class Machine:
    """Machine parameters of the cost model (see the module docstring's table)."""

    cores: int = 16
    freq: float = 3.0e9
    scalar_ops_per_cycle: float = 2.0
    simd_width: int = 16
    vector_pipes: int = 2
    l1: float = 32 * 1024.0
    l2: float = 1024 * 1024.0
    l3: float = 32 * 1024 * 1024.0
    usable: float = 0.8
    bw_l2: float = 64.0 * 3.0e9
    bw_l3: float = 32.0 * 3.0e9
    bw_dram_core: float = 30e9
    bw_dram_total: float = 80e9
    line: int = 64
    elem_bytes: int = 4
    tile_overhead_cycles: float = 30.0
    fork_overhead: float = 5e-6

    @classmethod
    def from_json(cls, path: str) -> "Machine":
        """Machine constants from a JSON object (e.g. `python -m rl.mlir.validate`'s calibrated fit)."""
        import json

        with open(path) as f:
            d = json.load(f)
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"{path}: unknown Machine field(s) {unknown}")
        return cls(**d)


class OpCost(NamedTuple):
    """Breakdown of the modelled cost of one scheduled op (all scalars)."""

    time: Array          # seconds
    compute_time: Array
    mem_times: Array     # [3] L2→L1, L3→L2, DRAM→L3 seconds
    traffic: Array       # [3] bytes into L1, L2, L3
    flops: Array         # iterations × Σ arith (schedule-invariant)
    iterations: Array    # Σ over tiles of points (schedule-invariant for divisor tiles)


def _extents(bounds: Array, tile: Array, tile_pos: Array, point_pos: Array) -> Array:
    """E[k, j]: extent of loop j inside the sub-nest starting at nest position k (k = 0..2L). → [2L+1, L]."""
    k = jnp.arange(2 * MAX_LOOPS + 1)[:, None]
    trips = bounds // tile
    in_tile = tile_pos[None, :] >= k
    in_point = point_pos[None, :] >= k
    return jnp.where(in_point, tile * jnp.where(in_tile, trips, 1), 1)


def footprints(coef: Array, tensor_valid: Array, extents: Array, m: Machine = Machine()) -> Array:
    """Bytes touched per tensor for each loop-extent row: coef [T,D,L], extents [K,L] → [K, T]."""
    ext = jnp.einsum("tdl,kl->ktd", jnp.abs(coef), extents - 1) + 1           # [K, T, D]
    per_line = m.line // m.elem_bytes
    last = jnp.ceil(ext[..., -1] / per_line) * m.line
    return jnp.prod(ext[..., :-1], axis=-1).astype(jnp.float32) * last * tensor_valid


def _traffic(fp: Array, trips: Array, indep: Array, capacity: Array, store_factor: Array) -> Array:
    """Bytes moved into a cache of `capacity`: fp [K,T] footprints, trips [2L], indep [2L,T] → scalar."""
    fits = fp.sum(-1) <= capacity
    kstar = jnp.argmax(fits)                                   # first (outermost) fitting sub-nest
    pos = jnp.arange(trips.shape[0])
    outer = pos < kstar
    outer_iters = jnp.prod(jnp.where(outer, trips, 1).astype(jnp.float32))
    a = jnp.where(outer[:, None], indep, True)
    run = jnp.cumprod(a[::-1], axis=0)[::-1].astype(bool) & outer[:, None]  # consecutive non-indexing loops
    reuse = jnp.prod(jnp.where(run, trips[:, None], 1).astype(jnp.float32), axis=0)
    return jnp.sum(fp[kstar] * outer_iters / reuse * store_factor)


def loop_order(bounds: Array, is_reduction: Array, tile: Array, parallel: Array, perm: Array) -> tuple[Array, Array]:
    """Tile-loop order (parallelised tiled loops hoisted) and point-loop order, each [L] loop ids."""
    hoist = parallel & ~is_reduction[perm] & (tile[perm] < bounds[perm])
    tile_order = perm[jnp.argsort(jnp.where(hoist, 0, 1), stable=True)]
    return tile_order, perm


def parallel_cores(bounds: Array, is_reduction: Array, tile: Array, parallel: Array, m: Machine = Machine()) -> Array:
    """Effective cores e = M / ⌈M / cores⌉ where M = product of the parallelised tile-loop trips."""
    trips = jnp.where(~is_reduction & parallel, bounds // tile, 1)
    par = jnp.prod(trips.astype(jnp.float32))
    return par / jnp.ceil(par / m.cores)


def op_cost(bounds: Array, is_reduction: Array, coef: Array, tensor_valid: Array, arith: Array,
            tile: Array, parallel: Array, perm: Array, vectorize: Array, m: Machine = Machine()) -> OpCost:
    """Modelled cost of one op under a schedule.

    bounds [L] int, is_reduction [L] bool, coef [T,D,L] int, tensor_valid [T] bool, arith [5] int,
    tile [L] int (tile extent; == bound when untiled), parallel bool, perm [L] loop ids outer→inner,
    vectorize bool.
    """
    bounds = bounds.astype(jnp.int32)
    tile_order, point_order = loop_order(bounds, is_reduction, tile, parallel, perm)
    tile_pos = jnp.argsort(tile_order)
    point_pos = jnp.argsort(point_order) + MAX_LOOPS
    trips = jnp.concatenate([(bounds // tile)[tile_order], tile[point_order]]).astype(jnp.float32)
    var = jnp.concatenate([tile_order, point_order])
    fp = footprints(coef, tensor_valid, _extents(bounds, tile, tile_pos, point_pos), m)
    indep = jnp.all(coef[:, :, var] == 0, axis=1).T | (trips[:, None] == 1)    # [2L, T]
    store = jnp.where(jnp.arange(coef.shape[0]) == coef.shape[0] - 1, 2.0, 1.0)

    e = jnp.where(parallel, parallel_cores(bounds, is_reduction, tile, parallel, m), 1.0)
    caps = jnp.stack([m.l1, m.l2, m.l3 / e]) * m.usable
    traffic = jnp.stack([_traffic(fp, trips, indep, c, store) for c in caps])
    bw = jnp.stack([e * m.bw_l2, e * m.bw_l3, jnp.minimum(e * m.bw_dram_core, m.bw_dram_total)])
    mem_times = traffic / bw

    iterations = jnp.prod(trips)
    flops = jnp.prod(bounds.astype(jnp.float32)) * jnp.sum(arith)
    work = iterations * jnp.sum(arith * jnp.asarray(ARITH_WEIGHTS))
    inner = perm[-1]
    dims = jnp.einsum("tdl,l->td", jnp.abs(coef), bounds - 1) + 1                # [T, D] tensor dim sizes
    strides = jnp.cumprod(jnp.concatenate([dims[:, 1:], jnp.ones_like(dims[:, :1])], 1)[:, ::-1], 1)[:, ::-1]
    inner_stride = jnp.sum(coef[:, :, inner] * strides, axis=1)                   # [T] elements
    contiguous = jnp.all((inner_stride <= 1) | ~tensor_valid)
    fma = 1.0 + ((arith[0] > 0) & (arith[2] > 0))
    lanes = jnp.minimum(m.simd_width, tile[inner]) / m.simd_width
    vec_eff = lanes * jnp.where(contiguous, 1.0, 0.25) * jnp.where(is_reduction[inner], 0.7, 1.0)
    vec_rate = m.simd_width * m.vector_pipes * fma * vec_eff
    rate = jnp.where(vectorize, jnp.maximum(vec_rate, m.scalar_ops_per_cycle), m.scalar_ops_per_cycle)
    compute_time = work / (rate * m.freq * e)

    n_tiles = jnp.prod((bounds // tile).astype(jnp.float32))
    overhead = jnp.where(n_tiles > 1, n_tiles * m.tile_overhead_cycles / (m.freq * e), 0.0)
    overhead = overhead + jnp.where(parallel & (e > 1), m.fork_overhead, 0.0)
    time = jnp.maximum(compute_time, jnp.max(mem_times)) + overhead
    return OpCost(time, compute_time, mem_times, traffic, flops, iterations)


def default_perm(n_loops: Array) -> Array:
    """Original loop order with padded loops (ids ≥ n_loops) placed outermost: [L]."""
    idx = jnp.arange(MAX_LOOPS)
    return (idx + n_loops) % MAX_LOOPS


__all__ = ["Machine", "OpCost", "op_cost", "footprints", "loop_order", "parallel_cores", "default_perm",
           "MAX_DIMS"]
