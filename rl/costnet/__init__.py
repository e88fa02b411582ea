"""A learned cost model of IREE schedules: DistilBERT over (op, schedule) tokens (see `rl.cost_learned`)."""

from .features import candidate_record, encode, feature_matrix
from .metrics import ranking_metrics
from .model import CostNet, CostNetConfig, Stats, fit, load, predict, save

__all__ = ["CostNet", "CostNetConfig", "Stats", "candidate_record", "encode", "feature_matrix", "fit", "load",
           "predict", "ranking_metrics", "save"]
