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
    old = {k: v for k, v in cfg.to_dict().items() if k != "reward_backend"}   # written before the key existed
    checkpoint.save(str(tmp_path / "old.msgpack"), r, old)
    checkpoint.load(str(tmp_path / "old.msgpack"), r, cfg.to_dict(), PPOConfig().to_dict())   # its default: same
    with pytest.raises(ValueError, match="reward_backend"):
        checkpoint.load(str(tmp_path / "old.msgpack"), r, cfg.replace(reward_backend="mlir").to_dict(),
                        PPOConfig().to_dict())


def test_import_rl_changes_no_global_settings(xla_flags="--xla_cpu_enable_fast_math=false"):
    """`import rl` used to append --xla_cpu_multi_thread_eigen=false to XLA_FLAGS for the whole process."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "RL_KEEP_XLA_FLAGS")}
    if xla_flags is not None:
        env["XLA_FLAGS"] = xla_flags
    code = ("import os; before = dict(os.environ); import rl, rl.train; "
            "assert dict(os.environ) == before, set(os.environ.items()) ^ set(before.items())")  # fmt: skip
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=300)


def _primitives(jaxpr, found):
    """(primitive name, operand shapes) of every equation, sub-jaxprs (scan, pjit, custom_vmap) included."""
    for eqn in jaxpr.eqns:
        found.append((eqn.primitive.name, [getattr(v.aval, "shape", None) for v in eqn.invars]))
        for param in eqn.params.values():
            for sub in param if isinstance(param, (list, tuple)) else [param]:
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    _primitives(inner, found)
    return found


@pytest.mark.parametrize("model_type", ["mlp", "lstm"])
def test_vmapped_init_runs_no_batched_qr(model_type):
    """A batched QR (flax's orthogonal init under vmap) wedged XLA:CPU's 2-thread pool (see
    `rl.networks.orthogonal`); ours keeps every QR unbatched and gives flax's values."""
    cfg = PPOConfig(env="CartPole-v1", model_type=model_type, total_timesteps=64, num_envs=4, num_steps=16,
                    num_minibatches=2, width=8)  # fmt: skip
    setup = ppo.make_setup(cfg)
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    init = jax.vmap(lambda k: ppo.init_runner(setup, k).train.params)
    qrs = [shapes for name, shapes in _primitives(jax.make_jaxpr(init)(keys).jaxpr, []) if name == "qr"]
    assert qrs and all(len(s[0]) == 2 for s in qrs), qrs
    from rl.networks import orthogonal

    flax_init = jax.nn.initializers.orthogonal(1.4)
    np.testing.assert_array_equal(jax.vmap(lambda k: orthogonal(1.4)(k, (8, 5)))(keys),
                                  jax.vmap(lambda k: flax_init(k, (8, 5)))(keys))  # fmt: skip
