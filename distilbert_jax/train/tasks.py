"""Tasks: what a head's outputs and a batch turn into — additive loss/metric sums, the denominators
(computed from the batch alone, so accumulation over micro-batches is exact), the objective and the
reported metrics."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from .config import TASK_HEADS, DistillConfig, TrainConfig
from .entities import entity_scores, entity_sums, iob2_tags
from .losses import cosine_distance_sum, kd_kl_sum, labelled_ce_sums, macro_f1, valid_count

Array = jax.Array
Batch = dict[str, Array]
Sums = dict[str, Array]


def _div(a: Array, b: Array) -> Array:
    return a / jnp.maximum(b, 1.0)


@dataclasses.dataclass(frozen=True)
class Task:
    """A training objective for one head (hashable: a static part of the jitted step).

    `name`: "mlm", "classify", "token-classify" or "qa"; `num_labels` turns on macro-F1;
    `distill` adds the soft-target (and optional cosine) terms against a teacher's outputs;
    `max_predictions` (MLM) computes vocabulary logits only at up to that many masked tokens per row;
    `entity_tags` (token classification with IOB2 label names, see `entities.iob2_tags`) adds strict
    entity-level precision / recall / F1."""

    name: str
    num_labels: int | None = None
    distill: DistillConfig | None = None
    max_predictions: int | None = None
    entity_tags: tuple[tuple[int, int], ...] | None = None

    @property
    def head(self) -> str:
        return TASK_HEADS[self.name]

    @property
    def uses_cosine(self) -> bool:
        return self.distill is not None and self.distill.cosine_weight > 0

    @property
    def label_keys(self) -> tuple[str, ...]:
        return ("start_positions", "end_positions") if self.name == "qa" else ("labels",)

    def denominators(self, batch: Batch) -> Sums:
        """{"count": labelled positions, "tokens": attended tokens} of a batch ([B, T] arrays -> [])."""
        return {
            "count": valid_count(batch[self.label_keys[0]]),
            "tokens": jnp.sum(batch["attention_mask"]).astype(jnp.float32),
        }

    def sums(self, out: Any, batch: Batch, teacher_out: Any = None) -> Sums:
        """Additive loss / metric sums of one (micro-)batch from the head output(s)."""
        if self.name == "qa":
            s = labelled_ce_sums(out.start_logits, batch["start_positions"])
            e = labelled_ce_sums(out.end_logits, batch["end_positions"])
            both = (jnp.argmax(out.start_logits, -1) == batch["start_positions"]) & (
                jnp.argmax(out.end_logits, -1) == batch["end_positions"]
            )
            return {"ce": s["ce"] + e["ce"], "start_correct": s["correct"], "end_correct": e["correct"],
                    "exact": jnp.sum(both).astype(jnp.float32)}  # fmt: skip
        labels = batch["labels"]
        sums = labelled_ce_sums(out.logits, labels, self.num_labels)
        if self.entity_tags is not None:
            sums.update(entity_sums(jnp.argmax(out.logits, -1), labels, self.entity_tags))
        if self.distill is not None:
            weight = (labels != -100).astype(jnp.float32)
            sums["kd"] = kd_kl_sum(out.logits, teacher_out.logits, self.distill.temperature, weight)
            if self.uses_cosine:
                mask = batch["attention_mask"].astype(jnp.float32)
                sums["cos"] = cosine_distance_sum(out.last_hidden_state, teacher_out.last_hidden_state, mask)
        return sums

    def objective(self, sums: Sums, denoms: Sums) -> Array:
        """The scalar loss: linear in `sums`, divided by the whole batch's denominators."""
        if self.name == "qa":
            return _div(sums["ce"], 2.0 * denoms["count"])
        hard = _div(sums["ce"], denoms["count"])
        if self.distill is None:
            return hard
        d = self.distill
        loss = d.alpha * _div(sums["kd"], denoms["count"]) + (1.0 - d.alpha) * hard
        if self.uses_cosine:
            loss = loss + d.cosine_weight * _div(sums["cos"], denoms["tokens"])
        return loss

    def metrics(self, sums: Sums, denoms: Sums) -> dict[str, Array]:
        """Reported metrics: loss and accuracy; perplexity (MLM), macro-F1 (with labels), KD terms."""
        n = denoms["count"]
        out = {"loss": self.objective(sums, denoms)}
        if self.name == "qa":
            out.update(start_accuracy=_div(sums["start_correct"], n), end_accuracy=_div(sums["end_correct"], n),
                       exact_match=_div(sums["exact"], n))  # fmt: skip
            return out
        out["accuracy"] = _div(sums["correct"], n)
        ce = _div(sums["ce"], n)
        if self.name == "mlm":
            out["perplexity"] = jnp.exp(ce)
        if "tp" in sums:
            out["f1"] = macro_f1(sums["tp"], sums["fp"], sums["fn"])
        if "entity_tp" in sums:
            out.update(entity_scores(sums["entity_tp"], sums["entity_pred"], sums["entity_gold"]))
        if self.distill is not None:
            out.update(ce=ce, kd=_div(sums["kd"], n))
            if "cos" in sums:
                out["cos"] = _div(sums["cos"], denoms["tokens"])
        return out


def task_for(cfg: TrainConfig, num_labels: int, label_names: Sequence[str] | None = None) -> Task:
    """The `Task` of a training config (`num_labels` of the model, for classification F1; the data's
    `label_names`, for entity-level F1 when they are IOB2 tags)."""
    name = cfg.base_task
    f1_labels = num_labels if name in ("classify", "token-classify") else None
    tags = iob2_tags(label_names) if name == "token-classify" else None
    return Task(name, f1_labels, cfg.distill if cfg.task == "distill" else None, mlm_max_predictions(cfg), tags)


def mlm_max_predictions(cfg: TrainConfig) -> int | None:
    """Masked tokens per row the MLM loss is computed on without the full projection: twice the expected
    count (rounded up to 8), so a row rarely holds more (then the step falls back to all positions)."""
    if cfg.base_task != "mlm":
        return None
    seq_len = cfg.data.seq_len
    m = -(-int(2 * cfg.data.mask_prob * seq_len) // 8) * 8 + 8
    return m if m < seq_len else None
