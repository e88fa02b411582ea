"""A schedule space of *refinements of IREE's own config*: the empty schedule is IREE's default.

Per op, IREE's default lowering config is read once from the dumped executable configuration (cached on
disk beside the measurements). A schedule changes it level by level, in the order codegen applies them:

| step | action type | parameters (heads) | what changes |
|---|---|---|---|
| 0 | KEEP | — | nothing: IREE's default (ends the op) |
| 0 | DATA_TILING | — | `--iree-opt-data-tiling --iree-llvmcpu-enable-ukernels=all` (matmul-like ops; ends the op) |
| 0 | DIST | one head per parallel loop slot: keep, ÷4, ÷2, ×2, ×4, whole | `distribution` (workgroup tile) |
| ≤ 1 | RED | `vector_reduction` keep, 1 … 64; `cache_reduction` keep, 64 … 512 | the innermost reduction loop |
| ≤ 2 | VEC | one head per register-tile slot (last two parallel loops): keep, 1 … 64 (ends the op) | `vector_common_parallel` |
| ≥ 1 | DONE | — | ends the op |

Every choice is masked unless it gives a config IREE takes as asked: tiles divide the loop bound (a tile that
does not divide costs ~2×), a register tile divides the workgroup tile, `vector_reduction` ≤ 64 ≤
`cache_reduction` (both powers of two, so one divides the other), and the op's vector (register tile ×
`vector_reduction`) stays within the 16 KiB IREE compiles (it rejects "large vector sizes" from 32 KiB on,
measured) and the register tile within `MAX_REGISTER_TILE` accumulators. The register tile is chosen last,
with per-head caps that keep every combination within budget, so the heads of a step stay independent. Ops whose default pipeline is not `DoubleTilingExpert` (IREE's convolution pipeline for 3×3
convolutions and pooling: a tuning spec there is dropped when IREE rebuilds the batch-less convolution) can
only KEEP. The config is delivered by a tuning spec that matches the op by name and operand types, so one
spec file can carry every op of a program; what codegen used is read back from the dump before a time counts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os

import numpy as np

from distilbert_jax.atomicfile import CorruptFileError, read_checked_json, write_checked_json

from .emit import OpSpec, chain_module
from .schedule import config_attr

log = logging.getLogger("rl.mlir")

KEEP, DATA_TILING, DIST, VEC, RED, DONE = range(6)
TYPE_NAMES = ("keep", "data-tiling", "dist", "vec", "red", "done")
STEP_ORDER = (KEEP, DATA_TILING, DIST, RED, VEC)          # the order an episode's steps come in
N_DIST, N_VEC = 3, 2                       # parallel-loop slots with a workgroup / register tile head
H_DIST, H_VEC, H_VRED, H_CRED = 1, 1 + N_DIST, 1 + N_DIST + N_VEC, 2 + N_DIST + N_VEC
N_HEADS = 3 + N_DIST + N_VEC               # type, dist × 3, vec × 2, vector_reduction, cache_reduction
A_MAX = 8
DIST_FACTORS = (None, 0.25, 0.5, 2.0, 4.0, 0.0)   # keep, ÷4, ÷2, ×2, ×4, whole loop (0; elementwise ops only)
VEC_SIZES = (None, 1, 2, 4, 8, 16, 32, 64)
VRED_SIZES = (None, 1, 2, 4, 8, 16, 32, 64)
CRED_SIZES = (None, 64, 128, 256, 512)
MAX_REGISTER_TILE = 1024                   # parallel register-tile elements (accumulators): 64 zmm × 16 lanes
MAX_VECTOR_ELEMS = 4096                    # register tile × vector_reduction: IREE 3.13 rejects ≥ 32 KiB vectors
ACTIVE_HEADS = np.zeros((6, N_HEADS), bool)
ACTIVE_HEADS[:, 0] = True
ACTIVE_HEADS[DIST, H_DIST:H_DIST + N_DIST] = True
ACTIVE_HEADS[VEC, H_VEC:H_VEC + N_VEC] = True
ACTIVE_HEADS[RED, H_VRED] = ACTIVE_HEADS[RED, H_CRED] = True
DT_FLAGS = ("--iree-opt-data-tiling", "--iree-llvmcpu-enable-ukernels=all")
DT_KINDS = ("matmul", "batch_matmul", "conv2d")


@dataclasses.dataclass(frozen=True)
class DefaultConfig:
    """IREE's own config of an op's root `linalg.generic`, in IREE's (collapsed) loop order."""

    pipeline: str
    levels: dict                        # level name -> [int] (IREE's lowering_config)
    bounds: tuple[int, ...]             # loop bounds as codegen sees them (merged loops multiplied)
    reduction: tuple[bool, ...]
    data_tiling: bool                   # the data-tiling flags turn this op into (batch_)mmt4d
    operand_types: tuple[str, ...] = ()  # the root generic's operand types in the dispatch (after collapsing)
    cache_reduction_ok: bool = True      # see `_cache_reduction_ok`

    @property
    def refinable(self) -> bool:
        return self.pipeline == "DoubleTilingExpert" and len(self.levels.get("distribution", ())) == len(self.bounds)

    def level(self, name: str) -> list[int]:
        return list(self.levels.get(name, [0] * len(self.bounds)))

    @property
    def par_dims(self) -> list[int]:
        return [d for d, r in enumerate(self.reduction) if not r]

    @property
    def red_dim(self) -> int | None:
        red = [d for d, r in enumerate(self.reduction) if r]
        return red[-1] if red else None


