"""Rank candidate refinements of ops with a trained cost model, so the tuner measures only the top k.

    ranker = Ranker.load("runs/costnet")
    top = ranker.top_k(ops, k=8, n_random=256, extra=policy_proposals, seed=0)   # [[Refinement] per op]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..mlir import refine as R
from . import features as F
from .model import CostNetConfig, Stats, load, predict

ALWAYS_MEASURED = ("keep", "data-tiling")       # the tuner measures IREE's default and data tiling anyway


@dataclasses.dataclass
class Ranker:
    """A trained cost model (a directory written by `python -m rl.cost_learned train`)."""

    cfg: CostNetConfig
    model: Any
    params: Any
    stats: Stats

    @classmethod
    def load(cls, path: str) -> "Ranker":
        cfg, model, params, stats, _ = load(path)
        if cfg.space != "refine":
            raise ValueError(f"cost model {path} was trained on the {cfg.space!r} space; the tuner ranks refine-space "
                             "schedules")
        return cls(cfg, model, params, stats)

    def predict(self, kind: str, d: R.DefaultConfig, cands: Sequence[R.Refinement]) -> np.ndarray:
        """Predicted log seconds [n] of refinements of one op."""
        return self.predict_many([(kind, d, r) for r in cands])

    def predict_many(self, items: Sequence[tuple[str, R.DefaultConfig, R.Refinement]]) -> np.ndarray:
        """Predicted log seconds [n] of (op kind, IREE default config, refinement) of any ops, in one batch."""
        recs = [F.candidate_record(kind, d, r) for kind, d, r in items]
        return predict(self.model, self.params, F.encode(recs, self.cfg.n_buckets), self.stats)

    def top_k(self, ops: Sequence[tuple[Any, R.DefaultConfig]], k: int, n_random: int = 256,
              extra: Sequence[Sequence[R.Refinement]] | None = None, seed: int = 0) -> list[list[R.Refinement]]:
        """Per op (OpSpec, default config): the k candidates predicted fastest among `n_random` random legal
        refinements and `extra[i]` (e.g. a policy's proposals), IREE's default and data tiling left out."""
        rng = np.random.default_rng(seed)
        out = []
        for i, (spec, d) in enumerate(ops):
            cands = list(dict.fromkeys(R.random_configs(d, n_random, rng, tries=8) + list(extra[i] if extra else [])))
            cands = [c for c in cands if c.mode not in ALWAYS_MEASURED]
            if not cands:
                out.append([])
                continue
            order = np.argsort(self.predict(spec.kind, d, cands), kind="stable")
            out.append([cands[j] for j in order[:k]])
        return out


__all__ = ["Ranker"]
