"""Typed, frozen training configs read from JSON, with clear errors on unknown keys and bad values."""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from typing import Any

from ..jsonfile import read_json_object as _read_json_object

TASKS = ("mlm", "classify", "token-classify", "qa", "distill")
TASK_HEADS = {
    "mlm": "masked_lm",
    "classify": "sequence_classification",
    "token-classify": "token_classification",
    "qa": "question_answering",
}
DTYPES = ("float32", "bfloat16")


class ConfigError(ValueError):
    """A training config that cannot be used; the message names the offending key."""


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warmup then linear (or cosine) decay, global-norm clipping, accumulation."""

    learning_rate: float = 5e-4
    warmup_steps: int = 0
    schedule: str = "linear"  # "linear" | "cosine" | "constant" (after warmup)
    end_lr_ratio: float = 0.0
    weight_decay: float = 0.01
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    max_grad_norm: float | None = 1.0
    grad_accum_steps: int = 1  # the batch is split into this many micro-batches per optimizer step

    def check(self) -> list[str]:
        p = []
        if self.learning_rate <= 0:
            p.append(f"optim.learning_rate must be > 0, got {self.learning_rate}")
        if self.warmup_steps < 0:
            p.append(f"optim.warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.schedule not in ("linear", "cosine", "constant"):
            p.append(f"optim.schedule must be 'linear', 'cosine' or 'constant', got {self.schedule!r}")
        if self.grad_accum_steps < 1:
            p.append(f"optim.grad_accum_steps must be >= 1, got {self.grad_accum_steps}")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            p.append(f"optim.max_grad_norm must be > 0 or null, got {self.max_grad_norm}")
        return p


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where batches come from. `source`: "default" (the loaders' offline corpus), a path to a
    .txt / .jsonl file, or "synthetic" (random ids, for tests and benchmarks)."""

    source: str = "default"
    eval_source: str | None = None  # None: a held-out slice of `source`
    batch_size: int = 32  # global batch per optimizer step (all micro-batches, all devices)
    seq_len: int = 128
    mask_prob: float = 0.15
    vocab_size: int = 2000  # for a tokenizer trained on the corpus
    num_labels: int = 2
    text_field: str = "text"  # for qa: the context
    label_field: str = "label"
    question_field: str = "question"  # qa (SQuAD-style JSONL)
    answers_field: str = "answers"  # qa: {"text": [...], "answer_start": [...]}
    doc_stride: int | None = None  # qa: long contexts become windows overlapping by this; None: min(128, seq_len // 3)
    shuffle: bool = True

    def check(self) -> list[str]:
        p = []
        for name in ("batch_size", "seq_len", "vocab_size", "num_labels"):
            if getattr(self, name) < 1:
                p.append(f"data.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 < self.mask_prob < 1.0:
            p.append(f"data.mask_prob must be in (0, 1), got {self.mask_prob}")
        if self.doc_stride is not None and not 0 <= self.doc_stride < self.seq_len // 2:
            p.append(f"data.doc_stride must be in [0, seq_len // 2 = {self.seq_len // 2}), got {self.doc_stride}")
        return p

    @property
    def qa_stride(self) -> int:
        """The overlap of QA context windows (run_qa's doc_stride: 128 at seq_len 384)."""
        return min(128, self.seq_len // 3) if self.doc_stride is None else self.doc_stride


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    """Knowledge distillation: loss = alpha·T²·KL(teacher_T ‖ student_T) + (1-alpha)·hard CE
    + cosine_weight·(1 - cos(student hidden, teacher hidden))."""

    teacher: str = ""  # HF directory of the teacher (any head matching `task`)
    task: str = "mlm"  # the student task: "mlm", "classify" or "token-classify"
    temperature: float = 2.0
    alpha: float = 0.5
    cosine_weight: float = 0.0

    def check(self) -> list[str]:
        p = []
        if self.task not in ("mlm", "classify", "token-classify"):
            p.append(f"distill.task must be 'mlm', 'classify' or 'token-classify', got {self.task!r}")
        if self.temperature <= 0:
            p.append(f"distill.temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.alpha <= 1.0:
            p.append(f"distill.alpha must be in [0, 1], got {self.alpha}")
        if self.cosine_weight < 0:
            p.append(f"distill.cosine_weight must be >= 0, got {self.cosine_weight}")
        return p


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training run. `model` holds `DistilBertConfig` fields (over its defaults, or over the
    config of `init_from`, an HF directory to start from); `vocab_size` defaults to the tokenizer's."""

    task: str = "mlm"
    model: dict = dataclasses.field(default_factory=dict)
    init_from: str | None = None
    tokenizer: str | None = None  # HF dir with vocab.txt / tokenizer.json; None: train one on the corpus
    dtype: str = "float32"  # compute dtype; params stay float32
    seed: int = 0
    total_steps: int = 100
    log_every: int = 10
    eval_every: int = 0  # 0: only at the end
    eval_batches: int = 4
    checkpoint_every: int = 0  # 0: only at the end
    keep_checkpoints: int = 3
    out_dir: str = "runs/train"
    resume: bool = True  # continue from the latest checkpoint in out_dir/checkpoints if any
    distributed: bool = False  # call jax.distributed.initialize() (multi-host)
    progress: bool = True
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    distill: DistillConfig | None = None

    def __post_init__(self):
        p = []
        if self.task not in TASKS:
            p.append(f"task must be one of {TASKS}, got {self.task!r}")
        if self.dtype not in DTYPES:
            p.append(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        for name in ("total_steps", "log_every", "eval_batches", "keep_checkpoints"):
            if getattr(self, name) < 1:
                p.append(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("eval_every", "checkpoint_every"):
            if getattr(self, name) < 0:
                p.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.task == "distill" and (self.distill is None or not self.distill.teacher):
            p.append("task 'distill' needs a 'distill' section with a 'teacher' directory")
        p += self.optim.check() + self.data.check() + (self.distill.check() if self.distill else [])
        if self.data.batch_size % self.optim.grad_accum_steps:
            p.append(f"data.batch_size ({self.data.batch_size}) must be divisible by "
                     f"optim.grad_accum_steps ({self.optim.grad_accum_steps})")  # fmt: skip
        if p:
            raise ConfigError("invalid training config: " + "; ".join(p))

    @property
    def base_task(self) -> str:
        """The supervised task trained (for distillation, the student's task)."""
        return self.distill.task if self.task == "distill" else self.task

    @property
    def head(self) -> str:
        """The `distilbert_jax` head name of the model trained."""
        return TASK_HEADS[self.base_task]

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with fields changed; nested sections may be given as dicts of their changed keys."""
        for name in ("optim", "data", "distill"):
            if isinstance(changes.get(name), dict):
                current = getattr(self, name)
                current = dataclasses.asdict(current) if current is not None else {}
                changes[name] = build_dataclass(_SECTIONS[name], {**current, **changes[name]}, name)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict that `from_dict` reads back."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        """Build from a dict; unknown keys and wrongly typed values raise `ConfigError` naming them."""
        return build_dataclass(cls, data, "")

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "TrainConfig":
        """Read a JSON config file."""
        data = read_json_object(path)
        try:
            return cls.from_dict(data)
        except ConfigError as e:
            raise ConfigError(f"{os.fspath(path)}: {e}") from None


def read_json_object(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON object in file `path`; `ConfigError` if it is missing, not JSON or not an object."""
    try:
        return _read_json_object(path, ConfigError)
    except FileNotFoundError:
        raise ConfigError(f"config file {os.fspath(path)} does not exist") from None


_SECTIONS = {"optim": OptimConfig, "data": DataConfig, "distill": DistillConfig}


def _check_type(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is not type(None):
                try:
                    return _check_type(value, option, key)
                except ConfigError:
                    pass
        raise ConfigError(f"{key} has the wrong type: expected {hint}, got {type(value).__name__} {value!r}")
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be an object, got {type(value).__name__}")
        return build_dataclass(hint, value, key)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    expected = origin or hint
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ConfigError(f"{key} must be {getattr(expected, '__name__', expected)}, got {type(value).__name__} {value!r}")
    return value


def build_dataclass(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """`cls(**data)` with every key and value type checked; `ConfigError` names the key (under `prefix`)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'} must be a JSON object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        where = f" in '{prefix}'" if prefix else ""
        raise ConfigError(f"unknown config key(s){where}: {unknown}; expected some of {names}")
    kwargs = {k: _check_type(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(str(e)) from None


TINY_MODEL = {"vocab_size": 200, "dim": 32, "n_layers": 2, "n_heads": 4, "hidden_dim": 64, "max_position_embeddings": 64}


def tiny_config(task: str = "mlm", **changes: Any) -> TrainConfig:
    """A seconds-long run on synthetic data with a dim-32 / 2-layer / vocab-200 model (tests, smoke runs)."""
    base = TrainConfig(
        model=dict(TINY_MODEL), total_steps=6, log_every=2, eval_batches=2, progress=False,
        data=DataConfig(source="synthetic", batch_size=8, seq_len=16, vocab_size=200, num_labels=3),
        optim=OptimConfig(learning_rate=1e-3, warmup_steps=1),
    )  # fmt: skip
    return base.replace(task=task, **changes)