def collapsed_loops(spec: OpSpec) -> tuple[tuple[int, ...], tuple[bool, ...]]:
    """(bounds, reduction flags) of the op's loops after IREE merges the groups it collapses."""
    groups = spec.collapse_groups()
    return (tuple(int(np.prod([spec.bounds[j] for j in g])) for g in groups),
            tuple(bool(spec.reduction[g[0]]) for g in groups))


def _cache_reduction_ok(spec: OpSpec) -> bool:
    """IREE 3.13 rejects every `cache_reduction` on a batch matmul whose second operand is [b, k, n] (the
    reduction not innermost; "large vector sizes", measured on the attention-context shapes) — masked."""
    return not (spec.kind == "batch_matmul" and spec.maps[1][-1][0][0] != len(spec.bounds) - 1)


def default_source(spec: OpSpec) -> str:
    """The op as a standalone module in its original loop order with static shapes (what a user compiles)."""
    return chain_module([spec], [None], dynamic_batch=False)


def _cache_path(kind: str, *parts: str) -> str:
    from .measure import cache_dir, device_id

    key = hashlib.sha1(json.dumps([*parts, device_id()]).encode()).hexdigest()
    return os.path.join(cache_dir(), kind, key[:2], key + ".json")


def default_config(spec: OpSpec, use_cache: bool = True) -> DefaultConfig:
    """IREE's default config of `spec` (compiled once, then read from the disk cache)."""
    from .measure import compile_dump, parse_config, parse_operand_types, parse_pipeline

    src = default_source(spec)
    path = _cache_path("defaults-v3", src)
    if use_cache:
        try:
            d = read_checked_json(path)
            return DefaultConfig(d["pipeline"], d["levels"], tuple(d["bounds"]), tuple(d["reduction"]),
                                 d["data_tiling"], tuple(d["operand_types"]), _cache_reduction_ok(spec))
        except FileNotFoundError:
            pass
        except (CorruptFileError, KeyError, TypeError) as e:
            log.warning("default-config cache entry %s cannot be trusted (%s): compiling again", path, e)
    _, text, _ = compile_dump(src)
    levels, pipeline = parse_config(text), parse_pipeline(text)
    bounds, red = collapsed_loops(spec)
    types = parse_operand_types(text) or operand_types(spec)
    cfg = DefaultConfig(pipeline or "?", levels or {}, bounds, red,
                        spec.kind in DT_KINDS and pipeline == "DoubleTilingExpert", tuple(types), _cache_reduction_ok(spec))
    if use_cache:
        write_checked_json(path, dataclasses.asdict(cfg))
    return cfg


# ---- the space: masks and actions -------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Refinement:
    """A schedule in this space: a mode and the levels it sets (None = IREE's value)."""

    mode: str = "keep"                                   # "keep" | "data-tiling" | "config"
    distribution: tuple[int, ...] | None = None
    vector_common_parallel: tuple[int, ...] | None = None
    vector_reduction: tuple[int, ...] | None = None
    cache_reduction: tuple[int, ...] | None = None

    def key(self) -> str:
        if self.mode != "config":
            return self.mode
        parts = [f"{n[0] if n != 'vector_reduction' else 'r'}{'.'.join(map(str, v))}"
                 for n, v in (("distribution", self.distribution), ("vec", self.vector_common_parallel),
                              ("vector_reduction", self.vector_reduction), ("cache", self.cache_reduction))
                 if v is not None]
        return "cfg:" + "_".join(parts)


