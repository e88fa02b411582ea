"""Task heads on top of `DistilBertModel`, named as the HF `DistilBertFor…` classes' keys.

The same classes run BERT configs (`model_type="bert"`) with BERT's head numerics: the classifiers
sit on the pooler (dense + tanh) with `classifier_dropout`, question answering has no dropout, and the
masked-LM head (transform dense → activation → LayerNorm → tied decoder + bias) is DistilBERT's."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from .config import DistilBertConfig
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

    uses_pooler = False  # BERT: does this head read the pooler (as transformers' BertFor… does)?

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

    def pooled_classifier(self, enc: EncoderOutput, features: int, deterministic: bool) -> Array:
        # DistilBERT: hidden[:, 0] -> pre_classifier -> ReLU -> dropout(seq_classif_dropout) -> classifier
        # BERT: pooler_output -> dropout(classifier_dropout) -> classifier;  -> [N, features]
        c = self.config
        if c.is_bert:
            h = Dropout(self.classifier_dropout)(enc.pooler_output, deterministic=deterministic)
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
        h = activation_fn(c.activation)(dense(c, c.dim, "vocab_transform", self.dtype)(h))
        h = layer_norm("vocab_layer_norm", c.layer_norm_eps)(h)
        bias = self.param("vocab_projector", lambda _: {"bias": jnp.zeros((c.vocab_size,), jnp.float32)})["bias"]
        words, words_low = encoder.word_matrix()  # [V, D]
        logits = matmul(h, words, self.dtype, transpose_w=True, w_low=words_low, bias=bias)
        return _with_encoder(enc, logits=logits)


class DistilBertForSequenceClassification(_Head):
    """hidden[:, 0] → `pre_classifier` → ReLU → dropout → `classifier` ([B, num_labels]);
    BERT: pooler → dropout → `classifier`."""

    uses_pooler = True

    @nn.compact
    def __call__(self, input_ids=None, attention_mask=None, *, inputs_embeds=None, deterministic=True,
                 output_hidden_states=False, output_attentions=False, token_type_ids=None) -> HeadOutput:  # fmt: skip
        _, enc = self.encode(input_ids, attention_mask, inputs_embeds, deterministic, output_hidden_states,
                          output_attentions, token_type_ids)  # fmt: skip
        logits = self.pooled_classifier(enc, self.config.num_labels, deterministic)
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
    (BERT: each choice's pooler → dropout → `classifier`)."""

    uses_pooler = True

    @nn.compact
    def __call__(self, input_ids=None, attention_mask=None, *, inputs_embeds=None, deterministic=True,
                 output_hidden_states=False, output_attentions=False, token_type_ids=None) -> HeadOutput:  # fmt: skip
        source = input_ids if input_ids is not None else inputs_embeds
        if source is None or source.ndim < 3 or (input_ids is None and source.ndim != 4):
            got = None if source is None else source.shape
            raise ValueError(f"multiple choice expects input_ids [batch, num_choices, seq_len], got shape {got}")
        batch, choices = source.shape[:2]
        flat = lambda a: None if a is None else a.reshape((batch * choices,) + a.shape[2:])  # noqa: E731
        _, enc = self.encode(flat(input_ids), flat(attention_mask), flat(inputs_embeds), deterministic,
                          output_hidden_states, output_attentions, flat(token_type_ids))  # fmt: skip
        logits = self.pooled_classifier(enc, 1, deterministic)
        return _with_encoder(enc, logits=logits.reshape(batch, choices))


# head name -> (module class, HF architecture class name)
HEADS: dict[str, tuple[type[nn.Module], str]] = {
    "base": (DistilBertModel, "DistilBertModel"),
    "masked_lm": (DistilBertForMaskedLM, "DistilBertForMaskedLM"),
    "sequence_classification": (DistilBertForSequenceClassification, "DistilBertForSequenceClassification"),
    "token_classification": (DistilBertForTokenClassification, "DistilBertForTokenClassification"),
    "question_answering": (DistilBertForQuestionAnswering, "DistilBertForQuestionAnswering"),
    "multiple_choice": (DistilBertForMultipleChoice, "DistilBertForMultipleChoice"),
}


def head_class(head: str) -> type[nn.Module]:
    """The Linen module class for a head name (see `HEADS`); a clear error for unknown names."""
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; expected one of {sorted(HEADS)}")
    return HEADS[head][0]


def architecture_of(head: str, config: DistilBertConfig) -> str:
    """The HF class name of `head` for the config's architecture (`DistilBertForMaskedLM`, `BertForMaskedLM`, …)."""
    arch = HEADS[head][1]
    return "Bert" + arch[len("DistilBert"):] if config.is_bert else arch


def head_of_architecture(architecture: str) -> str | None:
    """The head name for an HF architecture class name (DistilBERT or BERT), or None if there is none."""
    if architecture == "BertForPreTraining":  # MLM + next-sentence heads: the MLM part loads
        return "masked_lm"
    for name, (_, arch) in HEADS.items():
        if architecture in (arch, "Bert" + arch[len("DistilBert"):]):
            return name
    return None


def build_model(config: DistilBertConfig, head: str = "base", dtype: Dtype = jnp.float32, *,
                add_pooling_layer: bool = True) -> nn.Module:  # fmt: skip
    """The Linen module for `head` ("base", "masked_lm", "sequence_classification", …).
    `add_pooling_layer=False` builds a bare BERT model without its pooler (a checkpoint that has none)."""
    if head == "base":
        return DistilBertModel(config, dtype, add_pooling_layer=add_pooling_layer)
    return head_class(head)(config, dtype)


def init_params(model: nn.Module, rng: Array | int = 0, seq_len: int = 8) -> dict:
    """Random-init params `{"params": …}` for `model` (dummy [1, seq_len] / [1, 2, seq_len] input)."""
    if isinstance(rng, int):
        rng = jax.random.PRNGKey(rng)
    shape = (1, 2, seq_len) if isinstance(model, DistilBertForMultipleChoice) else (1, seq_len)
    ids = jnp.zeros(shape, jnp.int32)
    return jax.jit(model.init)(rng, ids, jnp.ones(shape, jnp.int32))
