"""What a SuperNet step minimises at one arch: masked-LM cross-entropy, or distillation from a teacher
with terms that do not depend on the student's width (so every arch of the space learns from the same
targets):

- `kd`: KL(teacher ‖ student) of the masked-LM logits at the masked positions, temperature T (T²-scaled);
- `attn`: KL of the last layer's attention distributions averaged over heads ([B, T, T]: any head count);
- `rel`: KL of the last layer's hidden-state self-relations softmax(h hᵀ / √d) ([B, T, T]: any width).

All as additive sums over the batch (the training stack's convention), divided by the batch's masked
token count (`kd`, `ce`) or attended token count (`attn`, `rel`)."""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from distilbert_jax.train.losses import kd_kl_sum, labelled_ce_sums
from distilbert_jax.train.step import mlm_positions

from .supernet import ArchArrays, Bucket, SuperNet

Array = jax.Array
Sums = dict[str, Array]
OBJECTIVES = ("mlm", "distill")


def _div(a: Array, b: Array) -> Array:
    return a / jnp.maximum(b, 1.0)


def _row_kl_sum(p_teacher: Array, p_student: Array, rows: Array) -> Array:
    # p_* [B, T, T] distributions over the last axis; rows [B, T] weights of the query rows -> []
    safe = jnp.where(p_teacher > 0, p_teacher, 1.0)
    kl = jnp.where(p_teacher > 0, p_teacher * (jnp.log(safe) - jnp.log(jnp.maximum(p_student, 1e-30))), 0.0)
    return jnp.sum(kl.sum(-1) * rows)


def relation(hidden: Array, width: Array, mask: Array) -> Array:
    """softmax(h hᵀ / √width) over the attended keys: hidden [B, T, D] (zero past `width`) -> [B, T, T]."""
    scores = jnp.einsum("bqd,bkd->bqk", hidden, hidden) * jax.lax.rsqrt(jnp.asarray(width, jnp.float32))
    scores = jnp.where(mask[:, None, :], scores, jnp.finfo(jnp.float32).min)
    return jax.nn.softmax(scores, axis=-1) * mask[:, None, :]


@dataclasses.dataclass(frozen=True)
class Objective:
    """`name`: "mlm" or "distill"; the distillation weights and temperature; `max_predictions`: the
    vocabulary projection is computed at up to that many masked tokens per row (None: all tokens)."""

    name: str = "mlm"
    max_predictions: int | None = None
    temperature: float = 1.0
    logits_weight: float = 1.0
    attention_weight: float = 1.0
    relation_weight: float = 1.0
    hard_weight: float = 0.0  # the masked-LM cross-entropy's weight in distillation

    @property
    def distills(self) -> bool:
        return self.name == "distill"

    def denominators(self, batch: dict[str, Array]) -> Sums:
        """{"count": masked tokens, "tokens": attended tokens} of a batch."""
        return {"count": jnp.sum(batch["labels"] != -100).astype(jnp.float32),
                "tokens": jnp.sum(batch["attention_mask"]).astype(jnp.float32)}  # fmt: skip

    def sums(self, supernet: SuperNet, params: Any, arch: ArchArrays, bucket: Bucket, batch: dict[str, Array],
             rng: Array | None, teacher: Any = None) -> Sums:  # fmt: skip
        """Additive sums at one arch. `teacher`: the teacher's output (logits [B, T, V], hidden_states,
        attentions — only what the weights use) for distillation."""
        labels, mask = batch["labels"], batch["attention_mask"].astype(bool)
        distill = self.distills

        # the encoder once; the head (and the loss) at the masked positions, or everywhere if a row overflows
        out = supernet.encode(params, arch, bucket, batch["input_ids"], batch["attention_mask"], rng=rng,
                              output_attention=distill and self.attention_weight > 0)  # fmt: skip

        def run(positions: Array | None) -> Sums:
            logits = supernet.mlm_logits(params, arch, bucket, out.last_hidden_state, positions)
            picked = labels if positions is None else jnp.take_along_axis(labels, positions, axis=1)
            sums = labelled_ce_sums(logits, picked)
            if distill:
                t_logits = teacher.logits
                if positions is not None:
                    t_logits = jnp.take_along_axis(t_logits, positions[..., None], axis=1)
                weight = (picked != -100).astype(jnp.float32)
                sums["kd"] = kd_kl_sum(logits, t_logits, self.temperature, weight)
                rows = mask.astype(jnp.float32)
                if self.attention_weight > 0:
                    t_attn = teacher.attentions[-1].mean(axis=1)  # [B, T, T]
                    last_heads = jnp.take(arch.heads, arch.layers - 1)  # the last layer's head count
                    s_attn = out.attention.sum(axis=1) / last_heads.astype(jnp.float32)
                    sums["attn"] = _row_kl_sum(t_attn, s_attn, rows)
                if self.relation_weight > 0:
                    t_hidden = teacher.hidden_states[-1]
                    sums["rel"] = _row_kl_sum(relation(t_hidden, t_hidden.shape[-1], mask),
                                              relation(out.last_hidden_state, arch.hidden, mask), rows)  # fmt: skip
            return sums

        if self.max_predictions is None:
            return run(None)
        positions, _ = mlm_positions(labels, self.max_predictions)
        overflow = jnp.any(jnp.sum(labels != -100, axis=1) > self.max_predictions)
        return jax.lax.cond(overflow, lambda: run(None), lambda: run(positions))

    def objective(self, sums: Sums, denoms: Sums) -> Array:
        """The scalar loss (linear in `sums`)."""
        ce = _div(sums["ce"], denoms["count"])
        if not self.distills:
            return ce
        terms = self.hard_weight * ce + self.logits_weight * _div(sums["kd"], denoms["count"])
        for key, weight in (("attn", self.attention_weight), ("rel", self.relation_weight)):
            if key in sums:  # a term of weight 0 is not computed
                terms = terms + weight * _div(sums[key], denoms["tokens"])
        return terms

    def metrics(self, sums: Sums, denoms: Sums) -> dict[str, Array]:
        """loss, accuracy, perplexity (and the distillation terms)."""
        ce = _div(sums["ce"], denoms["count"])
        out = {"loss": self.objective(sums, denoms), "accuracy": _div(sums["correct"], denoms["count"]),
               "perplexity": jnp.exp(ce)}  # fmt: skip
        if self.distills:
            out.update(ce=ce, kd=_div(sums["kd"], denoms["count"]))
            out.update({k: _div(sums[k], denoms["tokens"]) for k in ("attn", "rel") if k in sums})
        return out


@flax.struct.dataclass
class LogitsTeacher:
    """A teacher output that holds logits only: in-place distillation's largest arch ([B, T, V])."""

    logits: Array


def inplace_student(objective: Objective) -> Objective:
    """What the other archs minimise under in-place distillation (BigNAS): KL to the largest arch's
    masked-LM logits only, at the objective's temperature."""
    return Objective("distill", objective.max_predictions, objective.temperature, logits_weight=1.0,
                     attention_weight=0.0, relation_weight=0.0, hard_weight=0.0)  # fmt: skip
