"""Tiny SuperNets for the NAS tests."""

import jax
import numpy as np
import pytest

import distilbert_jax as dj
from distilbert_jax.nas import SearchSpace, SuperNet

TINY_SPACE = {"layer_num_space": [1, 3], "hidden_size_space": [32, 64], "hidden_step": 16, "head_num_space": [1, 4],
              "head_size": 16, "intermediate_size_space": [32, 128], "intermediate_step": 32}  # fmt: skip
TINY_KD_SPACE = {"mode": "kd", "kd_heads": 4, "layer_num_space": [1, 2], "hidden_size_space": [32, 48],
                 "hidden_step": 16, "qkv_size_space": [16, 48], "qkv_step": 8,
                 "intermediate_size_space": [32, 64], "intermediate_step": 32}  # fmt: skip


def noisy(params, seed=0, scale=0.05):
    """Params with noise on every leaf (LayerNorm scales not 1, biases not 0: slicing bugs show)."""
    leaves, tree = jax.tree.flatten(params)
    rng = np.random.default_rng(seed)
    return jax.tree.unflatten(tree, [np.asarray(x) + scale * rng.standard_normal(x.shape).astype(np.float32) for x in leaves])


@pytest.fixture(scope="session")
def tiny_supernet():
    """(supernet, noisy params) over TINY_SPACE, vocab 100, 2 bucket edges per width."""
    sn = SuperNet(SearchSpace.from_dict(TINY_SPACE), dj.small_config(vocab_size=100, max_position_embeddings=32), 2)
    return sn, noisy(sn.init(0))
