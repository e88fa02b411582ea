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
def _table(split: str):
    from ..mlir.suite import validation_programs
    from ..programs import test_programs, train_programs

    return {"train": train_programs, "val": validation_programs, "test": test_programs}[split]()


@functools.lru_cache(maxsize=None)
def _spec(split: str, program: str, op_index: int):
    from ..mlir.emit import program_specs

    table = _table(split)
    if program not in table.names:
        raise ValueError(f"program {program!r} is not in the {split} program table: the analytic model cannot "
                         "rebuild its ops")
    p = table.names.index(program)
    return table, p, program_specs(table, p)[op_index]


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
    """(table, program index, op index, env tile [L], parallel, vectorize, perm [L] or None) of a record."""
    from ..programs import MAX_LOOPS

    table, p, spec = _spec(record["split"], record["program"], int(record["op_index"]))
    k = int(record["op_index"])
    n = int(table.n_loops[p, k])
    tile = [int(b) for b in table.bounds[p, k]]
    s = record["schedule"]
    if record["space"] == "scalar":
        tiles = list(s.get("tiles") or tile[:n])
        tile[: len(tiles)] = [int(t) for t in tiles]
        perm = s.get("perm")
        perm = None if perm is None else list(range(len(perm), MAX_LOOPS)) + [int(x) for x in perm]
        return table, p, k, tile, bool(s.get("parallel")), bool(s.get("vectorize")), perm
    d = F.default_from(record["default_config"])
    r = F.refinement_from(s)
    dist = list(r.distribution) if r.mode == "config" and r.distribution is not None else d.level("distribution")
    groups = spec.collapse_groups()
    for g, t in zip(groups, dist):
        bounds = [spec.bounds[j] for j in g]
        for j, tj in zip(g, _spread(int(t) or int(np.prod(bounds)), bounds)):
            e = spec.env_loops[j] if spec.env_loops else j
            if e >= 0:
                tile[e] = tj
    return table, p, k, tile, True, True, None


class Analytic:
    """`rl.cost_model` on one core, calibrated: log t ≈ a · log t_model + b (fitted on training records)."""

    def __init__(self):
        self.a, self.b = 1.0, 0.0

    def raw(self, records: Sequence[dict]) -> np.ndarray:
        """Uncalibrated log seconds [N] of the analytic model."""
        import jax
        import jax.numpy as jnp

        from ..cost_model import Machine, default_perm, op_cost

        rows = [analytic_inputs(r) for r in records]
        m = Machine(cores=1)

        def one(table, p, k, tile, par, vec, perm):
            return (table.bounds[p, k], table.is_reduction[p, k], table.coef[p, k], table.tensor_valid[p, k],
                    table.arith[p, k], np.asarray(tile, np.int32), par, vec,
                    np.asarray(default_perm(int(table.n_loops[p, k])) if perm is None else perm, np.int32))

        cols = [np.stack(c) for c in zip(*(one(*row) for row in rows))]
        fn = jax.jit(jax.vmap(lambda b, red, coef, valid, arith, tile, par, vec, perm: op_cost(
            b, red, coef, valid, arith, tile, par, perm, vec, m).time))
        t = np.asarray(fn(*[jnp.asarray(c) for c in cols]), np.float64)
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
