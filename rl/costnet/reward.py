"""Rewards of the refine env from a learned cost model instead of IREE (`reward_backend: "learned"`).

The same host-side interface as `rl.mlir.refine_env.Measurer` (an `EpisodeScorer` called by the env's
end-of-episode `io_callback`), but no compilation: the ended episodes of a rollout step (all envs: one
call, `refine_env.batched_io_callback`) are encoded and predicted in one batch by `rank.Ranker`, each distinct
(op, schedule) once (memoised), and

    reward = log10(t̂_IREE default / t̂_schedule) = (log t̂_keep − log t̂_schedule) / ln 10,

both predicted by the same model (IREE's default = the "keep" schedule), so the scale is consistent and the
empty schedule scores exactly 0. Data tiling is predicted like any schedule: the model's records include the
"data-tiling" mode (the dataset measures it for every op that has one). Rewards are clipped below at
`failed_reward` like measured ones; an illegal schedule (never expected: masks) gets `failed_reward`.
"""

from __future__ import annotations

import json
import logging
import os

import numpy as np

from ..mlir import refine as R
from ..mlir.emit import OpSpec
from ..mlir.refine_env import EpisodeScorer, episode_refinement
from .rank import Ranker

log = logging.getLogger("rl.costnet")
LN10 = float(np.log(10.0))


def load_ranker(path: str | None) -> Ranker:
    """The refine-space cost model in directory `path` (written by `python -m rl.cost_learned train`); a
    ValueError naming the problem when it is unset, missing or trained on another space."""
    if not path:
        raise ValueError("reward_backend 'learned' needs cost_model: a directory written by "
                         "`python -m rl.cost_learned train`")
    if not os.path.isdir(path):
        raise ValueError(f"cost_model {path} is not a directory (train one with `python -m rl.cost_learned train`)")
    try:
        with open(os.path.join(path, "config.json")) as f:
            space = json.load(f).get("costnet", {}).get("space")
    except (OSError, json.JSONDecodeError, AttributeError) as e:
        raise ValueError(f"cost_model {path}: no readable config.json ({e})") from None
    if space != "refine":
        raise ValueError(f"cost_model {path} was trained on the {space!r} space; the refine env needs a refine-space "
                         "model (`python -m rl.cost_learned train --space refine`)")
    try:
        return Ranker.load(path)
    except FileNotFoundError as e:
        raise ValueError(str(e)) from None


class LearnedRewards(EpisodeScorer):
    """Rewards log10(t̂_default / t̂) of ended episodes, predicted by a cost model (see the module docstring)."""

    def __init__(self, ops: list[tuple[OpSpec, R.DefaultConfig]], names: list[str], model: str | Ranker,
                 failed_reward: float = -1.0):
        self.ops, self.names, self.failed_reward = ops, names, failed_reward
        self.ranker = model if isinstance(model, Ranker) else load_ranker(model)
        self.n_scored = self.n_failed = 0
        self._memo: dict[tuple[int, R.Refinement], float] = {}    # the model is deterministic: predict once
        self.default_log_s = self.ranker.predict_many([(s.kind, d, R.Refinement("keep")) for s, d in ops]) \
            if ops else np.zeros(0, np.float32)

    def predicted_log_s(self, op: np.ndarray, done_types: np.ndarray, choices: np.ndarray) -> np.ndarray:
        """Predicted log seconds [n] of n ended episodes (nan where the schedule is illegal)."""
        out = np.full(len(op), np.nan)
        todo: dict[tuple, list[int]] = {}
        for b, i in enumerate(op):
            spec, d = self.ops[int(i)]
            try:
                key = (int(i), episode_refinement(d, done_types[b], choices[b]))
            except ValueError as e:
                log.warning("illegal schedule reached the host for %s: %s", self.names[int(i)], e)
                continue
            if key in self._memo:
                out[b] = self._memo[key]
            else:
                todo.setdefault(key, []).append(b)
        if todo:
            pred = self.ranker.predict_many([(self.ops[i][0].kind, self.ops[i][1], r) for i, r in todo])
            for (key, rows), p in zip(todo.items(), pred):
                self._memo[key] = float(p)
                out[rows] = p
        return out

    def score(self, op: np.ndarray, done_types: np.ndarray, choices: np.ndarray) -> np.ndarray:
        pred = self.predicted_log_s(op, done_types, choices)
        r = (self.default_log_s[op] - pred) / LN10
        self.n_scored += len(op)
        self.n_failed += int(np.isnan(r).sum())
        return np.maximum(np.nan_to_num(r, nan=self.failed_reward), self.failed_reward).astype(np.float32)


__all__ = ["LearnedRewards", "load_ranker"]
