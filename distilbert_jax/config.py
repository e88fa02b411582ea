"""DistilBERT configuration: a frozen, hashable dataclass read from / written to HF `config.json`."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from .jsonfile import read_json_object

_ACTIVATIONS = ("gelu", "relu", "gelu_new", "gelu_pytorch_tanh")


@dataclasses.dataclass(frozen=True)
class DistilBertConfig:
    """Every `DistilBertConfig` field that affects numerics. Hashable, so usable as a static jit arg."""

    vocab_size: int = 30522
    dim: int = 768
    n_layers: int = 6
    n_heads: int = 12
    hidden_dim: int = 3072
    max_position_embeddings: int = 512
    sinusoidal_pos_embds: bool = False
    activation: str = "gelu"
    dropout: float = 0.1
    attention_dropout: float = 0.1
    qa_dropout: float = 0.1
    seq_classif_dropout: float = 0.2
    pad_token_id: int = 0
    initializer_range: float = 0.02
    id2label: tuple[tuple[int, str], ...] = ((0, "LABEL_0"), (1, "LABEL_1"))
    problem_type: str | None = None
    qkv_dim: int | None = None  # attention width (q/k/v map dim -> qkv_dim); None: dim (HF DistilBERT ties them)

    def __post_init__(self):
        if self.qkv_dim == self.dim:
            object.__setattr__(self, "qkv_dim", None)  # one spelling of "tied", so equal configs compare equal
        problems = []
        for name in ("vocab_size", "dim", "n_layers", "n_heads", "hidden_dim", "max_position_embeddings"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                problems.append(f"{name} must be a positive int, got {value!r}")
        if self.qkv_dim is not None and (not isinstance(self.qkv_dim, int) or isinstance(self.qkv_dim, bool)
                                         or self.qkv_dim <= 0):  # fmt: skip
            problems.append(f"qkv_dim must be a positive int or None (= dim), got {self.qkv_dim!r}")
        if not problems and self.attention_dim % self.n_heads:
            name = "dim" if self.qkv_dim is None else "qkv_dim"
            problems.append(f"n_heads ({self.n_heads}) must divide {name} ({self.attention_dim})")
        if self.activation not in _ACTIVATIONS:
            problems.append(f"activation must be one of {_ACTIVATIONS}, got {self.activation!r}")
        for name in ("dropout", "attention_dropout", "qa_dropout", "seq_classif_dropout"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                problems.append(f"{name} must be in [0, 1), got {value!r}")
        if isinstance(self.vocab_size, int) and not 0 <= self.pad_token_id < self.vocab_size:
            problems.append(f"pad_token_id ({self.pad_token_id}) must be in [0, vocab_size={self.vocab_size})")
        if len(self.id2label) < 1:
            problems.append("id2label must name at least one label")
        if problems:
            raise ValueError("Invalid DistilBertConfig: " + "; ".join(problems))

    # ---- labels -------------------------------------------------------------------------------
    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @property
    def label2id(self) -> dict[str, int]:
        return {label: i for i, label in self.id2label}

    @property
    def attention_dim(self) -> int:
        """The width of q / k / v (all heads together): `qkv_dim`, or `dim` when that is None."""
        return self.dim if self.qkv_dim is None else self.qkv_dim

    @property
    def head_dim(self) -> int:
        return self.attention_dim // self.n_heads

    @property
    def transformers_compatible(self) -> bool:
        """Whether `transformers`' DistilBERT can hold this config (it has no attention width apart from dim)."""
        return self.qkv_dim is None

    def check_transformers_compatible(self) -> None:
        """Raise a ValueError saying why if `transformers` cannot load a model of this config."""
        if not self.transformers_compatible:
            raise ValueError(
                f"qkv_dim={self.qkv_dim} differs from dim={self.dim}: transformers' DistilBERT ties the attention "
                "width to the hidden size (its q_lin/k_lin/v_lin are dim x dim), so it cannot load this model; "
                "distilbert_jax.from_pretrained can (save with for_transformers=False)"
            )

    def with_labels(self, labels: int | list[str] | tuple[str, ...]) -> "DistilBertConfig":
        """A copy with `num_labels` labels (an int gives LABEL_0…) or the given label names."""
        names = [f"LABEL_{i}" for i in range(labels)] if isinstance(labels, int) else list(labels)
        return self.replace(id2label=tuple(enumerate(names)))

    def replace(self, **changes: Any) -> "DistilBertConfig":
        """A copy with the given fields changed (`num_labels=` is accepted too)."""
        if "num_labels" in changes:
            n = changes.pop("num_labels")
            changes["id2label"] = tuple((i, f"LABEL_{i}") for i in range(n))
        return dataclasses.replace(self, **changes)

    # ---- Hugging Face config.json ----------------------------------------------------------------
    @classmethod
    def from_hf(cls, hf: dict[str, Any]) -> "DistilBertConfig":
        """Build from a Hugging Face `config.json` dict; fields we do not model are ignored."""
        if not isinstance(hf, dict):
            raise TypeError(f"config must be a dict, got {type(hf).__name__}")
        model_type = hf.get("model_type", "distilbert")
        if model_type != "distilbert":
            raise ValueError(f"config.json has model_type={model_type!r}; distilbert_jax loads 'distilbert' only")
        names = {f.name for f in dataclasses.fields(cls)} - {"id2label"}
        kwargs = {k: hf[k] for k in names if k in hf and hf[k] is not None}
        if "pad_token_id" in hf and hf["pad_token_id"] is None:
            kwargs["pad_token_id"] = 0
        if "id2label" in hf and hf["id2label"]:
            kwargs["id2label"] = tuple(sorted((int(k), str(v)) for k, v in hf["id2label"].items()))
        elif "num_labels" in hf:
            kwargs["id2label"] = tuple((i, f"LABEL_{i}") for i in range(int(hf["num_labels"])))
        return cls(**kwargs)

    def to_hf(self) -> dict[str, Any]:
        """The Hugging Face `config.json` dict (loadable by `transformers.DistilBertConfig`)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "id2label"}
        for optional in ("problem_type", "qkv_dim"):
            if out[optional] is None:
                del out[optional]
        out["id2label"] = {str(i): label for i, label in self.id2label}
        out["label2id"] = {label: i for i, label in self.id2label}
        out.update(model_type="distilbert", architectures=["DistilBertModel"], tie_word_embeddings=True)
        return out

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> "DistilBertConfig":
        """Read a `config.json` file (or the one inside a directory)."""
        path = os.fspath(path)
        if os.path.isdir(path):
            path = os.path.join(path, "config.json")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no config.json at {path}")
        data = read_json_object(path)
        try:
            return cls.from_hf(data)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: {e}") from None

    def to_json_file(self, path: str | os.PathLike, architectures: list[str] | None = None) -> None:
        """Write `config.json`; `architectures` names the HF class (e.g. DistilBertForMaskedLM)."""
        data = self.to_hf()
        if architectures:
            data["architectures"] = architectures
        with open(path, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")


def small_config(**overrides: Any) -> DistilBertConfig:
    """A tiny config (dim 32, 2 layers) for tests and quick benchmarks."""
    base = dict(vocab_size=1000, dim=32, n_layers=2, n_heads=4, hidden_dim=37 * 2, max_position_embeddings=128)
    base.update(overrides)
    return DistilBertConfig().replace(**base)
