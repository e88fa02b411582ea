"""Ranking metrics of a cost model on measured schedules, per op (group) then aggregated.

* Spearman: rank correlation of predicted and measured time per op (ops with ≥ 3 schedules), then the
  median over ops.
* Pairwise accuracy: over every pair of schedules of the same op whose measured log times differ by more
  than `min_gap`, the fraction the model orders correctly (pooled over ops; a predicted tie counts half).
* Top-k recall: the fraction of ops whose truly fastest schedule is among the model's k fastest.
"""

from __future__ import annotations

import numpy as np

from distilbert_jax.nas.predictor import spearman


def group_metrics(pred: np.ndarray, true: np.ndarray, min_gap: float = 0.0) -> dict:
    """Metrics of one op: pred and true [n] (any monotone time scale; lower = faster)."""
    pred, true = np.asarray(pred, float), np.asarray(true, float)
    pairs = true[:, None] < true[None, :] - min_gap                     # i truly faster than j
    d = pred[None, :] - pred[:, None]
    correct = np.where(d > 0, 1.0, np.where(d == 0, 0.5, 0.0))
    order = np.argsort(pred, kind="stable")
    best = int(np.argmin(true))
    rho = spearman(pred, true) if len(true) >= 3 else float("nan")
    if len(true) >= 3 and np.ptp(true) > 0 and np.ptp(pred) == 0:
        rho = 0.0                                   # a model that cannot tell the schedules apart
    return {"spearman": rho,
            "pairs": int(pairs.sum()), "correct": float(correct[pairs].sum()),
            "top1": float(best in order[:1]), "top5": float(best in order[:5]), "n": len(true)}


def group_ranks(pred: np.ndarray, group: np.ndarray) -> np.ndarray:
    """[N] rank of each prediction within its group, scaled to [0, 1] (0 = predicted fastest; ties share their
    mean rank; a group of one gets 0.5): predictions on different scales become comparable within an op."""
    from scipy.stats import rankdata

    pred, out = np.asarray(pred, float), np.zeros(len(pred))
    for g in np.unique(group):
        idx = np.flatnonzero(group == g)
        out[idx] = (rankdata(pred[idx]) - 1) / (len(idx) - 1) if len(idx) > 1 else 0.5
    return out


def ranking_metrics(pred: np.ndarray, true: np.ndarray, group: np.ndarray, min_gap: float = 0.0) -> dict:
    """Aggregated metrics over the groups of `group` [N] (ops with < 2 schedules are skipped)."""
    per = [group_metrics(pred[group == g], true[group == g], min_gap) for g in np.unique(group)
           if np.sum(group == g) >= 2]
    if not per:
        return {"ops": 0, "spearman_median": float("nan"), "pairwise": float("nan"), "top1": float("nan"),
                "top5": float("nan"), "schedules": 0}
    rho = [m["spearman"] for m in per if not np.isnan(m["spearman"])]
    n_pairs = sum(m["pairs"] for m in per)
    return {"ops": len(per), "schedules": int(sum(m["n"] for m in per)),
            "spearman_median": float(np.median(rho)) if rho else float("nan"),
            "spearman_mean": float(np.mean(rho)) if rho else float("nan"),
            "pairwise": sum(m["correct"] for m in per) / n_pairs if n_pairs else float("nan"),
            "top1": float(np.mean([m["top1"] for m in per])), "top5": float(np.mean([m["top5"] for m in per]))}


__all__ = ["group_metrics", "group_ranks", "ranking_metrics"]
