"""GAE against a hand computation; train traces once; all model types run; configs validate."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rl import ppo
from rl.config import PPOConfig


def test_gae_hand_computation():
    g, lam = 0.9, 0.8
    r = jnp.array([[1.0], [0.0], [2.0]])
    v = jnp.array([[0.5], [1.0], [1.5]])
    nv = jnp.array([[1.0], [1.5], [9.0]])      # V(s_{t+1}); step 2 truncated: bootstrap from final obs 9.0
    term = jnp.array([[0.0], [0.0], [0.0]])
    done = jnp.array([[0.0], [0.0], [1.0]])
    d2 = 2.0 + g * 9.0 - 1.5
    d1 = 0.0 + g * 1.5 - 1.0
    d0 = 1.0 + g * 1.0 - 0.5
    a2, a1 = d2, d1 + g * lam * d2
    a0 = d0 + g * lam * a1
    adv, tgt = ppo.gae(r, v, nv, term, done, g, lam)
    np.testing.assert_allclose(adv[:, 0], [a0, a1, a2], rtol=1e-6)
    np.testing.assert_allclose(tgt, adv + v, rtol=1e-6)
    adv_t, _ = ppo.gae(r, v, nv, jnp.array([[0.0], [1.0], [0.0]]), jnp.array([[0.0], [1.0], [0.0]]), g, lam)
    np.testing.assert_allclose(adv_t[1, 0], 0.0 - 1.0)                 # terminated: no bootstrap
    np.testing.assert_allclose(adv_t[0, 0], d0 + g * lam * (-1.0), rtol=1e-6)


TINY = dict(env="sched", total_timesteps=128, num_envs=4, num_steps=16, num_minibatches=2, update_epochs=1,
            width=16, bert_dim=16, bert_layers=1, bert_heads=2, bert_hidden=32, n_buckets=8)


@pytest.mark.parametrize("model_type", ["lstm", "distilbert-project", "distilbert-tokenize", "mlp"])
def test_train_compiles_once_and_is_finite(model_type):
    cfg = PPOConfig(model_type=model_type, **TINY)
    traces = []
    train = ppo.make_train(cfg)

    def counted(rng):
        traces.append(1)
        return train(rng)

    jitted = jax.jit(jax.vmap(counted))
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    for _ in range(2):
        runner, metrics = jitted(keys)
    assert len(traces) == 1
    assert metrics["entropy"].shape == (2, cfg.num_updates)
    for v in jax.tree.leaves(metrics) + jax.tree.leaves(runner.train.params):
        assert bool(jnp.all(jnp.isfinite(v)))


def test_config_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown model_type"):
        PPOConfig(model_type="gru")
    with pytest.raises(ValueError, match="unknown env"):
        PPOConfig(env="Pong")
    with pytest.raises(ValueError, match="unknown config key"):
        PPOConfig.from_dict({"learning_rate": 1e-3})
    with pytest.raises(ValueError, match="num_minibatches"):
        PPOConfig(num_envs=3, num_steps=3, num_minibatches=2)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        PPOConfig.from_json(tmp_path / "missing.json")


def test_data_parallel_over_fake_devices_matches_one_device():
    """With 2 local (CPU) devices the env batch is sharded over a `data` mesh; the run equals 1 device."""
    import json
    import os
    import subprocess
    import sys

    script = (
        "import jax, json, numpy as np, rl\n"
        "from rl.config import PPOConfig\n"
        "from rl.ppo import make_setup, make_train\n"
        "cfg = PPOConfig(env='sched', model_type='mlp', num_envs=4, num_steps=8, num_minibatches=2,"
        " update_epochs=1, total_timesteps=4 * 8 * 2)\n"
        "assert (make_setup(cfg).mesh is not None) == (jax.local_device_count() > 1)\n"
        "runner, metrics = jax.jit(make_train(cfg))(jax.random.PRNGKey(0))\n"
        "print(json.dumps([float(np.asarray(x).sum()) for x in jax.tree.leaves(runner.train.params)]))\n"
    )
    root = os.path.join(os.path.dirname(__file__), "..", "..")
    out = {}
    for n in (1, 2):
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}", PYTHONPATH=root)
        proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        out[n] = json.loads(proc.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(out[2], out[1], rtol=1e-4, atol=1e-5)
