"""Baselines beside the learned cost model: gradient-boosted trees on flat features, and the analytic model.

* `Trees`: scikit-learn's `HistGradientBoostingRegressor` (LightGBM's algorithm) on `features.features`,
  regressing log time (the `costmodel` extra pins scikit-learn).
* `Analytic`: `rl.cost_model.op_cost` (one core: the measurements are single-thread CPU time) of the op
  rebuilt from its program table (`rl.programs` / `rl.mlir.suite`, by the record's program and op index),
  calibrated by a linear map of log times fitted on the training records (a monotone map: it cannot change
  the ranking within an op). What it can express of a refine-space schedule: the workgroup tile
  (`distribution`, spread over the merged loops of a collapsed config dim, innermost first) as a parallel,
  vectorised one-level tiling in the original loop order. Register tiles (`vector_common_parallel`),
  `vector_reduction` / `cache_reduction` and data tiling are invisible to it: schedules that differ only
  there get the same time (a tie, counted half right in pairwise accuracy). Scalar-space schedules map
  one-to-one (tiles, parallel, vectorise, loop order).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from . import features as F


class Trees:
    """Gradient-boosted trees on flat features → log time."""

    def __init__(self, max_iter: int = 300, seed: int = 0):
        from sklearn.ensemble import HistGradientBoostingRegressor

        self.model = HistGradientBoostingRegressor(max_iter=max_iter, learning_rate=0.1, max_leaf_nodes=31,
                                                   random_state=seed)

    def fit(self, records: Sequence[dict]) -> "Trees":
        self.model.fit(F.feature_matrix(records), np.log([r["time_s"] for r in records]))
        return self

    def predict(self, records: Sequence[dict]) -> np.ndarray:
        """Predicted log seconds [N]."""
        return self.model.predict(F.feature_matrix(records))


@functools.lru_cache(maxsize=None)
def split_table(split: str):
    """The program table a record's split names (train / val / test: `rl.mlir.tune.program_table`)."""
    from ..mlir.tune import program_table

    return program_table({"val": "validation"}.get(split, split))


TABLE_FIELDS = ("n_loops", "bounds", "is_reduction", "coef", "tensor_valid", "arith")


@functools.lru_cache(maxsize=None)
def _from_tables(split: str, program: str, op_index: int) -> tuple[dict, tuple, tuple, tuple]:
    from ..mlir.emit import program_specs

    table = split_table(split)
    if program not in table.names:
        raise ValueError(f"program {program!r} is not in the {split} program table and its record carries no "
                         "op table: the analytic model cannot rebuild its ops")
    p = table.names.index(program)
    spec = program_specs(table, p)[op_index]
    arrays = {f: np.asarray(getattr(table, f)[p, op_index]) for f in TABLE_FIELDS}
    return arrays, tuple(spec.collapse_groups()), tuple(spec.bounds), tuple(spec.env_loops)


def op_description(record: dict) -> tuple[dict, tuple, tuple, tuple]:
    """(env-level op arrays `TABLE_FIELDS`, collapse groups, emitted loop bounds, env loop of each emitted loop):
    from the record's `op` (the dataset writes `table`, `collapse_groups`, `bounds`, `env_loops`), else
    rebuilt from the program tables by program name and op index."""
    op = record.get("op") or {}
    if isinstance(op.get("table"), dict) and all(k in op for k in ("collapse_groups", "bounds", "env_loops")):
        arrays = {f: np.asarray(op["table"][f]) for f in TABLE_FIELDS}
        return arrays, tuple(map(tuple, op["collapse_groups"])), tuple(op["bounds"]), tuple(op["env_loops"])
    return _from_tables(record["split"], record["program"], int(record["op_index"]))


def _spread(tile: int, bounds: list[int]) -> list[int]:
    """A tile of a merged loop (product of `bounds`, outer first) as per-loop tiles: inner loops whole first."""
    out, rest = [1] * len(bounds), tile
    for j in reversed(range(len(bounds))):
        if rest >= bounds[j] and rest % bounds[j] == 0:
            out[j], rest = bounds[j], rest // bounds[j]
        else:
            out[j] = max(int(np.gcd(rest, bounds[j])), 1)
            break
    return out


