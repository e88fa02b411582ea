"""(op, schedule) → a flat feature vector (trees, MLP) and → tokens for DistilBERT (the cost model).

A record (the dataset's schema, or `candidate_record` for a schedule not measured yet) is described by
fixed-position features, all log2 sizes or flags:

* refine space (`rl.mlir.refine`): op kind one-hot, mode one-hot (keep / data-tiling / config); for each of
  the innermost `N_SLOTS` config dims: present, reduction, bound, IREE's default and the schedule's
  effective workgroup tile (`distribution`), register tile (`vector_common_parallel`), `vector_reduction`
  and `cache_reduction`, workgroups along the dim; then totals: iterations, dims, refinable, data tiling
  available, workgroups, workgroup elements, register-tile and vector elements (default and effective),
  which levels the schedule changes.
* scalar space (`rl.mlir.schedule.OpSchedule`): op kind one-hot; per env loop slot: present, reduction,
  bound, tile, tile loop trips, position in the loop order; parallel / vectorize / fused flags.

Tokens: `[CLS] f_1 … f_F [SEP]` with `rl.networks.bucketize` — the feature tokenizer of the MLIR-RL
DistilBERT embedding (`DistilBertEmbedding(mode="tokenize")`): each feature is its own token, its id unique
per (feature, bucket). Features are scaled to [0, 5) and passed through expm1 first, so bucketize's signed
log1p is the identity on them and its buckets are linear in log2 size (4 buckets per doubling with 128
buckets): tile 16 and tile 32 never share a token.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..mlir import refine as R
from ..mlir.refine_env import KINDS
from ..networks import CLS, N_SPECIAL, SEP, bucketize

N_SLOTS = 4                    # refine: innermost config dims described
N_LOOPS = 6                    # scalar: env loop slots described
MODES = ("keep", "data-tiling", "config")
LEVELS = ("distribution", "vector_common_parallel", "vector_reduction", "cache_reduction")
SCALE = 4.0                    # token value = log2 size / SCALE (sizes up to 2^20 fit below 5)
N_BUCKETS = 128
SPACES = ("refine", "scalar")


def _l2(x: float) -> float:
    return math.log2(1.0 + max(float(x), 0.0))


def _kind(op_type: str) -> list[float]:
    v = [0.0] * (len(KINDS) + 1)
    v[KINDS.index(op_type) if op_type in KINDS else len(KINDS)] = 1.0
    return v


def default_from(d: dict | R.DefaultConfig) -> R.DefaultConfig:
    """A `refine.DefaultConfig` from its dict form (the record's `default_config`)."""
    if isinstance(d, R.DefaultConfig):
        return d
    try:
        return R.DefaultConfig(str(d.get("pipeline", "?")), dict(d["levels"]), tuple(d["bounds"]),
                               tuple(bool(x) for x in d["reduction"]), bool(d.get("data_tiling", False)),
                               tuple(d.get("operand_types", ())), bool(d.get("cache_reduction_ok", True)))
    except (KeyError, TypeError) as e:
        raise ValueError(f"default_config {d!r} lacks levels / bounds / reduction ({e})") from None


def refinement_from(s: dict | R.Refinement) -> R.Refinement:
    """A `refine.Refinement` from its dict form (the record's `schedule` in the refine space)."""
    if isinstance(s, R.Refinement):
        return s
    mode = s.get("mode", "keep")
    if mode not in MODES:
        raise ValueError(f"refine schedule mode {mode!r} is not one of {MODES}")
    lv = {k: (tuple(int(x) for x in s[k]) if s.get(k) is not None else None) for k in LEVELS}
    return R.Refinement(mode, **lv)


def candidate_record(kind: str, d: R.DefaultConfig, r: R.Refinement) -> dict:
    """The fields of a record that `features` reads, for a refine-space schedule (of an op of `OpSpec.kind`
    `kind`) not measured yet."""
    return {"op_type": kind, "op": {"kind": kind}, "space": "refine", "default_config": dataclasses.asdict(d),
            "schedule": {"mode": r.mode, **{k: getattr(r, k) for k in LEVELS}}}


def refine_features(op_type: str, d: R.DefaultConfig, r: R.Refinement) -> list[float]:
    """Feature vector of a refine-space schedule (see the module docstring)."""
    n = len(d.bounds)
    default = {k: d.level(k) for k in LEVELS}
    eff = {k: list(v) for k, v in default.items()}
    if r.mode == "config":
        for k in LEVELS:
            if getattr(r, k) is not None:
                eff[k] = list(getattr(r, k))
    f = _kind(op_type) + [float(r.mode == m) for m in MODES]
    for slot in range(N_SLOTS):
        dim = n - N_SLOTS + slot
        if dim < 0:
            f += [0.0] * 12
            continue
        b = d.bounds[dim]
        dist = eff["distribution"][dim] or b
        f += [1.0, float(d.reduction[dim]), _l2(b)]
        for k in LEVELS:
            f += [_l2(default[k][dim]), _l2(eff[k][dim])]
        f += [_l2(math.ceil(b / dist) if not d.reduction[dim] else 1)]
    par = d.par_dims
    rd = d.red_dim

    def reg(level: dict) -> tuple[float, float]:
        regs = float(np.prod([max(level["vector_common_parallel"][j], 1) for j in par])) if par else 1.0
        return regs, regs * (max(level["vector_reduction"][rd], 1) if rd is not None else 1)

    wg = [math.ceil(d.bounds[j] / (eff["distribution"][j] or d.bounds[j])) for j in par]
    wg_elems = [(eff["distribution"][j] or d.bounds[j]) for j in par]
    (dr, dv), (er, ev) = reg(default), reg(eff)
    f += [_l2(np.prod(d.bounds)), n / 2, float(d.refinable), float(d.data_tiling), _l2(np.prod(wg)),
          _l2(np.prod(wg_elems)), _l2(dr), _l2(dv), _l2(er), _l2(ev)]
    f += [float(r.mode == "config" and getattr(r, k) is not None) for k in LEVELS]
    return f


def scalar_features(op_type: str, op: dict, s: dict) -> list[float]:
    """Feature vector of a scalar-space schedule (`OpSchedule` fields in `s`; `op` with bounds/reduction)."""
    bounds = list(op.get("env_bounds") or op.get("bounds") or [])
    red = list(op.get("is_reduction") or op.get("reduction") or [False] * len(bounds))
    tiles = list(s.get("tiles") or bounds)
    perm = list(s.get("perm") or range(len(tiles)))
    f = _kind(op_type)
    for j in range(N_LOOPS):
        if j >= len(bounds):
            f += [0.0] * 6
            continue
        t = tiles[j] if j < len(tiles) else bounds[j]
        f += [1.0, float(bool(red[j])) if j < len(red) else 0.0, _l2(bounds[j]), _l2(t),
              _l2(bounds[j] // max(t, 1)), (perm.index(j) if j in perm else j) / 2]
    f += [float(bool(s.get(k))) for k in ("parallel", "vectorize", "fused")]
    f += [_l2(np.prod(bounds) if bounds else 1)]
    return f


def op_kind(record: dict) -> str:
    """The op's `OpSpec.kind` (bias_gelu, exp_sum, …: the record's `op.kind`) where the record has it, else
    its `op_type`."""
    return (record.get("op") or {}).get("kind") or record["op_type"]


def features(record: dict) -> np.ndarray:
    """[F] float32 features of a record (F depends on its space only)."""
    if record["space"] == "refine":
        f = refine_features(op_kind(record), default_from(record["default_config"]),
                            refinement_from(record["schedule"]))
    elif record["space"] == "scalar":
        f = scalar_features(op_kind(record), record.get("op") or {}, record["schedule"])
    else:
        raise ValueError(f"unknown space {record['space']!r}; expected one of {SPACES}")
    return np.asarray(f, np.float32)


def n_features(space: str) -> int:
    """F for `space`."""
    if space == "refine":
        return len(KINDS) + 1 + len(MODES) + 12 * N_SLOTS + 10 + len(LEVELS)
    if space == "scalar":
        return len(KINDS) + 1 + 6 * N_LOOPS + 4
    raise ValueError(f"unknown space {space!r}; expected one of {SPACES}")


def vocab_size(space: str, n_buckets: int = N_BUCKETS) -> int:
    return N_SPECIAL + n_features(space) * n_buckets


def tokens(f: np.ndarray, n_buckets: int = N_BUCKETS) -> np.ndarray:
    """`[CLS] f_1 … f_F [SEP]` ids [..., F + 2] of features [..., F] (see the module docstring)."""
    f = np.asarray(f, np.float32)
    v = np.expm1(np.clip(f / SCALE, 0.0, 4.999))
    ids = np.asarray(bucketize(v, n_buckets))
    lead = f.shape[:-1] + (1,)
    return np.concatenate([np.full(lead, CLS, np.int32), ids.astype(np.int32), np.full(lead, SEP, np.int32)], -1)


def feature_matrix(records) -> np.ndarray:
    """[N, F] features of records of one space."""
    return np.stack([features(r) for r in records])


def encode(records, n_buckets: int = N_BUCKETS) -> np.ndarray:
    """Token ids [N, F + 2] of records of one space."""
    return tokens(feature_matrix(records), n_buckets)


__all__ = ["N_BUCKETS", "SPACES", "candidate_record", "default_from", "encode", "feature_matrix", "features", "n_features",
           "refinement_from", "tokens", "vocab_size"]
