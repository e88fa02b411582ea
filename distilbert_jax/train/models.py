"""Building the student model (and the distillation teacher) of a training config."""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

import distilbert_jax as dj

from .config import ConfigError, TrainConfig

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def model_config(cfg: TrainConfig, vocab_size: int | None, num_labels: int | None = None) -> dj.DistilBertConfig:
    """The student's `DistilBertConfig`: `init_from`'s config (or the defaults) with `cfg.model` on top;
    vocab_size from the tokenizer when not given, num_labels from the data (else the data config)."""
    base = dj.DistilBertConfig.from_json_file(cfg.init_from) if cfg.init_from else dj.DistilBertConfig()
    overrides: dict[str, Any] = dict(cfg.model)
    known = {f.name for f in dataclasses.fields(dj.DistilBertConfig)} | {"num_labels"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"unknown key(s) in 'model': {unknown}; expected DistilBertConfig fields {sorted(known)}")
    if vocab_size is not None and "vocab_size" not in overrides and not cfg.init_from:
        overrides["vocab_size"] = vocab_size
    if cfg.base_task in ("classify", "token-classify"):
        if num_labels is not None and overrides.get("num_labels", num_labels) != num_labels:
            raise ConfigError(f"model.num_labels {overrides['num_labels']} but the data has {num_labels} labels")
        overrides.setdefault("num_labels", num_labels or cfg.data.num_labels)
    elif cfg.base_task == "qa":
        overrides["num_labels"] = 2
    try:
        config = base.replace(**overrides)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"bad 'model' section: {e}") from None
    if vocab_size is not None and config.vocab_size < vocab_size:
        raise ConfigError(f"model.vocab_size {config.vocab_size} is smaller than the tokenizer's vocabulary ({vocab_size})")
    if config.max_position_embeddings < cfg.data.seq_len:
        raise ConfigError(f"data.seq_len {cfg.data.seq_len} exceeds model max_position_embeddings "
                          f"{config.max_position_embeddings}")  # fmt: skip
    return config


def build_student(cfg: TrainConfig, vocab_size: int | None, num_labels: int | None = None) -> tuple[nn.Module, dict]:
    """`(model, params)` — from `init_from` (head added if missing) or freshly initialised with `seed`."""
    config = model_config(cfg, vocab_size, num_labels)
    dtype = DTYPES[cfg.dtype]
    if cfg.init_from:
        model, variables = dj.from_pretrained(cfg.init_from, cfg.head, dtype=dtype, rng=cfg.seed,
                                              num_labels=config.num_labels if cfg.head != "masked_lm" else None)  # fmt: skip
        if model.config != config:
            model = dj.build_model(config, cfg.head, dtype)
        return model, variables["params"]
    model = dj.build_model(config, cfg.head, dtype)
    return model, dj.init_params(model, cfg.seed)["params"]


def load_teacher(cfg: TrainConfig, student: nn.Module) -> tuple[nn.Module, dict]:
    """The teacher `(model, variables)` of a distillation config, checked against the student."""
    assert cfg.distill is not None
    try:
        # the frozen teacher only runs forwards: its params are cast to the compute dtype once, here
        teacher, variables = dj.from_pretrained(cfg.distill.teacher, cfg.head, dtype=DTYPES[cfg.dtype],
                                                param_dtype=DTYPES[cfg.dtype])  # fmt: skip
    except FileNotFoundError as e:
        raise ConfigError(f"distill.teacher: {e}") from None
    t, s = teacher.config, student.config
    problems = []
    if t.vocab_size != s.vocab_size:
        problems.append(f"vocabulary sizes differ (teacher {t.vocab_size}, student {s.vocab_size}); "
                        "distillation needs the same tokenizer")  # fmt: skip
    if cfg.head != "masked_lm" and t.num_labels != s.num_labels:
        problems.append(f"label counts differ (teacher {t.num_labels}, student {s.num_labels})")
    if cfg.distill.cosine_weight > 0 and t.dim != s.dim:
        problems.append(f"the cosine hidden-state loss needs equal hidden sizes (teacher dim {t.dim}, student "
                        f"{s.dim}); set distill.cosine_weight to 0")  # fmt: skip
    if problems:
        raise ConfigError(f"teacher {cfg.distill.teacher} does not fit the student: " + "; ".join(problems))
    return teacher, variables
