"""Env schedules → IREE CPU lowering configs and tuning specs (the meaning of the env's actions in MLIR).

| env action | MLIR-RL | emitted MLIR / IREE lowering config (levels of `DoubleTilingExpert`) |
|---|---|---|
| T (tile sizes t_l) | T | `cache_parallel[l] = t_l` (parallel loops), `cache_reduction[l] = t_l` (reduction loops): sequential `scf.for` tile loops inside one workgroup; `distribution` stays 0 (one thread) |
| TP (tile sizes t_l) | TP | `distribution[l] = t_l` on parallel loops (workgroups = `scf.forall` tiles run by IREE's thread pool), `cache_reduction[l] = t_l` on reduction loops |
| I (loop j innermost) | I | the `linalg.generic` is emitted with its iteration dims in the op's loop order (`transform.structured.interchange`), only the order of parallel loops is kept — reduction loops stay innermost in their original order, as IREE re-orders them anyway; every config list follows that order |
| V | V | `vector_common_parallel` / `vector_reduction` = the tile extents (the whole tile, ≤ 512 elements, becomes one vector op); without V both are 1 (scalar code) |
| TF | TF | the op is emitted in its producer's function, reading the producer's result: IREE forms one dispatch, the producer's config (matched as the generic whose innermost loop is a reduction) tiles both, the consumer fused into the producer's tile loops (its own tiles unused) |
| NT | — | nothing |

An untiled loop gets 0 at the tiling levels; an untiled op is one workgroup. "No schedule" is therefore
scalar loops in the original order on one thread (MLIR-RL's unoptimised baseline); "IREE default" passes no
config at all. The config reaches codegen through a tuning spec (`--iree-codegen-tuning-spec-path`, a
transform library whose `@main` matches the dispatch's `linalg.generic` and annotates `compilation_info`),
which, unlike `compilation_info` written into the input, is not dropped for convolutions.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..env import TILE_SIZES, SchedState
from ..programs import ProgramTable
from .emit import OpSpec

TILING_LEVELS = ("distribution", "cache_parallel", "cache_reduction")
LEVELS = TILING_LEVELS + ("vector_common_parallel", "vector_reduction")


@dataclasses.dataclass(frozen=True)
class OpSchedule:
    """Schedule of one op in the env's terms: tile extent per loop (== bound when untiled), flags, loop order."""

    tiles: tuple[int, ...]
    parallel: bool = False
    vectorize: bool = False
    perm: tuple[int, ...] | None = None    # env loop ids outer → inner; None = original order
    fused: bool = False                    # TF: runs inside the producer's tiles (its own tiles are unused)

    def key(self) -> str:
        perm = "" if self.perm is None else "p" + ".".join(map(str, self.perm))
        flags = ("P" if self.parallel else "") + ("V" if self.vectorize else "") + ("F" if self.fused else "")
        return f"t{'.'.join(map(str, self.tiles))}{flags}{perm}"


class NotRepresentable(ValueError):
    """The schedule has no lowering config IREE can take for this op (an illegal action when measured)."""


def unscheduled(spec: OpSpec) -> OpSchedule:
    """The untransformed op (no tiling, scalar, original order)."""
    return OpSchedule(spec.env_bounds)


def emitted_perm(spec: OpSpec, sched: OpSchedule) -> tuple[int, ...]:
    """Loop order of the emitted generic as emitted-loop ids: the parallel loops in the schedule's order,
    then the reduction loops in their original order (IREE's dispatch formation moves reductions innermost
    and puts a convolution's window/channel reductions back in canonical order, measured: the requested
    order would not reach codegen); an added batch loop stays outermost."""
    env_perm = range(len(sched.tiles)) if sched.perm is None else sched.perm
    idx = {e: i for i, e in enumerate(spec.env_loops)}
    order = [idx[e] for e in env_perm if e in idx]
    order = [j for j in order if not spec.reduction[j]] + [j for j in range(spec.n_loops) if spec.reduction[j]]
    return ((0,) if spec.batch_loop else ()) + tuple(order)


def _collapse(spec: OpSpec, cfg: dict[str, list[int]], perm: tuple[int, ...]) -> dict[str, list[int]]:
    """Levels for IREE's collapsed form of the op: a group of merged loops takes one tile, which must be a
    contiguous chunk of the group (outer loops of the group at 1, inner ones whole)."""
    groups = [g for g in spec.collapse_groups() if len(g) > 1]
    if not groups:
        return cfg
    if perm != tuple(range(spec.n_loops)):
        raise NotRepresentable(f"{spec.name}: IREE merges loops {groups}; loop order {perm} cannot be kept")
    out = {}
    for level, tiles in cfg.items():
        new = []
        for g in spec.collapse_groups():
            ext = [tiles[j] or spec.bounds[j] for j in g]
            full = [spec.bounds[j] for j in g]
            s = next((i for i, e in enumerate(ext) if e != 1), len(g) - 1)
            if any(e != b for e, b in zip(ext[s + 1:], full[s + 1:])):
                raise NotRepresentable(f"{spec.name}: IREE merges loops {g}; {level} tile {ext} of {full} "
                                       "is not a contiguous chunk")
            size, whole = int(np.prod(ext)), int(np.prod(full))
            untiled = all(tiles[j] == 0 for j in g) or (size == whole and level in TILING_LEVELS)
            new.append(0 if untiled else size)
        out[level] = new
    return out