@dataclasses.dataclass
class OpState:
    """Per-op episode state in plain Python (the jitted env mirrors it in arrays)."""

    dist: list[int]
    vec: list[int]
    vred: list[int]
    cred: list[int]
    done_types: set = dataclasses.field(default_factory=set)


def initial_state(d: DefaultConfig) -> OpState:
    return OpState(d.level("distribution"), d.level("vector_common_parallel"), d.level("vector_reduction"),
                   d.level("cache_reduction"))


def _divides(t: int, n: int) -> bool:
    return t >= 1 and n % t == 0


def dist_slots(d: DefaultConfig) -> list[int]:
    """Config dims with a distribution head (the last N_DIST parallel loops)."""
    return d.par_dims[-N_DIST:]


def vec_slots(d: DefaultConfig) -> list[int]:
    return d.par_dims[-N_VEC:]


def dist_value(d: DefaultConfig, dim: int, choice: int) -> int | None:
    """Workgroup tile of option `choice` on config dim `dim` (None: illegal)."""
    base, bound = d.level("distribution")[dim], d.bounds[dim]
    f = DIST_FACTORS[choice]
    if f is None:
        return base
    if f == 0.0:      # one workgroup along the loop; not for contractions (IREE then forms ≥ 32 KiB vectors)
        return 0 if base != 0 and d.red_dim is None else None
    if base == 0:
        return None
    v = base * f
    if v != int(v) or not _divides(int(v), bound) or int(v) >= bound:
        return None
    return int(v)


def _pow2_ceil(n: int) -> int:
    return 1 << max(int(n) - 1, 0).bit_length()


