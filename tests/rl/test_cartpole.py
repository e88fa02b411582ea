"""PPO sanity check: CartPole-v1 solved (mean return ≥ 475 over the last 10% of 500k steps), one seed."""

import jax
import numpy as np
import pytest

pytest.importorskip("gymnax")

from rl.config import PPOConfig  # noqa: E402
from rl.ppo import make_train  # noqa: E402


def test_cartpole_solves():
    cfg = PPOConfig.from_json("rl/configs/cartpole.json").replace(seeds=(0,))
    _, m = jax.jit(make_train(cfg))(jax.random.PRNGKey(0))
    ret, cnt = np.asarray(m["episode_return"]), np.asarray(m["episodes"])
    n = len(ret) // 10
    assert (ret[-n:] * cnt[-n:]).sum() / cnt[-n:].sum() >= 475
