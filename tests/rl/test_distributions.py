"""Hierarchical log-prob / entropy against brute-force enumeration of the joint distribution."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np

from rl import distributions as D

ACTIVE = np.array([[1, 0, 0], [1, 1, 0], [1, 1, 1]], bool)   # type 0: no params, 1: head 1, 2: heads 1+2


def joint_table(logits, mask):
    """p(a) for every distinct joint action (unused heads fixed to 0)."""
    probs = [np.exp(np.asarray(D.masked_log_probs(logits[h], mask[h]))) for h in range(3)]
    table = {}
    for t in range(3):
        ranges = [range(4) if ACTIVE[t, h] else [0] for h in (1, 2)]
        for a1, a2 in itertools.product(*ranges):
            p = probs[0][t] * (probs[1][a1] if ACTIVE[t, 1] else 1) * (probs[2][a2] if ACTIVE[t, 2] else 1)
            table[(t, a1, a2)] = p
    return table


def test_log_prob_and_entropy_match_enumeration():
    logits = jax.random.normal(jax.random.PRNGKey(0), (3, 4)) * 2
    mask = jnp.array([[1, 1, 1, 0], [1, 0, 1, 1], [0, 1, 1, 1]], bool)
    table = joint_table(logits, mask)
    assert abs(sum(table.values()) - 1) < 1e-5
    for a, p in table.items():
        lp = float(D.log_prob(logits, mask, jnp.array(a), ACTIVE))
        if p > 0:
            np.testing.assert_allclose(lp, np.log(p), rtol=1e-4, atol=1e-5)
    h = -sum(p * np.log(p) for p in table.values() if p > 0)
    np.testing.assert_allclose(float(D.entropy(logits, mask, ACTIVE)), h, rtol=1e-4)


def test_masked_actions_never_sampled_and_no_nan():
    logits = jnp.zeros((1000, 3, 4))
    mask = jnp.broadcast_to(jnp.array([[0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 1]], bool), logits.shape)
    a = D.sample(jax.random.PRNGKey(0), logits, mask)
    assert bool(jnp.all(a[:, 0] == 1)) and bool(jnp.all(a[:, 1] < 2)) and bool(jnp.all(a[:, 2] == 3))
    g = jax.grad(lambda l: D.entropy(l, mask, ACTIVE).sum() + D.log_prob(l, mask, a, ACTIVE).sum())(logits)
    assert bool(jnp.all(jnp.isfinite(g)))
    # the logits of heads not used by the chosen type get no gradient from log_prob
    g2 = jax.grad(lambda l: D.log_prob(l, mask, jnp.zeros((1000, 3), jnp.int32), ACTIVE).sum())(logits)
    assert float(jnp.abs(g2[:, 1:]).max()) == 0.0
