"""Task heads on top of `DistilBertModel`, named as the HF `DistilBertFor…` classes' keys.

The same classes run every family's configs with that family's head numerics (`config.family`):
- BERT: the classifiers sit on the pooler (dense + tanh) with `classifier_dropout`, question answering
  has no dropout, and the masked-LM head (transform dense → activation → LayerNorm → tied decoder + bias)
  is DistilBERT's.
- RoBERTa family: sequence classification is a head of its own (`classifier.dense` → tanh →
  `classifier.out_proj` on the first token), multiple choice sits on the pooler, and the masked-LM head
  always uses exact GELU.
- ELECTRA: as RoBERTa, with GELU in the classification head, a sequence summary (dense → GELU) under
  the multiple-choice classifier, a masked-LM head `embedding_size` wide, no pooler, and its
  replaced-token `discriminator` head (`ElectraForPreTraining`: dense → activation → 1 logit per token)."""

from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from .config import CLASS_PREFIXES, DistilBertConfig
from .modeling import DistilBertModel, Dropout, EncoderOutput, activation_fn, dense, layer_norm, matmul

Array = jax.Array
Dtype = Any


@flax.struct.dataclass
class HeadOutput:
    """Head outputs: `logits` (MLM [B,T,V], sequence [B,L], token [B,T,L], multiple choice [B,C]);
    for question answering `start_logits`/`end_logits` [B,T] and `logits` None."""

    logits: Array | None
    last_hidden_state: Array
    hidden_states: tuple[Array, ...] | None = None
    attentions: tuple[Array, ...] | None = None
    start_logits: Array | None = None
    end_logits: Array | None = None


def _with_encoder(enc: EncoderOutput, **kw) -> HeadOutput:
    return HeadOutput(
        last_hidden_state=enc.last_hidden_state, hidden_states=enc.hidden_states, attentions=enc.attentions, **kw
    )


class _Head(nn.Module):
    config: DistilBertConfig
    dtype: Dtype = jnp.float32

    pooler_families: ClassVar[tuple[str, ...]] = ()  # the families whose version of this head reads the pooler

    @property
    def uses_pooler(self) -> bool:
        return self.config.family in self.pooler_families

    def encode(self, input_ids, attention_mask, inputs_embeds, deterministic, output_hidden_states,
               output_attentions, token_type_ids=None) -> tuple[DistilBertModel, EncoderOutput]:  # fmt: skip
        """The "distilbert" encoder submodule (for BERT too) and its outputs."""
        encoder = DistilBertModel(self.config, self.dtype, add_pooling_layer=self.uses_pooler, name="distilbert")
        return encoder, encoder(
            input_ids,
            attention_mask,
            inputs_embeds=inputs_embeds,
            deterministic=deterministic,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            token_type_ids=token_type_ids,
        )

    @property
    def classifier_dropout(self) -> float:
        """BERT's classifier dropout (`classifier_dropout`, else `dropout`); DistilBERT's token head uses `dropout`."""
        c = self.config
        return c.classifier_dropout if c.is_bert and c.classifier_dropout is not None else c.dropout

    def pooled_classifier(self, enc: EncoderOutput, features: int, deterministic: bool, dropout: float | None = None
                          ) -> Array:  # fmt: skip
        # DistilBERT: hidden[:, 0] -> pre_classifier -> ReLU -> dropout(seq_classif_dropout) -> classifier
        # BERT (RoBERTa's multiple choice): pooler_output -> dropout -> classifier;  -> [N, features]
        c = self.config
        if c.is_bert:
            rate = self.classifier_dropout if dropout is None else dropout
            h = Dropout(rate)(enc.pooler_output, deterministic=deterministic)
        else:
            h = nn.relu(dense(c, c.dim, "pre_classifier", self.dtype)(enc.last_hidden_state[:, 0]))
            h = Dropout(c.seq_classif_dropout)(h, deterministic=deterministic)
        return dense(c, features, "classifier", self.dtype)(h)


