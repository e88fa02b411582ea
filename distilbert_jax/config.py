"""Encoder configuration: a frozen, hashable dataclass read from / written to HF `config.json`.

One config type serves DistilBERT and the BERT-style encoders (`model_type` "bert", "roberta",
"xlm-roberta", "camembert", "electra"): their encoder block is DistilBERT's, so their `config.json` names
(`hidden_size`, `num_hidden_layers`, …) map onto the same fields, and `model_type` switches on what each
family adds: token-type embeddings and the pooler (BERT), positions counted after the padding index
(RoBERTa family), an embedding width apart from the hidden size (ELECTRA), and each family's heads."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from .jsonfile import read_json_object
from .sentence import SENTENCE_POOLINGS

_ACTIVATIONS = ("gelu", "relu", "gelu_new", "gelu_pytorch_tanh")
MODEL_TYPES = ("distilbert", "bert", "roberta", "xlm-roberta", "camembert", "electra")
# model_type -> family (what decides the numerics) and the prefix of its transformers classes
FAMILIES = {"distilbert": "distilbert", "bert": "bert", "roberta": "roberta", "xlm-roberta": "roberta",
            "camembert": "roberta", "electra": "electra"}  # fmt: skip
CLASS_PREFIXES = {"distilbert": "DistilBert", "bert": "Bert", "roberta": "Roberta", "xlm-roberta": "XLMRoberta",
                  "camembert": "Camembert", "electra": "Electra"}  # fmt: skip

# BERT config.json name -> our field name (the fields BERT spells differently)
BERT_FIELDS = {
    "hidden_size": "dim",
    "num_hidden_layers": "n_layers",
    "num_attention_heads": "n_heads",
    "intermediate_size": "hidden_dim",
    "hidden_act": "activation",
    "hidden_dropout_prob": "dropout",
    "attention_probs_dropout_prob": "attention_dropout",
}
# fields BERT's config.json carries under our own name
_BERT_SAME = ("vocab_size", "max_position_embeddings", "type_vocab_size", "layer_norm_eps", "pad_token_id",
              "initializer_range", "classifier_dropout", "problem_type")  # fmt: skip
# fields only one architecture has (not read from / written to the other's config.json)
_BERT_ONLY = ("type_vocab_size", "layer_norm_eps", "classifier_dropout", "embedding_size")
_DISTILBERT_ONLY = ("sinusoidal_pos_embds", "qa_dropout", "seq_classif_dropout")
# per-layer field -> the scalar field it refines (heterogeneous layers)
PER_LAYER_FIELDS = {"layer_n_heads": "n_heads", "layer_qkv_dims": "qkv_dim", "layer_hidden_dims": "hidden_dim"}
# sentence-transformers settings (from modules.json / 1_Pooling / 2_Normalize, not config.json)
_SENTENCE_FIELDS = ("pooling", "normalize_embeddings")


@dataclasses.dataclass(frozen=True)
class DistilBertConfig:
    """Every `DistilBertConfig` field that affects numerics. Hashable, so usable as a static jit arg.

    `model_type="bert"` makes it a BERT-family encoder: token-type embeddings (`type_vocab_size`),
    LayerNorm eps `layer_norm_eps`, a pooler (dense + tanh on the first token) under the classifiers,
    and BERT's head dropouts (`classifier_dropout`, else `dropout`). `pooling` / `normalize_embeddings`
    hold a sentence-transformers directory's pooling ("cls", "max", "mean", "mean_sqrt_len_tokens";
    several are concatenated), which `embed` applies by default; they are not part of `config.json`."""

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
    model_type: str = "distilbert"
    type_vocab_size: int = 0  # BERT token-type (segment) embeddings; 0 for DistilBERT
    layer_norm_eps: float = 1e-12
    classifier_dropout: float | None = None  # BERT heads: None = `dropout`
    pooling: tuple[str, ...] | None = None  # sentence-transformers pooling, e.g. ("mean",)
    normalize_embeddings: bool = False
    qkv_dim: int | None = None  # attention width (q/k/v map dim -> qkv_dim); None: dim (HF DistilBERT ties them)
    # heterogeneous layers (NAS sub-networks, as HAT): one value per layer, or None (every layer alike: the
    # scalar field). Lists whose values are all equal become the scalar; otherwise the scalar holds the
    # largest value. transformers' DistilBERT has one of each per model and cannot load such a model.
    layer_n_heads: tuple[int, ...] | None = None
    layer_qkv_dims: tuple[int, ...] | None = None
    layer_hidden_dims: tuple[int, ...] | None = None
    embedding_size: int | None = None  # ELECTRA: embedding width, projected to dim; None: dim

    def __post_init__(self):
        problems = self._per_layer()
        for name in ("qkv_dim", "embedding_size"):
            if getattr(self, name) == self.dim:
                object.__setattr__(self, name, None)  # one spelling of "tied", so equal configs compare equal
        if self.model_type not in MODEL_TYPES:
            problems.append(f"model_type must be one of {MODEL_TYPES}, got {self.model_type!r}")
        elif self.is_bert:
            name = self.model_type
            if not isinstance(self.type_vocab_size, int) or self.type_vocab_size < 1:
                problems.append(f"type_vocab_size must be a positive int for {name}, got {self.type_vocab_size!r}")
            if self.sinusoidal_pos_embds:
                problems.append(f"sinusoidal_pos_embds is a DistilBERT option; {name} has learned positions")
            if self.qkv_dim is not None:
                problems.append("qkv_dim (an attention width apart from dim) is a DistilBERT option")
            if self.heterogeneous:
                problems.append("per-layer sizes (layer_n_heads / layer_qkv_dims / layer_hidden_dims) are a DistilBERT option")
            if self.position_offset and not self.max_position_embeddings > self.position_offset:
                problems.append(f"max_position_embeddings ({self.max_position_embeddings}) must exceed pad_token_id + 1 "
                                f"({self.position_offset}): {name} counts positions after the padding index")  # fmt: skip
        elif self.type_vocab_size != 0:
            problems.append(f"type_vocab_size must be 0 for DistilBERT (it has no token types), got {self.type_vocab_size!r}")
        if self.embedding_size is not None and self.family != "electra":
            problems.append(f"embedding_size (an embedding width apart from dim) is an ELECTRA option, not {self.model_type}'s")
        elif self.embedding_size is not None and (not isinstance(self.embedding_size, int)
                                                  or isinstance(self.embedding_size, bool) or self.embedding_size <= 0):
            problems.append(f"embedding_size must be a positive int or None (= dim), got {self.embedding_size!r}")
        if not self.layer_norm_eps > 0:
            problems.append(f"layer_norm_eps must be > 0, got {self.layer_norm_eps!r}")
        if self.classifier_dropout is not None and not 0.0 <= self.classifier_dropout < 1.0:
            problems.append(f"classifier_dropout must be in [0, 1) or None, got {self.classifier_dropout!r}")
        if self.pooling is not None and (not self.pooling or any(p not in SENTENCE_POOLINGS for p in self.pooling)):
            problems.append(f"pooling must be a non-empty tuple of {SENTENCE_POOLINGS}, got {self.pooling!r}")
        for name in ("vocab_size", "dim", "n_layers", "n_heads", "hidden_dim", "max_position_embeddings"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                problems.append(f"{name} must be a positive int, got {value!r}")
        if self.qkv_dim is not None and (not isinstance(self.qkv_dim, int) or isinstance(self.qkv_dim, bool)
                                         or self.qkv_dim <= 0):  # fmt: skip
            problems.append(f"qkv_dim must be a positive int or None (= dim), got {self.qkv_dim!r}")
        if not problems:
            for i in range(self.n_layers) if self.heterogeneous else ():
                heads = self.layer_n_heads[i] if self.layer_n_heads else self.n_heads
                width = self.layer_qkv_dims[i] if self.layer_qkv_dims else self.attention_dim
                if width % heads:
                    problems.append(f"layer {i}: n_heads ({heads}) must divide its attention width ({width})")
            if not self.heterogeneous and self.attention_dim % self.n_heads:
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

    def _per_layer(self) -> list[str]:
        # normalise the per-layer fields (tuples; all-equal -> the scalar) and list what is wrong with them
        problems = []
        for name, scalar in PER_LAYER_FIELDS.items():
            values = getattr(self, name)
            if values is None:
                continue
            if (not isinstance(values, (list, tuple)) or not values
                    or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values)):  # fmt: skip
                problems.append(f"{name} must be None or a list of positive ints (one per layer), got {values!r}")
                continue
            if isinstance(self.n_layers, int) and len(values) != self.n_layers:
                problems.append(f"{name} has {len(values)} values but n_layers is {self.n_layers}: one per layer")
                continue
            values = tuple(values)
            uniform = len(set(values)) == 1
            object.__setattr__(self, scalar, values[0] if uniform else max(values))
            object.__setattr__(self, name, None if uniform else values)
        return problems

    @property
    def heterogeneous(self) -> bool:
        """Whether the layers differ in heads, attention width or FFN width."""
        return any(getattr(self, name) is not None for name in PER_LAYER_FIELDS)

    def layer(self, i: int) -> "DistilBertConfig":
        """The config of layer `i` (uniform: this config itself, so a uniform model is unchanged)."""
        if not self.heterogeneous:
            return self
        changes = {scalar: getattr(self, name)[i] for name, scalar in PER_LAYER_FIELDS.items() if getattr(self, name)}
        return dataclasses.replace(self, **changes, **{name: None for name in PER_LAYER_FIELDS})

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
        """Whether `transformers`' DistilBERT can hold this config (it has no attention width apart from dim
        and one head count and FFN width per model)."""
        return self.qkv_dim is None and not self.heterogeneous

    def check_transformers_compatible(self) -> None:
        """Raise a ValueError saying why if `transformers` cannot load a model of this config."""
        if self.heterogeneous:
            sizes = ", ".join(f"{name}={list(getattr(self, name))}" for name in PER_LAYER_FIELDS if getattr(self, name))
            raise ValueError(
                f"the layers differ ({sizes}): transformers' DistilBERT has one head count, one attention width "
                "(= dim) and one FFN width (hidden_dim) per model, so it cannot load this heterogeneous model; "
                "distilbert_jax.from_pretrained can (save with for_transformers=False)"
            )
        if not self.transformers_compatible:
            raise ValueError(
                f"qkv_dim={self.qkv_dim} differs from dim={self.dim}: transformers' DistilBERT ties the attention "
                "width to the hidden size (its q_lin/k_lin/v_lin are dim x dim), so it cannot load this model; "
                "distilbert_jax.from_pretrained can (save with for_transformers=False)"
            )

    @property
    def is_bert(self) -> bool:
        """A BERT-style encoder (BERT, RoBERTa family, ELECTRA): token types, `layer_norm_eps`, dropout after
        the attention output, BERT's config.json names."""
        return self.model_type != "distilbert"

    @property
    def family(self) -> str:
        """"distilbert", "bert", "roberta" (RoBERTa, XLM-RoBERTa, CamemBERT) or "electra": what decides the numerics."""
        return FAMILIES.get(self.model_type, self.model_type)

    @property
    def class_prefix(self) -> str:
        """The prefix of the `transformers` classes of this model_type (`Bert`, `XLMRoberta`, …)."""
        return CLASS_PREFIXES[self.model_type]

    @property
    def position_offset(self) -> int:
        """The RoBERTa family numbers positions from `pad_token_id + 1` (padding gets `pad_token_id`); others from 0."""
        return self.pad_token_id + 1 if self.family == "roberta" else 0

    @property
    def max_seq_len(self) -> int:
        """The longest input the position table covers (RoBERTa: 514 positions hold 512 tokens)."""
        return self.max_position_embeddings - self.position_offset

    @property
    def embedding_dim(self) -> int:
        """The width of the embedding tables (`embedding_size`, else `dim`)."""
        return self.dim if self.embedding_size is None else self.embedding_size

    @property
    def has_pooler(self) -> bool:
        """Whether the family's bare model has BERT's pooler (ELECTRA has none)."""
        return self.family in ("bert", "roberta")

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
        """Build from a Hugging Face `config.json` dict (any of `MODEL_TYPES`); fields we do not model are ignored."""
        if not isinstance(hf, dict):
            raise TypeError(f"config must be a dict, got {type(hf).__name__}")
        model_type = hf.get("model_type", "distilbert")
        if model_type == "distilbert":
            names = {f.name for f in dataclasses.fields(cls)} - {"id2label", *_BERT_ONLY, *_SENTENCE_FIELDS}
            kwargs = {k: hf[k] for k in names if k in hf and hf[k] is not None}
        elif model_type in MODEL_TYPES:
            kwargs = _bert_kwargs(hf, model_type)
        else:
            raise ValueError(f"config.json has model_type={model_type!r}; distilbert_jax loads {MODEL_TYPES} "
                             "(BERT-family: BERT, MiniLM, TinyBERT; RoBERTa-family: RoBERTa, DistilRoBERTa, "
                             "XLM-RoBERTa, CamemBERT; ELECTRA; sentence-transformers models on them) only")  # fmt: skip
        if "pad_token_id" in hf and hf["pad_token_id"] is None:
            kwargs["pad_token_id"] = 0
        if "id2label" in hf and hf["id2label"]:
            kwargs["id2label"] = tuple(sorted((int(k), str(v)) for k, v in hf["id2label"].items()))
        elif "num_labels" in hf:
            kwargs["id2label"] = tuple((i, f"LABEL_{i}") for i in range(int(hf["num_labels"])))
        return cls(**kwargs)

    def to_hf(self) -> dict[str, Any]:
        """The Hugging Face `config.json` dict (loadable by `transformers.AutoConfig`: DistilBertConfig, BertConfig, …)."""
        skip = {"id2label", *_SENTENCE_FIELDS, *(_DISTILBERT_ONLY if self.is_bert else _BERT_ONLY)}
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip}
        for name in ("problem_type", "classifier_dropout", "qkv_dim", "embedding_size", *PER_LAYER_FIELDS):
            if out.get(name, 0) is None:
                del out[name]
        out["id2label"] = {str(i): label for i, label in self.id2label}
        out["label2id"] = {label: i for i, label in self.id2label}
        if self.is_bert:
            out = {hf_name: out.pop(ours) for hf_name, ours in BERT_FIELDS.items()} | out
            out.update(position_embedding_type="absolute")
            if self.family == "electra":
                out["embedding_size"] = self.embedding_dim
        out["architectures"] = [self.class_prefix + "Model"]
        out["tie_word_embeddings"] = True
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


