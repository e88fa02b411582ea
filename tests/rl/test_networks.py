"""Embeddings: tokenization keeps every feature distinct; pretrained DistilBERT init; checkpoint round trip."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rl import checkpoint, ppo
from rl.config import PPOConfig
from rl.networks import CLS, SEP, UNK, bucketize, tokenize


def test_tokenize_ids_unique_per_feature_and_sign():
    x = jnp.array([[0.0, 0.0, 3.0, -3.0, jnp.nan, jnp.inf]])
    ids = np.asarray(bucketize(x, 50))
    assert ids[0, 0] != ids[0, 1]                           # same value, different features → different ids
    assert ids[0, 4] == UNK and ids[0, 5] == UNK
    assert (ids[0, 2] - 4) % 50 != (ids[0, 3] - 4) % 50       # sign kept
    ids, mask = tokenize(jnp.ones((2, 3)), jnp.zeros((2, 3)), 50)
    assert ids.shape == (2, 8) and int(ids[0, 0]) == CLS and int(ids[0, -1]) == SEP
    assert mask[:, 4:7].sum() == 0 and mask[:, :4].all()      # absent producer masked out


@pytest.mark.parametrize("mode", ["project", "tokenize"])
def test_pretrained_init(tmp_path, mode):
    transformers = pytest.importorskip("transformers")
    hf = transformers.DistilBertConfig(vocab_size=100, dim=16, n_layers=1, n_heads=2, hidden_dim=32,
                                       max_position_embeddings=128)
    transformers.DistilBertModel(hf).save_pretrained(tmp_path)
    cfg = PPOConfig(model_type=f"distilbert-{mode}", pretrained=str(tmp_path), total_timesteps=64, num_envs=4,
                    num_steps=16, num_minibatches=2, width=16)
    setup = ppo.make_setup(cfg)
    runner = ppo.init_runner(setup, jax.random.PRNGKey(0))
    bert = runner.train.params["params"]["embedding"]["bert"]
    import distilbert_jax as dj
    _, ref = dj.from_pretrained(str(tmp_path), head="base")
    q = ["transformer", "layer", "0", "attention", "q_lin", "kernel"]
    a, b = bert, ref["params"]
    for k in q:
        a, b = a[k], b[k]
    np.testing.assert_allclose(a, b)
    vocab = bert["embeddings"]["word_embeddings"]["embedding"].shape[0]
    assert (vocab == 100) == (mode == "project")


def test_checkpoint_roundtrip(tmp_path):
    cfg = PPOConfig(model_type="lstm", total_timesteps=64, num_envs=4, num_steps=16, num_minibatches=2, width=8)
    setup = ppo.make_setup(cfg)
    r = ppo.init_runner(setup, jax.random.PRNGKey(0))
    checkpoint.save(str(tmp_path / "c.msgpack"), r, cfg.to_dict())
    r2 = checkpoint.load(str(tmp_path / "c.msgpack"), ppo.init_runner(setup, jax.random.PRNGKey(1)), cfg.to_dict())
    for a, b in zip(jax.tree.leaves(r), jax.tree.leaves(r2)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="different config"):
        checkpoint.load(str(tmp_path / "c.msgpack"), r, cfg.replace(lr=0.5).to_dict())