class DistilBertForMaskedLM(_Head):
    """`vocab_transform` → activation → `vocab_layer_norm` → `vocab_projector` (weight tied to word embeddings).

    `masked_positions` [B, M] (token indices) restricts the vocabulary projection to those positions:
    logits are then [B, M, V] — the same numbers as the full [B, T, V] gathered at the positions, for a
    fraction of the cost (MLM training needs only the masked tokens)."""

    @nn.compact
    def __call__(self, input_ids=None, attention_mask=None, *, inputs_embeds=None, deterministic=True,
                 output_hidden_states=False, output_attentions=False, masked_positions=None, token_type_ids=None
                 ) -> HeadOutput:  # fmt: skip
        c = self.config
        encoder, enc = self.encode(input_ids, attention_mask, inputs_embeds, deterministic, output_hidden_states,
                                   output_attentions, token_type_ids)  # fmt: skip
        h = enc.last_hidden_state  # [B, T, D]
        if masked_positions is not None:
            if masked_positions.ndim != 2 or masked_positions.shape[0] != h.shape[0]:
                raise ValueError(f"masked_positions must be [batch={h.shape[0]}, M], got {masked_positions.shape}")
            h = jnp.take_along_axis(h, masked_positions[..., None].astype(jnp.int32), axis=1)  # [B, M, D]
        # RoBERTa's and ELECTRA's heads use exact GELU whatever hidden_act; ELECTRA's is embedding_size wide
        activation = activation_fn("gelu" if c.family in ("roberta", "electra") else c.activation)
        h = activation(dense(c, c.embedding_dim, "vocab_transform", self.dtype)(h))
        h = layer_norm("vocab_layer_norm", c.layer_norm_eps)(h)
        bias = self.param("vocab_projector", lambda _: {"bias": jnp.zeros((c.vocab_size,), jnp.float32)})["bias"]
        words, words_low = encoder.word_matrix()  # [V, D]
        logits = matmul(h, words, self.dtype, transpose_w=True, w_low=words_low, bias=bias)
        return _with_encoder(enc, logits=logits)


class ClassificationHead(nn.Module):
    """RoBERTa's / ELECTRA's sequence classifier on the first token: dropout → `dense` → tanh (ELECTRA:
    GELU) → dropout → `out_proj`. hidden [N, T, D] -> [N, num_labels]."""

    config: DistilBertConfig
    rate: float  # dropout
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, hidden: Array, deterministic: bool) -> Array:
        c = self.config
        h = Dropout(self.rate)(hidden[:, 0], deterministic=deterministic)
        h = dense(c, c.dim, "dense", self.dtype)(h)
        h = activation_fn("gelu")(h) if c.family == "electra" else jnp.tanh(h)
        h = Dropout(self.rate)(h, deterministic=deterministic)
        return dense(c, c.num_labels, "out_proj", self.dtype)(h)


class DistilBertForSequenceClassification(_Head):
    """hidden[:, 0] → `pre_classifier` → ReLU → dropout → `classifier` ([B, num_labels]);
    BERT: pooler → dropout → `classifier`; RoBERTa family / ELECTRA: `ClassificationHead` ("classifier")."""

    pooler_families = ("bert",)

    @nn.compact
    def __call__(self, input_ids=None, attention_mask=None, *, inputs_embeds=None, deterministic=True,
                 output_hidden_states=False, output_attentions=False, token_type_ids=None) -> HeadOutput:  # fmt: skip
        c = self.config
        _, enc = self.encode(input_ids, attention_mask, inputs_embeds, deterministic, output_hidden_states,
                          output_attentions, token_type_ids)  # fmt: skip
        if c.family in ("roberta", "electra"):
            head = ClassificationHead(c, self.classifier_dropout, self.dtype, name="classifier")
            logits = head(enc.last_hidden_state, deterministic)
        else:
            logits = self.pooled_classifier(enc, c.num_labels, deterministic)
        return _with_encoder(enc, logits=logits)


class DistilBertForTokenClassification(_Head):
    """dropout(config.dropout; BERT: classifier_dropout) → `classifier` per token ([B, T, num_labels])."""

    @nn.compact
    def __call__(self, input_ids=None, attention_mask=None, *, inputs_embeds=None, deterministic=True,
                 output_hidden_states=False, output_attentions=False, token_type_ids=None) -> HeadOutput:  # fmt: skip
        c = self.config
        _, enc = self.encode(input_ids, attention_mask, inputs_embeds, deterministic, output_hidden_states,
                          output_attentions, token_type_ids)  # fmt: skip
        h = Dropout(self.classifier_dropout)(enc.last_hidden_state, deterministic=deterministic)
        logits = dense(c, c.num_labels, "classifier", self.dtype)(h)
        return _with_encoder(enc, logits=logits)