def _bert_kwargs(hf: dict[str, Any], model_type: str) -> dict[str, Any]:
    """Our field values from a BERT-style `config.json` (BERT, RoBERTa family, ELECTRA); what the encoder
    cannot run is refused by name."""
    problems = []
    position_type = hf.get("position_embedding_type", "absolute")
    if position_type != "absolute":
        problems.append(f"position_embedding_type={position_type!r} is not supported (only 'absolute' positions)")
    for flag in ("is_decoder", "add_cross_attention"):
        if hf.get(flag):
            problems.append(f"{flag}=true is not supported (distilbert_jax runs bidirectional encoders only)")
    act = hf.get("hidden_act", "gelu")
    if act not in _ACTIVATIONS:
        problems.append(f"hidden_act={act!r} is not supported (expected one of {_ACTIVATIONS})")
    if model_type == "electra":
        for name, default in _ELECTRA_SUMMARY.items():  # its multiple-choice head's sequence summary
            if hf.get(name, default) != default:
                problems.append(f"{name}={hf[name]!r} is not supported (the multiple-choice head runs {name}={default!r})")
    if problems:
        raise ValueError(f"unsupported {model_type} config: " + "; ".join(problems))
    kwargs: dict[str, Any] = {ours: hf[name] for name, ours in BERT_FIELDS.items() if hf.get(name) is not None}
    kwargs.update({k: hf[k] for k in _BERT_SAME if hf.get(k) is not None})
    kwargs.setdefault("type_vocab_size", 2)
    if model_type == "electra" and hf.get("embedding_size") is not None:
        kwargs["embedding_size"] = hf["embedding_size"]
    if FAMILIES[model_type] == "roberta":
        kwargs.setdefault("pad_token_id", 1)  # transformers' RobertaConfig default
    return dict(kwargs, model_type=model_type)


# ELECTRA's sequence summary settings (config.json) the multiple-choice head implements: first token ->
# dense (hidden -> hidden) -> GELU -> dropout; summary_last_dropout is read as hidden_dropout_prob
_ELECTRA_SUMMARY = {"summary_type": "first", "summary_use_proj": True, "summary_activation": "gelu",
                    "summary_proj_to_labels": False, "summary_first_dropout": 0}  # fmt: skip


def small_config(**overrides: Any) -> DistilBertConfig:
    """A tiny config (dim 32, 2 layers) for tests and quick benchmarks (`model_type="bert"` for BERT, …)."""
    if overrides.get("model_type", "distilbert") != "distilbert":
        overrides.setdefault("type_vocab_size", 1 if FAMILIES.get(overrides["model_type"]) == "roberta" else 2)
    if FAMILIES.get(overrides.get("model_type")) == "roberta":
        overrides.setdefault("pad_token_id", 1)
    base = dict(vocab_size=1000, dim=32, n_layers=2, n_heads=4, hidden_dim=37 * 2, max_position_embeddings=128)
    base.update(overrides)
    return DistilBertConfig().replace(**base)