def vec_caps(d: DefaultConfig, s: OpState) -> list[int]:
    """Largest register tile per vec slot in state `s` such that *any* combination of the slots' options
    (each ≤ its cap, IREE's own value included) keeps the vector within budget."""
    slots = vec_slots(d)
    if not slots:
        return []
    rd = d.red_dim
    others = int(np.prod([max(s.vec[j], 1) for j in d.par_dims if j not in slots]))
    budget = min(MAX_REGISTER_TILE, MAX_VECTOR_ELEMS // max(s.vred[rd] if rd is not None else 1, 1)) // others
    if len(slots) == 1:
        return [max(min(64, budget), s.vec[slots[0]])]
    cap_m = _pow2_ceil(d.level("vector_common_parallel")[slots[0]])
    cap_n = min(64, max(budget // cap_m, 1))
    cap_m = min(16, max(budget // cap_n, 1))
    return [cap_m, cap_n]


def head_masks(d: DefaultConfig, s: OpState) -> np.ndarray:
    """Legal options [N_HEADS, A_MAX] bool in state `s` (row 0: action types). Every row has ≥ 1 entry, and
    every combination of legal options is a config IREE takes (the heads of one step are independent)."""
    m = np.zeros((N_HEADS, A_MAX), bool)
    m[1:, 0] = True                                        # "keep" is always a legal parameter
    ok = d.refinable
    for h, dim in enumerate(dist_slots(d) if ok else []):
        for c in range(1, len(DIST_FACTORS)):
            v = dist_value(d, dim, c)
            m[H_DIST + h, c] = v is not None and _divides(s.vec[dim], v or d.bounds[dim]) \
                and v != d.level("distribution")[dim]
    rd = d.red_dim if ok else None
    if rd is not None:
        bound = d.bounds[rd]
        vec_elems = int(np.prod([_pow2_ceil(max(s.vec[j], 1)) for j in d.par_dims]))
        for c in range(1, len(VRED_SIZES)):
            v = VRED_SIZES[c]
            m[H_VRED, c] = _divides(v, bound) and v != d.level("vector_reduction")[rd] \
                and v * vec_elems <= MAX_VECTOR_ELEMS
        for c in range(1, len(CRED_SIZES)):
            v = CRED_SIZES[c]
            m[H_CRED, c] = d.cache_reduction_ok and _divides(v, bound) and v < bound \
                and v != d.level("cache_reduction")[rd]
    for h, (dim, cap) in enumerate(zip(vec_slots(d), vec_caps(d, s)) if ok else []):
        tile = s.dist[dim] or d.bounds[dim]
        for c in range(1, len(VEC_SIZES)):
            v = VEC_SIZES[c]
            m[H_VEC + h, c] = v <= cap and _divides(v, tile) and v != d.level("vector_common_parallel")[dim]
    first = not s.done_types
    types = np.zeros(A_MAX, bool)
    types[KEEP] = first
    types[DATA_TILING] = first and d.data_tiling
    types[DIST] = first and m[H_DIST:H_DIST + N_DIST, 1:].any()
    types[RED] = not ({RED, VEC} & s.done_types) and m[H_VRED:H_CRED + 1, 1:].any()
    types[VEC] = VEC not in s.done_types and m[H_VEC:H_VEC + N_VEC, 1:].any()
    types[DONE] = not first
    m[0] = types
    return m


def apply(d: DefaultConfig, s: OpState, action: np.ndarray) -> tuple[OpState, bool]:
    """Apply a joint action [N_HEADS] (type, then the parameters of that type) → (new state, op done).
    Choices that `head_masks` would refuse raise `ValueError` (they never reach IREE)."""
    mask = head_masks(d, s)
    t = int(action[0])
    if not mask[0, t]:
        raise ValueError(f"action type {TYPE_NAMES[t] if t < len(TYPE_NAMES) else t} is not legal here")
    for h in np.flatnonzero(ACTIVE_HEADS[t][1:]) + 1:
        if not mask[h, int(action[h])]:
            raise ValueError(f"option {int(action[h])} of head {h} is not legal here")
    s = OpState(list(s.dist), list(s.vec), list(s.vred), list(s.cred), set(s.done_types) | {t})
    if t == DIST:
        for h, dim in enumerate(dist_slots(d)):
            s.dist[dim] = dist_value(d, dim, int(action[H_DIST + h]))
    elif t == VEC:
        for h, dim in enumerate(vec_slots(d)):
            if int(action[H_VEC + h]):
                s.vec[dim] = VEC_SIZES[int(action[H_VEC + h])]
    elif t == RED:
        rd = d.red_dim
        if int(action[H_VRED]):
            s.vred[rd] = VRED_SIZES[int(action[H_VRED])]
        if int(action[H_CRED]):
            s.cred[rd] = CRED_SIZES[int(action[H_CRED])]
    done = t in (KEEP, DATA_TILING, DONE, VEC)
    return s, done


def replay(d: DefaultConfig, types: list[int], choices: np.ndarray) -> OpState:
    """The state after the given action types (in order), each with its parameters from `choices`
    [N_HEADS] (the env's record of the last choice per head); raises `ValueError` if any is illegal."""
    s = initial_state(d)
    for t in types:
        a = np.array(choices, np.int64)
        a[0] = t
        s, _ = apply(d, s, a)
    return s


def to_refinement(d: DefaultConfig, s: OpState) -> Refinement:
    """The schedule an ended episode describes."""
    if DATA_TILING in s.done_types:
        return Refinement("data-tiling")
    if not ({DIST, VEC, RED} & s.done_types):
        return Refinement("keep")
    same = lambda name, v: None if list(v) == d.level(name) else tuple(v)  # noqa: E731
    return Refinement("config", same("distribution", s.dist), same("vector_common_parallel", s.vec),
                      same("vector_reduction", s.vred), same("cache_reduction", s.cred))


def lowering_levels(d: DefaultConfig, r: Refinement) -> dict[str, list[int]]:
    """The full lowering config of a "config" refinement (IREE's levels, with the refined ones replaced)."""
    levels = {k: list(v) for k, v in d.levels.items()}
    for name in ("distribution", "vector_common_parallel", "vector_reduction", "cache_reduction"):
        v = getattr(r, name)
        if v is not None:
            levels[name] = list(v)
    order = ("distribution", "cache_parallel", "cache_reduction", "vector_common_parallel", "vector_reduction")
    return {k: levels[k] for k in order if k in levels and (any(levels[k]) or k in d.levels)}


# ---- delivery: a tuning spec matching each op by its operand types -----------------------------------------
def operand_types(spec: OpSpec) -> list[str]:
    """Static tensor types of the op's operands (loads, then the init) as emitted (IREE may collapse dims:
    `DefaultConfig.operand_types` has the dispatch's)."""
    return ["tensor<" + "x".join(map(str, spec.shape(t))) + "xf32>" for t in range(len(spec.maps))]


def tuning_spec(entries: list[tuple]) -> str:
    """Transform library for `--iree-codegen-tuning-spec-path`: for each (operand types, levels, pipeline[, op
    name]), a matcher that takes an op of that name (default `linalg.generic`) with exactly those operand types
    and annotates the config (IREE's tuner does the same), so one file configures every tuned op of a program
    and leaves the rest alone."""
    matchers, names = [], []
    for i, (types, levels, pipeline, *op_name) in enumerate(entries):
        op = op_name[0] if op_name else "linalg.generic"
        lines = [f"transform.named_sequence @match_{i}(%op: !transform.any_op {{transform.readonly}})",
                 "    -> (!transform.any_op, !transform.any_param) {",
                 f'  transform.match.operation_name %op ["{op}"] : !transform.any_op']
        lines += ["  %n_ops = transform.match.structured failures(propagate) %op : (!transform.any_op) -> !transform.param<i64> {",
                  "  ^bb0(%s: !transform.any_op):",
                  "    %n = transform.match.structured.num_inputs %s : (!transform.any_op) -> !transform.param<i64>",
                  "    transform.match.structured.yield %n : !transform.param<i64>", "  }",
                  f"  %n_want = transform.param.constant {len(types) - 1} : i64 -> !transform.param<i64>",
                  "  transform.match.param.cmpi eq %n_ops, %n_want : !transform.param<i64>"]
        for t, ty in enumerate(types):
            lines += [f"  %v{t} = transform.get_operand %op[{t}] : (!transform.any_op) -> !transform.any_value",
                      f"  transform.iree.match.cast_compatible_type %v{t} = {ty} : !transform.any_value"]
        lines += [f"  %config = transform.param.constant {config_attr(levels, pipeline)} -> !transform.any_param",
                  "  transform.yield %op, %config : !transform.any_op, !transform.any_param", "}"]
        matchers.append("\n".join(lines))
        names.append(f"@match_{i} -> @apply_op_config")
    return f"""module @rl_tuning_spec attributes {{ transform.with_named_sequence }} {{
transform.named_sequence @apply_op_config(%op: !transform.any_op {{transform.readonly}},
                                          %config: !transform.any_param {{transform.readonly}}) {{
  transform.annotate %op "compilation_info" = %config : !transform.any_op, !transform.any_param
  transform.yield
}}
{chr(10).join(matchers)}
transform.named_sequence @__kernel_config(%variant_op: !transform.any_op {{transform.consumed}}) -> (!transform.any_op)
    attributes {{ iree_codegen.tuning_spec_entrypoint }} {{
  %res = transform.foreach_match in %variant_op
      {(','+chr(10)+'      ').join(names)}
    : (!transform.any_op) -> !transform.any_op
  transform.yield %res : !transform.any_op
}}
}}
"""


def measure_refinement(spec: OpSpec, d: DefaultConfig, r: Refinement, repeats: int = 5, use_cache: bool = True,
                       deadline_s: float | None = None, timing: str = "cpu"):
    """Compile, verify (a "config" refinement must reach codegen exactly), check and time `spec` under `r`
    (`timing`: `timer.TIMINGS`; "cpu" by default, robust on a shared machine)."""
    from .measure import measure_source

    label = f"{spec.name} {r.key()}"
    src = default_source(spec)
    spec_text, want, flags = "", None, ()
    if r.mode == "data-tiling":
        flags = DT_FLAGS
    elif r.mode == "config":
        want = lowering_levels(d, r)
        spec_text = tuning_spec([(list(d.operand_types), want, d.pipeline)])
    return measure_source([spec], label, src, spec_text, want, flags, repeats=repeats, use_cache=use_cache,
                          deadline_s=deadline_s, timing=timing)


def random_refinement(d: DefaultConfig, rng: np.random.Generator) -> Refinement:
    """A uniformly random legal episode: each step's type and parameters drawn uniformly from the mask."""
    s, done = initial_state(d), False
    while not done:
        m = head_masks(d, s)
        a = np.array([rng.choice(np.flatnonzero(row)) for row in m])
        s, done = apply(d, s, a)
    return to_refinement(d, s)


def random_configs(d: DefaultConfig, n: int, rng: np.random.Generator, tries: int = 30) -> list[Refinement]:
    """Up to `n` distinct random "config" refinements (uniform episodes, at most `tries`·n draws); keep, data
    tiling and a config equal to IREE's default are left out (they are the default's own candidates)."""
    out: dict[str, Refinement] = {}
    for _ in range(tries * n):
        if len(out) >= n:
            break
        r = random_refinement(d, rng)
        if r.mode == "config" and r.key() != "cfg:":
            out.setdefault(r.key(), r)
    return list(out.values())