class DistilBertForQuestionAnswering(_Head):
    """dropout(qa_dropout; none for BERT) → `qa_outputs` → start / end logits ([B, T] each). Needs num_labels == 2."""

    @nn.compact
    def __call__(self, input_ids=None, attention_mask=None, *, inputs_embeds=None, deterministic=True,
                 output_hidden_states=False, output_attentions=False, token_type_ids=None) -> HeadOutput:  # fmt: skip
        c = self.config
        if c.num_labels != 2:
            raise ValueError(f"question answering needs config.num_labels == 2 (start, end), got {c.num_labels}")
        _, enc = self.encode(input_ids, attention_mask, inputs_embeds, deterministic, output_hidden_states,
                          output_attentions, token_type_ids)  # fmt: skip
        h = Dropout(0.0 if c.is_bert else c.qa_dropout)(enc.last_hidden_state, deterministic=deterministic)
        logits = dense(c, 2, "qa_outputs", self.dtype)(h)
        return _with_encoder(enc, logits=None, start_logits=logits[..., 0], end_logits=logits[..., 1])


class DistilBertForMultipleChoice(_Head):
    """Inputs [B, C, T]; each choice's hidden[:, 0] → `pre_classifier` → ReLU → dropout → `classifier` → [B, C]
    (BERT, RoBERTa family: each choice's pooler → dropout → `classifier`; ELECTRA: hidden[:, 0] →
    `sequence_summary.summary` → GELU → dropout → `classifier`)."""

    pooler_families = ("bert", "roberta")

    @nn.compact
    def __call__(self, input_ids=None, attention_mask=None, *, inputs_embeds=None, deterministic=True,
                 output_hidden_states=False, output_attentions=False, token_type_ids=None) -> HeadOutput:  # fmt: skip
        source = input_ids if input_ids is not None else inputs_embeds
        if source is None or source.ndim < 3 or (input_ids is None and source.ndim != 4):
            got = None if source is None else source.shape
            raise ValueError(f"multiple choice expects input_ids [batch, num_choices, seq_len], got shape {got}")
        batch, choices = source.shape[:2]
        flat = lambda a: None if a is None else a.reshape((batch * choices,) + a.shape[2:])  # noqa: E731
        c = self.config
        _, enc = self.encode(flat(input_ids), flat(attention_mask), flat(inputs_embeds), deterministic,
                          output_hidden_states, output_attentions, flat(token_type_ids))  # fmt: skip
        if c.family == "electra":
            h = SequenceSummary(c, self.dtype, name="sequence_summary")(enc.last_hidden_state)
            h = Dropout(c.dropout)(h, deterministic=deterministic)
            logits = dense(c, 1, "classifier", self.dtype)(h)
        else:  # RoBERTa's multiple choice drops out with hidden_dropout_prob, BERT's with classifier_dropout
            logits = self.pooled_classifier(enc, 1, deterministic, c.dropout if c.family == "roberta" else None)
        return _with_encoder(enc, logits=logits.reshape(batch, choices))


class ElectraForPreTraining(_Head):
    """ELECTRA's replaced-token discriminator: `discriminator_predictions.dense` → activation →
    `discriminator_predictions.dense_prediction` → one logit per token ([B, T]; > 0: "replaced")."""

    @nn.compact
    def __call__(self, input_ids=None, attention_mask=None, *, inputs_embeds=None, deterministic=True,
                 output_hidden_states=False, output_attentions=False, token_type_ids=None) -> HeadOutput:  # fmt: skip
        c = self.config
        if c.family != "electra":
            raise ValueError(f"the discriminator head is ELECTRA's; this config has model_type={c.model_type!r}")
        _, enc = self.encode(input_ids, attention_mask, inputs_embeds, deterministic, output_hidden_states,
                             output_attentions, token_type_ids)  # fmt: skip
        logits = DiscriminatorPredictions(c, self.dtype, name="discriminator_predictions")(enc.last_hidden_state)
        return _with_encoder(enc, logits=logits)


class SequenceSummary(nn.Module):
    """ELECTRA's sequence summary: hidden[:, 0] [N, D] → `summary` → GELU → [N, D]."""

    config: DistilBertConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, hidden: Array) -> Array:
        return activation_fn("gelu")(dense(self.config, self.config.dim, "summary", self.dtype)(hidden[:, 0]))


