"""Hierarchical masked categorical distribution over a joint action (type head + parameter heads).

Logits are `[..., H, A]` (head 0 is the action type), masks `[..., H, A]` bool and `active [n_types, H]`
says which heads a type uses. For a joint action `a [..., H]`:
    log p(a)  = log p(type) + Σ_h active[type, h] · log p_h(a_h)
    H(joint)  = H(type) + Σ_t p(t) Σ_h active[t, h] · H_h        (exact: heads are independent given obs)
Masked logits are replaced by a large *finite* negative so no -inf/NaN reaches entropy or gradients.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
MASKED_LOGIT = -1e9


def masked_log_probs(logits: Array, mask: Array) -> Array:
    """Log-softmax with illegal entries pushed to a finite -1e9: [..., A] → [..., A]."""
    return jax.nn.log_softmax(jnp.where(mask, logits, MASKED_LOGIT), axis=-1)


def _head_entropy(logp: Array) -> Array:
    return -jnp.sum(jnp.exp(logp) * logp, axis=-1)   # exp(-1e9)=0 exactly, 0·(-1e9)=0: no NaN


def log_prob(logits: Array, mask: Array, action: Array, active: np.ndarray) -> Array:
    """Joint log-prob: logits/mask [..., H, A], action [..., H] int → [...]."""
    logp = masked_log_probs(logits, mask)
    per_head = jnp.take_along_axis(logp, action[..., None], axis=-1)[..., 0]     # [..., H]
    use = jnp.asarray(active)[action[..., 0]]                                   # [..., H]
    return jnp.sum(jnp.where(use, per_head, 0.0), axis=-1)


def entropy(logits: Array, mask: Array, active: np.ndarray) -> Array:
    """Exact joint entropy [...] of the hierarchical distribution."""
    logp = masked_log_probs(logits, mask)
    head_ent = _head_entropy(logp)                                             # [..., H]
    p_type = jnp.exp(logp[..., 0, : active.shape[0]])                           # [..., n_types]
    param_ent = jnp.einsum("...t,th,...h->...", p_type, jnp.asarray(active[:, 1:], jnp.float32),
                           head_ent[..., 1:])
    return head_ent[..., 0] + param_ent


def sample(key: Array, logits: Array, mask: Array) -> Array:
    """Sample every head independently (unused heads are ignored by log_prob): [..., H, A] → [..., H]."""
    return jax.random.categorical(key, jnp.where(mask, logits, MASKED_LOGIT), axis=-1)


def mode(logits: Array, mask: Array) -> Array:
    """Greedy joint action [..., H]."""
    return jnp.argmax(jnp.where(mask, logits, MASKED_LOGIT), axis=-1)
