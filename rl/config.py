"""Typed, frozen PPO configuration with JSON loading and validation (clear errors for bad input)."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from .networks import MODEL_TYPES

GYMNAX_ENVS = ("CartPole-v1", "Acrobot-v1", "MountainCar-v0")
ENVS = ("sched", "refine") + GYMNAX_ENVS   # refine: IREE-config refinements (rl/mlir/refine.py)
EVAL_BACKENDS = ("model", "mlir", "none")   # none: no held-out evaluation after training
REWARD_BACKENDS = ("model", "mlir", "learned")   # learned: a trained cost model (rl/costnet), refine env only
TRAIN_PROGRAMS = ("train", "validation")


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """Everything `make_train` needs. Hashable (static under jit)."""

    name: str = "run"
    env: str = "sched"                  # "sched" or a gymnax env id
    model_type: str = "lstm"            # one of MODEL_TYPES
    seeds: tuple[int, ...] = (0,)
    total_timesteps: int = 100_000
    num_envs: int = 16
    num_steps: int = 64
    update_epochs: int = 4
    num_minibatches: int = 4
    gamma: float = 1.0
    gae_lambda: float = 0.95
    clip_eps: float = 0.2
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    lr: float = 1e-3
    anneal_lr: bool = True
    normalize_advantages: bool = True
    width: int = 64
    lstm_chunk: int = 6
    bert_dim: int = 32
    bert_layers: int = 2
    bert_heads: int = 4
    bert_hidden: int = 64
    n_buckets: int = 50
    dropout: float = 0.0
    shared_embedding: bool = True
    pretrained: str | None = None       # HF DistilBERT dir to initialise the DistilBERT embedding
    updates_per_chunk: int = 10         # CLI: updates per jitted call (progress/checkpoint granularity)
    eval_samples: int = 32              # evaluation: policy samples / random-search schedules per program
    out_dir: str = "runs"
    machine: str | None = None          # cost-model Machine JSON (e.g. results/cost_model/machine_calibrated.json)
    eval_backend: str = "model"         # held-out evaluation: "model" (cost model), "mlir" (IREE-measured) or "none"
    reward_backend: str = "model"       # training reward: "model" (cost model) or "mlir" (IREE-measured, rl/mlir/reward.py)
    #                                     or "learned" (refine env: predicted by the learned cost model `cost_model`)
    cost_model: str | None = None       # reward_backend "learned": a directory of `python -m rl.cost_learned train`
    train_programs: str = "train"       # "train" (rl.programs, 28) or "validation" (rl.mlir.suite, 12 small programs)
    init_from: str | None = None        # a checkpoint.msgpack whose params (its first seed) start every seed: fine-tuning

    def __post_init__(self):
        object.__setattr__(self, "seeds", tuple(self.seeds))
        p = []
        if self.env not in ENVS:
            p.append(f"unknown env {self.env!r}; expected one of {ENVS}")
        if self.model_type not in MODEL_TYPES:
            p.append(f"unknown model_type {self.model_type!r}; expected one of {MODEL_TYPES}")
        for k in ("total_timesteps", "num_envs", "num_steps", "update_epochs", "num_minibatches", "width",
                  "lstm_chunk", "bert_dim", "bert_layers", "bert_heads", "bert_hidden", "n_buckets",
                  "updates_per_chunk", "eval_samples"):
            v = getattr(self, k)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                p.append(f"{k} must be a positive int, got {v!r}")
        for k in ("gamma", "gae_lambda"):
            if not 0.0 <= getattr(self, k) <= 1.0:
                p.append(f"{k} must be in [0, 1], got {getattr(self, k)!r}")
        for k in ("clip_eps", "lr", "max_grad_norm"):
            if not getattr(self, k) > 0:
                p.append(f"{k} must be > 0, got {getattr(self, k)!r}")
        if not 0.0 <= self.dropout < 1.0:
            p.append(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not self.seeds or not all(isinstance(s, int) for s in self.seeds):
            p.append(f"seeds must be a non-empty list of ints, got {self.seeds!r}")
        if not p and (self.num_envs * self.num_steps) % self.num_minibatches:
            p.append(f"num_minibatches ({self.num_minibatches}) must divide num_envs*num_steps "
                     f"({self.num_envs * self.num_steps})")
        if not p and self.num_updates < 1:
            p.append(f"total_timesteps ({self.total_timesteps}) is less than one rollout "
                     f"(num_envs*num_steps = {self.num_envs * self.num_steps})")
        if self.eval_backend not in EVAL_BACKENDS:
            p.append(f"unknown eval_backend {self.eval_backend!r}; expected one of {EVAL_BACKENDS}")
        if self.reward_backend not in REWARD_BACKENDS:
            p.append(f"unknown reward_backend {self.reward_backend!r}; expected one of {REWARD_BACKENDS}")
        if self.train_programs not in TRAIN_PROGRAMS:
            p.append(f"unknown train_programs {self.train_programs!r}; expected one of {TRAIN_PROGRAMS}")
        if self.env not in ("sched", "refine") and (self.reward_backend != "model" or self.train_programs != "train"):
            p.append("reward_backend / train_programs apply to envs 'sched' and 'refine' only")
        if self.env == "refine" and self.reward_backend not in ("mlir", "learned"):
            p.append("env 'refine' is scored by measurement or a learned cost model: set reward_backend to 'mlir' "
                     "or 'learned'")
        if self.reward_backend == "learned" and self.env != "refine":
            p.append("reward_backend 'learned' is for env 'refine' only")
        if self.reward_backend == "learned" and not self.cost_model:
            p.append("reward_backend 'learned' needs cost_model (a directory of `python -m rl.cost_learned train`)")
        if self.cost_model is not None and not os.path.isfile(os.path.join(self.cost_model, "config.json")):
            p.append(f"cost_model {self.cost_model} is not a cost-model directory (no config.json; train one with "
                     "`python -m rl.cost_learned train`)")
        if self.init_from is not None and not os.path.isfile(self.init_from):
            p.append(f"init_from checkpoint {self.init_from} does not exist")
        if self.machine is not None and not os.path.isfile(self.machine):
            p.append(f"machine file {self.machine} does not exist")
        if self.pretrained is not None and not self.model_type.startswith("distilbert"):
            p.append(f"pretrained is only for distilbert model types, not {self.model_type!r}")
        if p:
            raise ValueError("Invalid PPOConfig: " + "; ".join(p))

    def load_machine(self) -> Any:
        """The cost-model `Machine` of `machine` (None: the default machine)."""
        from .cost_model import Machine

        return None if self.machine is None else Machine.from_json(self.machine)

    @property
    def num_updates(self) -> int:
        return self.total_timesteps // (self.num_envs * self.num_steps)

    @property
    def minibatch_size(self) -> int:
        return self.num_envs * self.num_steps // self.num_minibatches

    def replace(self, **changes: Any) -> "PPOConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PPOConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown config key(s) {unknown}; valid keys: {sorted(known)}")
        return cls(**d)

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "PPOConfig":
        """Load a JSON config file (`name` defaults to the file's stem)."""
        if not os.path.isfile(path):
            raise FileNotFoundError(f"config file {path} does not exist")
        with open(path, encoding="utf-8") as f:
            try:
                d = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"config file {path} is not valid JSON: {e}") from None
        if not isinstance(d, dict):
            raise ValueError(f"config file {path} must hold a JSON object")
        d.setdefault("name", os.path.splitext(os.path.basename(path))[0])
        return cls.from_dict(d)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["seeds"] = list(self.seeds)
        return d