class DiscriminatorPredictions(nn.Module):
    """hidden [B, T, D] → `dense` → activation → `dense_prediction` → [B, T]."""

    config: DistilBertConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, hidden: Array) -> Array:
        c = self.config
        h = activation_fn(c.activation)(dense(c, c.dim, "dense", self.dtype)(hidden))
        return dense(c, 1, "dense_prediction", self.dtype)(h)[..., 0]


# head name -> (module class, HF DistilBERT architecture class name): the heads every family has
HEADS: dict[str, tuple[type[nn.Module], str]] = {
    "base": (DistilBertModel, "DistilBertModel"),
    "masked_lm": (DistilBertForMaskedLM, "DistilBertForMaskedLM"),
    "sequence_classification": (DistilBertForSequenceClassification, "DistilBertForSequenceClassification"),
    "token_classification": (DistilBertForTokenClassification, "DistilBertForTokenClassification"),
    "question_answering": (DistilBertForQuestionAnswering, "DistilBertForQuestionAnswering"),
    "multiple_choice": (DistilBertForMultipleChoice, "DistilBertForMultipleChoice"),
}


# heads only some families have: head name -> (module class, HF class name, the families that have it)
FAMILY_HEADS: dict[str, tuple[type[nn.Module], str, tuple[str, ...]]] = {
    "discriminator": (ElectraForPreTraining, "ElectraForPreTraining", ("electra",)),
}
ALL_HEADS: tuple[str, ...] = (*HEADS, *FAMILY_HEADS)


def heads_of(family: str) -> list[str]:
    """The head names a family ("distilbert", "bert", "roberta", "electra") has."""
    return [*HEADS, *(name for name, (_, _, families) in FAMILY_HEADS.items() if family in families)]


def head_class(head: str) -> type[nn.Module]:
    """The Linen module class for a head name (see `HEADS`, `FAMILY_HEADS`); a clear error for unknown names."""
    if head in FAMILY_HEADS:
        return FAMILY_HEADS[head][0]
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; expected one of {sorted(ALL_HEADS)}")
    return HEADS[head][0]


def architecture_of(head: str, config: DistilBertConfig) -> str:
    """The HF class name of `head` for the config's model_type (`DistilBertForMaskedLM`, `XLMRobertaForMaskedLM`, …)."""
    if head in FAMILY_HEADS:
        return FAMILY_HEADS[head][1]
    return config.class_prefix + HEADS[head][1][len("DistilBert"):]


def head_of_architecture(architecture: str) -> str | None:
    """The head name for an HF architecture class name (any supported model_type), or None if there is none."""
    if architecture == "BertForPreTraining":  # MLM + next-sentence heads: the MLM part loads
        return "masked_lm"
    for name, (_, arch, _) in FAMILY_HEADS.items():
        if architecture == arch:
            return name
    for prefix in sorted(CLASS_PREFIXES.values(), key=len, reverse=True):  # XLMRoberta… before Roberta…
        if architecture.startswith(prefix):
            suffix = architecture[len(prefix):]
            return next((name for name, (_, arch) in HEADS.items() if arch[len("DistilBert"):] == suffix), None)
    return None


def build_model(config: DistilBertConfig, head: str = "base", dtype: Dtype = jnp.float32, *,
                add_pooling_layer: bool = True) -> nn.Module:  # fmt: skip
    """The Linen module for `head` ("base", "masked_lm", "sequence_classification", …).
    `add_pooling_layer=False` builds a bare BERT model without its pooler (a checkpoint that has none)."""
    if head == "base":
        return DistilBertModel(config, dtype, add_pooling_layer=add_pooling_layer)
    if head in FAMILY_HEADS and config.family not in FAMILY_HEADS[head][2]:
        raise ValueError(f"the {head} head is {'/'.join(FAMILY_HEADS[head][2])}'s; this config has "
                         f"model_type={config.model_type!r} (its heads: {heads_of(config.family)})")  # fmt: skip
    return head_class(head)(config, dtype)


def init_params(model: nn.Module, rng: Array | int = 0, seq_len: int = 8) -> dict:
    """Random-init params `{"params": …}` for `model` (dummy [1, seq_len] / [1, 2, seq_len] input)."""
    if isinstance(rng, int):
        rng = jax.random.PRNGKey(rng)
    shape = (1, 2, seq_len) if isinstance(model, DistilBertForMultipleChoice) else (1, seq_len)
    ids = jnp.zeros(shape, jnp.int32)
    return jax.jit(model.init)(rng, ids, jnp.ones(shape, jnp.int32))
