"""Entity-level (seqeval-style, strict IOB2) precision / recall / F1 for token classification, as additive
sums computed under `jit`: an entity is a `B-X` tag followed by the `I-X` tags right after it; it counts
as found only when the prediction has the same type, start and end. An `I-X` not continuing a `B-X` /
`I-X` entity (after `O`, or after another type) is no entity (seqeval's `mode="strict", scheme=IOB2`).
Positions labelled -100 (later word pieces, special tokens, padding) are skipped, so entities are judged
on words."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from .losses import IGNORE

Array = jax.Array
OUTSIDE, BEGIN, INSIDE = 0, 1, 2


def iob2_tags(label_names: Sequence[str] | None) -> tuple[tuple[int, int], ...] | None:
    """Per label id, (OUTSIDE | BEGIN | INSIDE, entity type index); None unless every name is "O",
    "B-<type>" or "I-<type>" and there is at least one "B-" tag."""
    if not label_names:
        return None
    types: dict[str, int] = {}
    out = []
    for name in label_names:
        if name == "O":
            out.append((OUTSIDE, 0))
        elif len(name) > 2 and name[:2] in ("B-", "I-"):
            out.append((BEGIN if name[0] == "B" else INSIDE, types.setdefault(name[2:], len(types))))
        else:
            return None
    return tuple(out) if any(kind == BEGIN for kind, _ in out) else None


def _words_first(x: Array, valid: Array) -> Array:
    """Each row's labelled positions moved to the front in order (x, valid [B, T]); the rest after them."""
    order = jnp.argsort(~valid, axis=-1, stable=True)
    return jnp.take_along_axis(x, order, axis=-1)


def entity_sums(pred: Array, labels: Array, tags: tuple[tuple[int, int], ...]) -> dict[str, Array]:
    """{"entity_tp", "entity_pred", "entity_gold": []} float32 sums of strict IOB2 entities.

    pred [B, T] predicted label ids, labels [B, T] gold ids (-100 skipped), tags from `iob2_tags`."""
    valid = labels != IGNORE
    table = jnp.asarray(tags, jnp.int32)  # [C, 2]
    gold = _words_first(jnp.where(valid, labels, 0), valid)
    pred = _words_first(jnp.where(valid, pred, 0), valid)
    real = _words_first(valid, valid)  # [B, T]: True on the (moved) labelled positions

    def parts(ids):
        kind = jnp.where(real, table[ids, 0], OUTSIDE)
        kind_type = table[ids, 1]
        prev_kind = jnp.pad(kind[:, :-1], ((0, 0), (1, 0)))
        prev_type = jnp.pad(kind_type[:, :-1], ((0, 0), (1, 0)))
        # an I-X continues the entity before it only when that is a B-X or I-X of the same type
        continues = (kind == INSIDE) & (prev_kind != OUTSIDE) & (prev_type == kind_type)
        return kind == BEGIN, kind_type, continues

    g_begin, g_type, g_cont = parts(gold)
    p_begin, p_type, p_cont = parts(pred)

    # ends_together[t]: reading from t on, both entities stop at the same position
    def step(after, cont):
        g, p = cont
        here = jnp.where(g & p, after, ~g & ~p)
        return here, here

    _, together = jax.lax.scan(step, jnp.ones(gold.shape[0], bool), (g_cont.T, p_cont.T), reverse=True)
    together_after = jnp.pad(together.T[:, 1:], ((0, 0), (0, 1)), constant_values=True)  # [B, T]
    hit = g_begin & p_begin & (g_type == p_type) & together_after
    f32 = lambda x: jnp.sum(x).astype(jnp.float32)  # noqa: E731
    return {"entity_tp": f32(hit), "entity_pred": f32(p_begin), "entity_gold": f32(g_begin)}


def entity_scores(tp: Array, n_pred: Array, n_gold: Array) -> dict[str, Array]:
    """Micro precision, recall and F1 over entities (0 where undefined, as seqeval)."""
    return {
        "entity_precision": jnp.where(n_pred > 0, tp / jnp.maximum(n_pred, 1), 0.0),
        "entity_recall": jnp.where(n_gold > 0, tp / jnp.maximum(n_gold, 1), 0.0),
        "entity_f1": jnp.where(n_pred + n_gold > 0, 2 * tp / jnp.maximum(n_pred + n_gold, 1), 0.0),
    }
