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
    if config.max_seq_len < cfg.data.seq_len:  # RoBERTa family: max_position_embeddings - pad_token_id - 1
        raise ConfigError(f"data.seq_len {cfg.data.seq_len} exceeds the model's longest input {config.max_seq_len} "
                          f"(max_position_embeddings {config.max_position_embeddings})")  # fmt: skip
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


def _vocabulary_problem(teacher_dir: str, tokenizer: Any) -> str | None:
    """Why the teacher directory's tokenizer does not match the run's (None if it does or either is absent)."""
    if tokenizer is None:
        return None
    try:
        teacher_tok = dj.Tokenizer.from_pretrained(teacher_dir)
    except (FileNotFoundError, ValueError):
        return None  # no tokenizer files next to the teacher: the vocabulary size check stands alone
    ours, theirs = tokenizer.backend.get_vocab(), teacher_tok.backend.get_vocab()
    if ours == theirs:
        return None
    differ = sorted(set(ours.items()) ^ set(theirs.items()), key=lambda kv: kv[1])
    example = ", ".join(f"{token!r}" for token, _ in differ[:3])
    return (f"the teacher's tokenizer ({len(theirs)} tokens) and the run's ({len(ours)} tokens) differ in "
            f"{len({t for t, _ in differ})} tokens (e.g. {example}); distillation needs the same vocabulary — "
            "set `tokenizer` to the teacher's directory")  # fmt: skip


def load_teacher(cfg: TrainConfig, student: nn.Module, tokenizer: Any = None) -> tuple[nn.Module, dict]:
    """The teacher `(model, variables)` of a distillation config, checked against the student (and the
    run's tokenizer, when both have one). Any architecture `from_pretrained` loads can teach (DistilBERT,
    BERT) as long as the vocabulary is the student's."""
    assert cfg.distill is not None
    try:
        # the frozen teacher only runs forwards: its params are cast to the compute dtype once, here
        teacher, variables = dj.from_pretrained(cfg.distill.teacher, cfg.head, dtype=DTYPES[cfg.dtype],
                                                param_dtype=DTYPES[cfg.dtype])  # fmt: skip
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(f"distill.teacher: {e}") from None
    t, s = teacher.config, student.config
    problems = []
    vocabulary = _vocabulary_problem(cfg.distill.teacher, tokenizer)
    if vocabulary:
        problems.append(vocabulary)
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