def lowering_config(spec: OpSpec, sched: OpSchedule) -> dict[str, list[int]]:
    """Tile sizes per `DoubleTilingExpert` level in the loop order codegen sees (levels that are all 0 omitted).

    Raises `NotRepresentable` when IREE's form of the op cannot carry the schedule."""
    if len(sched.tiles) != len(spec.env_bounds):
        raise ValueError(f"{spec.name}: schedule has {len(sched.tiles)} tile sizes, op has "
                         f"{len(spec.env_bounds)} loops")
    tiles = [1 if e < 0 else sched.tiles[e] for e in spec.env_loops]
    cfg = {lvl: [0] * spec.n_loops for lvl in LEVELS}
    perm = emitted_perm(spec, sched)
    for pos, j in enumerate(perm):
        t, b, red = tiles[j], spec.bounds[j], spec.reduction[j]
        if t < b:
            level = "cache_reduction" if red else ("distribution" if sched.parallel else "cache_parallel")
            cfg[level][pos] = t
        vec = t if sched.vectorize else 1
        cfg["vector_reduction" if red else "vector_common_parallel"][pos] = vec
    keep = {"distribution", "vector_common_parallel"} | ({"vector_reduction"} if any(spec.reduction) else set())
    cfg = {k: v for k, v in cfg.items() if k in keep or any(v)}
    return _collapse(spec, cfg, perm)


def config_attr(cfg: dict[str, list[int]], pipeline: str = "DoubleTilingExpert") -> str:
    """`#iree_codegen.compilation_info` of the lowering-config levels `cfg` on codegen pipeline `pipeline`."""
    body = ", ".join(f"{k} = [{', '.join(map(str, v))}]" for k, v in cfg.items())
    return (f"#iree_codegen.compilation_info<lowering_config = #iree_cpu.lowering_config<{body}>, "
            f"translation_info = #iree_codegen.translation_info<pipeline = #iree_cpu.pipeline<{pipeline}>>>")


def tuning_spec(cfg: dict[str, list[int]], root_only: bool = False) -> str:
    """Transform library for `--iree-codegen-tuning-spec-path` putting `cfg` on the dispatch's generic op
    (`root_only`: only on a generic whose innermost loop is a reduction, the root of a fused dispatch)."""
    root = ("""  transform.match.structured %op : !transform.any_op {
  ^bb0(%s: !transform.any_op):
    transform.match.structured.dim %s[-1] reduction : !transform.any_op
    transform.match.structured.yield
  }
""" if root_only else "")
    return f"""module @rl_schedule attributes {{ transform.with_named_sequence }} {{
transform.named_sequence @apply_op_config(%op: !transform.any_op {{transform.readonly}},
                                          %config: !transform.any_param {{transform.readonly}}) {{
  transform.annotate %op "compilation_info" = %config : !transform.any_op, !transform.any_param
  transform.yield
}}
transform.named_sequence @match_op(%op: !transform.any_op {{transform.readonly}})
    -> (!transform.any_op, !transform.any_param) {{
  transform.match.operation_name %op ["linalg.generic"] : !transform.any_op
{root}  %config = transform.param.constant {config_attr(cfg)} -> !transform.any_param
  transform.yield %op, %config : !transform.any_op, !transform.any_param
}}
transform.named_sequence @main(%variant_op: !transform.any_op {{transform.consumed}}) -> (!transform.any_op)
    attributes {{ iree_codegen.tuning_spec_entrypoint }} {{
  %res = transform.foreach_match in %variant_op @match_op -> @apply_op_config
    : (!transform.any_op) -> !transform.any_op
  transform.yield %res : !transform.any_op
}}
}}
"""


def from_env_state(table: ProgramTable, state: SchedState) -> list[OpSchedule]:
    """Per-op schedules of one (unbatched) env state `state` on `table`."""
    p = int(state.prog)
    out = []
    for k in range(table.op_valid.shape[1]):
        if not table.op_valid[p, k]:
            continue
        n = int(table.n_loops[p, k])
        sizes = np.asarray(TILE_SIZES)[np.asarray(state.tile_choice)[k, :n]]
        tiles = tuple(int(b) if s == 0 else int(s) for s, b in zip(sizes, table.bounds[p, k, :n]))
        perm = tuple(int(j) for j in np.asarray(state.perm)[k] if j < n)
        out.append(OpSchedule(tiles, bool(state.parallel[k]), bool(state.vectorized[k]),
                              None if perm == tuple(range(n)) else perm, bool(np.asarray(state.fused)[k])))
    return out