def analytic_inputs(record: dict) -> tuple:
    """(op arrays, env tile [L], parallel, vectorize, perm [L] or None) of a record."""
    from ..programs import MAX_LOOPS

    arrays, groups, emitted, env_loops = op_description(record)
    n = int(arrays["n_loops"])
    tile = [int(b) for b in arrays["bounds"]]
    s = record["schedule"]
    if record["space"] == "scalar":
        tiles = list(s.get("tiles") or tile[:n])
        tile[: len(tiles)] = [int(t) for t in tiles]
        perm = s.get("perm")
        perm = None if perm is None else list(range(len(perm), MAX_LOOPS)) + [int(x) for x in perm]
        return arrays, tile, bool(s.get("parallel")), bool(s.get("vectorize")), perm
    d = F.default_from(record["default_config"])
    r = F.refinement_from(s)
    dist = list(r.distribution) if r.mode == "config" and r.distribution is not None else d.level("distribution")
    for g, t in zip(groups, dist):
        bounds = [emitted[j] for j in g]
        for j, tj in zip(g, _spread(int(t) or int(np.prod(bounds)), bounds)):
            e = env_loops[j] if env_loops else j
            if 0 <= e < n:
                tile[e] = tj
    return arrays, tile, True, True, None


@functools.lru_cache(maxsize=None)
def _jitted_op_times():
    import jax

    from ..cost_model import Machine, op_cost

    m = Machine(cores=1)
    return jax.jit(jax.vmap(lambda b, red, coef, valid, arith, tile, par, vec, perm: op_cost(
        b, red, coef, valid, arith, tile, par, perm, vec, m).time))


def _op_times(*cols):
    return _jitted_op_times()(*cols)


class Analytic:
    """`rl.cost_model` on one core, calibrated: log t ≈ a · log t_model + b (fitted on training records)."""

    def __init__(self):
        self.a, self.b = 1.0, 0.0

    def raw(self, records: Sequence[dict]) -> np.ndarray:
        """Uncalibrated log seconds [N] of the analytic model."""
        import jax.numpy as jnp

        from ..cost_model import default_perm

        rows = [analytic_inputs(r) for r in records]

        def one(a, tile, par, vec, perm):
            return (a["bounds"].astype(np.int32), a["is_reduction"].astype(bool), a["coef"].astype(np.int32),
                    a["tensor_valid"].astype(bool), a["arith"].astype(np.int32), np.asarray(tile, np.int32), par,
                    vec, np.asarray(default_perm(int(a["n_loops"])) if perm is None else perm, np.int32))

        cols = [np.stack(c) for c in zip(*(one(*row) for row in rows))]
        n, size = len(rows), 256
        pad = -n % size                                  # whole chunks of `size`: one compiled shape
        cols = [np.concatenate([c, np.repeat(c[:1], pad, 0)]) for c in cols]
        t = np.concatenate([np.asarray(_op_times(*[jnp.asarray(c[s:s + size]) for c in cols]), np.float64)
                            for s in range(0, n + pad, size)])[:n]
        return np.log(np.maximum(t, 1e-12))

    def fit(self, records: Sequence[dict]) -> "Analytic":
        x, y = self.raw(records), np.log([r["time_s"] for r in records])
        a, b = np.polyfit(x, y, 1) if np.ptp(x) > 0 else (1.0, float(np.mean(y - x)))
        self.a, self.b = (float(a), float(b)) if a > 0 else (1.0, float(np.mean(y - x)))
        return self

    def predict(self, records: Sequence[dict]) -> np.ndarray:
        return self.a * self.raw(records) + self.b

    def to_dict(self) -> dict:
        return {"a": self.a, "b": self.b}


__all__ = ["Analytic", "Trees", "analytic_inputs"]
