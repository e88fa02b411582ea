"""Loss and metric pieces, all as additive sums (so micro-batches, devices and eval batches combine
exactly) plus the denominators to divide them by. Labels equal to `IGNORE` (-100) are left out."""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array
IGNORE = -100


def labelled_ce_sums(logits: Array, labels: Array, num_classes_for_f1: int | None = None) -> dict[str, Array]:
    """Cross-entropy sums over the non-ignored labels.

    logits [..., C] float, labels [...] int (IGNORE skipped) -> {"ce": [], "correct": []} and, with `num_classes_for_f1`, per-class {"tp", "fp", "fn": [C]} for macro-F1."""
    valid = labels != IGNORE
    safe = jnp.where(valid, labels, 0)
    logits = logits.astype(jnp.float32)
    # softmax cross-entropy written out so its gradient (softmax - one-hot) is one elementwise pass
    # that fuses with the cast feeding the backward matmuls; optax's picks the label's logit with a
    # gather, whose gradient is a scatter over all [N, C] logits
    top = jnp.max(logits, axis=-1)
    shift = jax.lax.stop_gradient(jnp.where(jnp.isfinite(top), top, 0.0))  # as jax.nn.logsumexp
    lse = shift + jnp.log(jnp.sum(jnp.exp(logits - shift[..., None]), axis=-1))
    label_logit = jnp.sum(jnp.where(jnp.arange(logits.shape[-1]) == safe[..., None], logits, 0.0), axis=-1)
    ce = lse - label_logit
    weight = valid.astype(jnp.float32)
    out = {
        "ce": jnp.sum(ce * weight),
        # correct = the label's logit is the row's maximum (a tie counts as correct): argmax's answer
        # without a tie, from the max already taken; XLA:CPU's argmax over 30522 words is ~20x slower
        "correct": jnp.sum((label_logit >= top) * weight),
    }
    if num_classes_for_f1:
        pred = jnp.argmax(logits, axis=-1)
        p = jax.nn.one_hot(pred, num_classes_for_f1) * weight[..., None]
        t = jax.nn.one_hot(safe, num_classes_for_f1) * weight[..., None]
        axes = tuple(range(p.ndim - 1))
        out["tp"] = jnp.sum(p * t, axis=axes)
        out["fp"] = jnp.sum(p * (1 - t), axis=axes)
        out["fn"] = jnp.sum((1 - p) * t, axis=axes)
    return out


def valid_count(labels: Array) -> Array:
    """How many labels are not IGNORE (labels [...] -> [] float32)."""
    return jnp.sum(labels != IGNORE).astype(jnp.float32)


def macro_f1(tp: Array, fp: Array, fn: Array) -> Array:
    """Macro-averaged F1 over the classes that occur in labels or predictions (tp, fp, fn: [C])."""
    denom = 2 * tp + fp + fn
    f1 = jnp.where(denom > 0, 2 * tp / jnp.maximum(denom, 1), 0.0)
    present = denom > 0
    return jnp.sum(f1) / jnp.maximum(jnp.sum(present), 1)


def kd_kl_sum(student_logits: Array, teacher_logits: Array, temperature: float, weight: Array) -> Array:
    """Σ over positions of T² · KL(softmax(teacher/T) ‖ softmax(student/T)).

    student_logits, teacher_logits [..., C]; weight [...] (0/1 which positions count) -> []"""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"teacher logits {teacher_logits.shape} and student logits {student_logits.shape} differ: the teacher "
            "and student must share the vocabulary / label set"
        )
    t = temperature
    log_p_t = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / t, axis=-1)
    log_p_s = jax.nn.log_softmax(student_logits.astype(jnp.float32) / t, axis=-1)
    kl = jnp.sum(jnp.exp(log_p_t) * (log_p_t - log_p_s), axis=-1)
    return jnp.sum(kl * weight) * t * t


def cosine_distance_sum(student_hidden: Array, teacher_hidden: Array, weight: Array) -> Array:
    """Σ over positions of 1 - cos(student, teacher), as DistilBERT's cosine embedding loss.

    student_hidden, teacher_hidden [B, T, D] (same D); weight [B, T] -> []"""
    if student_hidden.shape[-1] != teacher_hidden.shape[-1]:
        raise ValueError(
            f"the cosine hidden-state loss needs equal hidden sizes, but the student has dim "
            f"{student_hidden.shape[-1]} and the teacher {teacher_hidden.shape[-1]}; set distill.cosine_weight to 0"
        )
    s = student_hidden.astype(jnp.float32)
    t = teacher_hidden.astype(jnp.float32)
    cos = jnp.sum(s * t, -1) / jnp.maximum(jnp.linalg.norm(s, axis=-1) * jnp.linalg.norm(t, axis=-1), 1e-8)
    return jnp.sum((1.0 - cos) * weight)
