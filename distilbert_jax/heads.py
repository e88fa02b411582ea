"""Task heads on top of `DistilBertModel`, named as the HF `DistilBertFor…` classes' keys."""

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

    def encode(self, input_ids, attention_mask, inputs_embeds, deterministic, output_hidden_states,
               output_attentions) -> tuple[DistilBertModel, EncoderOutput]:  # fmt: skip
        """The "distilbert" encoder submodule and its outputs."""
        encoder = DistilBertModel(self.config, self.dtype, name="distilbert")
        return encoder, encoder(
            input_ids,
            attention_mask,
            inputs_embeds=inputs_embeds,
            deterministic=deterministic,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
        )

    def pooled_classifier(self, cls: Array, features: int, deterministic: bool) -> Array:
        # cls [N, D] -> pre_classifier -> ReLU -> dropout(seq_classif_dropout) -> classifier [N, features]
        c = self.config
        h = nn.relu(dense(c, c.dim, "pre_classifier", self.dtype)(cls))
        h = Dropout(c.seq_classif_dropout)(h, deterministic=deterministic)
        return dense(c, features, "classifier", self.dtype)(h)


class DistilBertForMaskedLM(_Head):
    """`vocab_transform` → activation → `vocab_layer_norm` → `vocab_projector` (weight tied to word embeddings).

    `masked_positions` [B, M] (token indices) restricts the vocabulary projection to those positions:
    logits are then [B, M, V] — the same numbers as the full [B, T, V] gathered at the positions, for a
    fraction of the cost (MLM training needs only the masked tokens)."""

    @nn.compact
    def __call__(self, input_ids=None, attention_mask=None, *, inputs_embeds=None, deterministic=True,
                 output_hidden_states=False, output_attentions=False, masked_positions=None) -> HeadOutput:  # fmt: skip
        c = self.config
        encoder, enc = self.encode(input_ids, attention_mask, inputs_embeds, deterministic, output_hidden_states,
                                   output_attentions)  # fmt: skip
        h = enc.last_hidden_state  # [B, T, D]
        if masked_positions is not None:
            if masked_positions.ndim != 2 or masked_positions.shape[0] != h.shape[0]:
                raise ValueError(f"masked_positions must be [batch={h.shape[0]}, M], got {masked_positions.shape}")
            h = jnp.take_along_axis(h, masked_positions[..., None].astype(jnp.int32), axis=1)  # [B, M, D]
        h = activation_fn(c.activation)(dense(c, c.dim, "vocab_transform", self.dtype)(h))
        h = layer_norm("vocab_layer_norm")(h)
        bias = self.param("vocab_projector", lambda _: {"bias": jnp.zeros((c.vocab_size,), jnp.float32)})["bias"]
        words = encoder.word_matrix()  # [V, D]
        logits = matmul(h, words, self.dtype, transpose_w=True) + bias
        return _with_encoder(enc, logits=logits)


class DistilBertForSequenceClassification(_Head):
    """hidden[:, 0] → `pre_classifier` → ReLU → dropout → `classifier` ([B, num_labels])."""

    @nn.compact
    def __call__(self, input_ids=None, attention_mask=None, *, inputs_embeds=None, deterministic=True,
                 output_hidden_states=False, output_attentions=False) -> HeadOutput:  # fmt: skip
        _, enc = self.encode(input_ids, attention_mask, inputs_embeds, deterministic, output_hidden_states,
                          output_attentions)  # fmt: skip
        logits = self.pooled_classifier(enc.last_hidden_state[:, 0], self.config.num_labels, deterministic)
        return _with_encoder(enc, logits=logits)


class DistilBertForTokenClassification(_Head):
    """dropout(config.dropout) → `classifier` per token ([B, T, num_labels])."""

    @nn.compact
    def __call__(self, input_ids=None, attention_mask=None, *, inputs_embeds=None, deterministic=True,
                 output_hidden_states=False, output_attentions=False) -> HeadOutput:  # fmt: skip
        c = self.config
        _, enc = self.encode(input_ids, attention_mask, inputs_embeds, deterministic, output_hidden_states,
                          output_attentions)  # fmt: skip
        h = Dropout(c.dropout)(enc.last_hidden_state, deterministic=deterministic)
        logits = dense(c, c.num_labels, "classifier", self.dtype)(h)
        return _with_encoder(enc, logits=logits)


class DistilBertForQuestionAnswering(_Head):
    """dropout(qa_dropout) → `qa_outputs` → start / end logits ([B, T] each). Needs num_labels == 2."""

    @nn.compact
    def __call__(self, input_ids=None, attention_mask=None, *, inputs_embeds=None, deterministic=True,
                 output_hidden_states=False, output_attentions=False) -> HeadOutput:  # fmt: skip
        c = self.config
        if c.num_labels != 2:
            raise ValueError(f"question answering needs config.num_labels == 2 (start, end), got {c.num_labels}")
        _, enc = self.encode(input_ids, attention_mask, inputs_embeds, deterministic, output_hidden_states,
                          output_attentions)  # fmt: skip
        h = Dropout(c.qa_dropout)(enc.last_hidden_state, deterministic=deterministic)
        logits = dense(c, 2, "qa_outputs", self.dtype)(h)
        return _with_encoder(enc, logits=None, start_logits=logits[..., 0], end_logits=logits[..., 1])


class DistilBertForMultipleChoice(_Head):
    """Inputs [B, C, T]; each choice's hidden[:, 0] → `pre_classifier` → ReLU → dropout → `classifier` → [B, C]."""

    @nn.compact
    def __call__(self, input_ids=None, attention_mask=None, *, inputs_embeds=None, deterministic=True,
                 output_hidden_states=False, output_attentions=False) -> HeadOutput:  # fmt: skip
        source = input_ids if input_ids is not None else inputs_embeds
        if source is None or source.ndim < 3 or (input_ids is None and source.ndim != 4):
            got = None if source is None else source.shape
            raise ValueError(f"multiple choice expects input_ids [batch, num_choices, seq_len], got shape {got}")
        batch, choices = source.shape[:2]
        flat = lambda a: None if a is None else a.reshape((batch * choices,) + a.shape[2:])  # noqa: E731
        _, enc = self.encode(flat(input_ids), flat(attention_mask), flat(inputs_embeds), deterministic,
                          output_hidden_states, output_attentions)  # fmt: skip
        logits = self.pooled_classifier(enc.last_hidden_state[:, 0], 1, deterministic)
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


def head_of_architecture(architecture: str) -> str | None:
    """The head name for an HF architecture class name, or None if it is not a DistilBERT class."""
    for name, (_, arch) in HEADS.items():
        if arch == architecture:
            return name
    return None


def build_model(config: DistilBertConfig, head: str = "base", dtype: Dtype = jnp.float32) -> nn.Module:
    """The Linen module for `head` ("base", "masked_lm", "sequence_classification", …)."""
    return head_class(head)(config, dtype)


def init_params(model: nn.Module, rng: Array | int = 0, seq_len: int = 8) -> dict:
    """Random-init params `{"params": …}` for `model` (dummy [1, seq_len] / [1, 2, seq_len] input)."""
    if isinstance(rng, int):
        rng = jax.random.PRNGKey(rng)
    shape = (1, 2, seq_len) if isinstance(model, DistilBertForMultipleChoice) else (1, seq_len)
    ids = jnp.zeros(shape, jnp.int32)
    return jax.jit(model.init)(rng, ids, jnp.ones(shape, jnp.int32))
