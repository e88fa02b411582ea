"""The SuperNet training config: the NAS settings (search space, objective, teacher, sandwich rule,
buckets) on top of the training stack's `TrainConfig` (data, optimizer, steps, logging, checkpoints)."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from distilbert_jax.train.overrides import build_config
from distilbert_jax.train.config import ConfigError, TrainConfig, read_json_object

from .objectives import OBJECTIVES
from .space import ArchError, SearchSpace

ARCH_FIELDS = ("dim", "n_layers", "n_heads", "hidden_dim", "qkv_dim")


@dataclasses.dataclass(frozen=True)
class NasSettings:
    """What SuperNet training adds to a `TrainConfig` (top-level keys of the same JSON)."""

    space: SearchSpace = dataclasses.field(default_factory=SearchSpace)
    objective: str = "mlm"  # "mlm" | "distill"
    teacher: str = ""  # distill: a model directory `distilbert_jax.from_pretrained` loads as masked_lm (any
    # BERT-family one); its tokenizer, if it has one, is the student's unless `tokenizer` is set
    sandwich: bool = False  # each step: the largest + the smallest + `random_archs` random archs
    inplace_distill: bool = False  # the largest arch (trained first each step) teaches the others (BigNAS)
    random_archs: int = 1  # random archs per step
    buckets: int = 3  # bucket edges per width dimension (compilations <= buckets**3)
    temperature: float = 1.0  # distill: logits KL temperature
    logits_weight: float = 1.0
    attention_weight: float = 1.0
    relation_weight: float = 1.0
    hard_weight: float = 0.0
    eval_archs: tuple[str, ...] = ("smallest", "largest")  # archs evaluated: "smallest", "largest" or arch strings

    def __post_init__(self):
        p = []
        if self.objective not in OBJECTIVES:
            p.append(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.objective == "distill" and not self.teacher:
            p.append("objective 'distill' needs 'teacher': a masked-LM model directory")
        if not isinstance(self.random_archs, int) or self.random_archs < (0 if self.sandwich else 1):
            p.append(f"random_archs must be >= {0 if self.sandwich else 1}, got {self.random_archs!r}")
        if not isinstance(self.inplace_distill, bool):
            p.append(f"inplace_distill must be true or false, got {self.inplace_distill!r}")
        if not isinstance(self.buckets, int) or self.buckets < 1:
            p.append(f"buckets must be a positive int, got {self.buckets!r}")
        if self.temperature <= 0:
            p.append(f"temperature must be > 0, got {self.temperature}")
        for name in ("logits_weight", "attention_weight", "relation_weight", "hard_weight"):
            if getattr(self, name) < 0:
                p.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if p:
            raise ConfigError("invalid NAS config: " + "; ".join(p))

    @property
    def archs_per_step(self) -> int:
        return self.random_archs + (2 if self.sandwich else 1 if self.inplace_distill else 0)


_NAS_KEYS = {f.name for f in dataclasses.fields(NasSettings)}


def has_tokenizer(directory: str) -> bool:
    """Whether a model directory holds a tokenizer (tokenizer.json or vocab.txt)."""
    return bool(directory) and any(os.path.isfile(os.path.join(directory, f)) for f in ("tokenizer.json", "vocab.txt"))


def nas_config_from_dict(data: dict[str, Any]) -> tuple[NasSettings, TrainConfig]:
    """Split a JSON object into `(NasSettings, TrainConfig)`; errors name the key. With distillation and no
    `tokenizer`, a teacher directory holding a tokenizer lends it to the student."""
    data = dict(data)
    nas = {k: data.pop(k) for k in list(data) if k in _NAS_KEYS}
    try:
        nas["space"] = SearchSpace.from_dict(nas.get("space", {}))
    except (ArchError, TypeError) as e:
        raise ConfigError(f"space: {e}") from None
    if "eval_archs" in nas:
        nas["eval_archs"] = tuple(nas["eval_archs"])
    try:
        settings = NasSettings(**nas)
    except TypeError as e:
        raise ConfigError(str(e)) from None
    if data.get("task", "mlm") != "mlm":
        raise ConfigError(f"task: SuperNet training is masked-LM pre-training ('mlm'), got {data['task']!r}")
    data["task"] = "mlm"
    arch_keys = sorted(set(data.get("model", {})) & set(ARCH_FIELDS))
    if arch_keys:
        raise ConfigError(f"model: {arch_keys} are set by the search space ('space'), not by 'model'")
    if settings.objective == "distill" and not data.get("tokenizer") and has_tokenizer(settings.teacher):
        data["tokenizer"] = settings.teacher  # the student reads the teacher's tokens: same vocabulary
    if data.get("init_from"):
        raise ConfigError("init_from: a SuperNet starts from scratch (extract a sub-network, then train it with "
                          "`python -m distilbert_jax.train mlm --set init_from=...`)")  # fmt: skip
    return settings, TrainConfig.from_dict(data)


def load_nas_config(path: str | None, overrides: list[str]) -> tuple[NasSettings, TrainConfig]:
    """The config of a command line: the JSON file, then `--set key=value` overrides."""
    data = read_json_object(path) if path else {}
    return build_config(nas_config_from_dict, data, path, overrides)
