"""PPO speed: env steps/s of the jitted PPO loop per model_type, vs a conventional non-jitted PPO.

`python -m bench.ppo_speed [--quick]`. The jitted loop is `jax.jit(make_train(cfg))` (rollout, GAE and all
updates in one XLA program), timed after compilation. The baseline is a plain Python PPO loop over the same
networks and hyper-parameters: a numpy CartPole vectorised over the envs, one jitted network call per env
step (act), numpy GAE, and one jitted gradient step per minibatch — the structure of stable-baselines3.
Prints a table with the device and writes results/ppo_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import numpy as np

from bench.common import device_description, print_table
from rl import distributions as dist
from rl import ppo
from rl.config import PPOConfig


class NumpyCartPole:
    """CartPole-v1 dynamics (gymnax/gym constants), vectorised over n envs, auto-reset, 500-step limit."""

    def __init__(self, n: int, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.n = n
        self.s = self.rng.uniform(-0.05, 0.05, (n, 4))
        self.t = np.zeros(n, int)

    def step(self, a: np.ndarray):
        x, xd, th, thd = self.s.T
        force = np.where(a == 1, 10.0, -10.0)
        ct, st = np.cos(th), np.sin(th)
        temp = (force + 0.05 * thd**2 * st) / 1.1
        thacc = (9.8 * st - ct * temp) / (0.5 * (4.0 / 3.0 - 0.1 * ct**2 / 1.1))
        xacc = temp - 0.05 * thacc * ct / 1.1
        self.s = np.stack([x + 0.02 * xd, xd + 0.02 * xacc, th + 0.02 * thd, thd + 0.02 * thacc], 1)
        self.t += 1
        term = (np.abs(self.s[:, 0]) > 2.4) | (np.abs(self.s[:, 2]) > 0.2095)
        trunc = self.t >= 500
        done = term | trunc
        self.s[done] = self.rng.uniform(-0.05, 0.05, (done.sum(), 4))
        self.t[done] = 0
        return self.s.copy(), np.ones(self.n, np.float32), term, done


def python_loop_sps(cfg: PPOConfig, n_updates: int) -> float:
    """Steps/s of the conventional (non-jitted loop) PPO on numpy CartPole with cfg's network."""
    setup = ppo.make_setup(cfg)
    z = np.zeros((cfg.num_envs, 0), np.float32)
    mask = np.ones((cfg.num_envs, 1, 2), bool)
    as_obs = lambda s: {"consumer": s.astype(np.float32), "producer": z, "history": z, "mask": mask}  # noqa: E731
    env = NumpyCartPole(cfg.num_envs)
    runner = ppo.init_runner(setup, jax.random.PRNGKey(0))
    train = runner.train

    @jax.jit
    def act(params, obs, key):
        logits, value = setup.network.apply(params, obs)
        a = dist.sample(key, logits, obs["mask"])
        return a, dist.log_prob(logits, obs["mask"], a, setup.env.active), value

    grad_step = jax.jit(lambda tr, b: ppo._minibatch_step(setup, tr, b))
    key = jax.random.PRNGKey(1)
    obs = as_obs(env.s)

    def one_update(train, obs, key):
        buf = []
        for _ in range(cfg.num_steps):
            key, k = jax.random.split(key)
            a, lp, v = (np.asarray(x) for x in act(train.params, obs, k))
            s, r, term, done = env.step(a[:, 0])
            buf.append((obs, a, lp, v, r, term, done))
            obs = as_obs(s)
        last_v = np.asarray(act(train.params, obs, key)[2])
        vals = np.stack([b[3] for b in buf])
        nxt = np.concatenate([vals[1:], last_v[None]])
        adv, tgt = (np.asarray(x) for x in ppo.gae(
            np.stack([b[4] for b in buf]), vals, nxt, np.stack([b[5] for b in buf]).astype(np.float32),
            np.stack([b[6] for b in buf]), cfg.gamma, cfg.gae_lambda))
        flat = lambda i: np.concatenate([b[i] for b in buf])  # noqa: E731
        obs_all = {k: np.concatenate([b[0][k] for b in buf]) for k in buf[0][0]}
        n = cfg.num_envs * cfg.num_steps
        for _ in range(cfg.update_epochs):
            perm = np.random.permutation(n)
            for mb in perm.reshape(cfg.num_minibatches, -1):
                tr = ppo.Transition({k: v[mb] for k, v in obs_all.items()}, flat(1)[mb], flat(2)[mb], flat(3)[mb],
                                    flat(4)[mb], flat(5)[mb], flat(6)[mb], flat(3)[mb], {})
                train, _ = grad_step(train, (tr, adv.reshape(-1)[mb], tgt.reshape(-1)[mb]))
        return train, obs, key

    train, obs, key = one_update(train, obs, key)          # compile + warm up
    jax.block_until_ready(train.params)
    t = time.perf_counter()
    for _ in range(n_updates):
        train, obs, key = one_update(train, obs, key)
    jax.block_until_ready(train.params)
    return n_updates * cfg.num_envs * cfg.num_steps / (time.perf_counter() - t)


def jitted_sps(cfg: PPOConfig, repeats: int = 2) -> tuple[float, float]:
    """(steps/s, compile seconds) of `jax.jit(make_train(cfg))`; best of `repeats` timed runs."""
    train = jax.jit(ppo.make_train(cfg))
    t = time.perf_counter()
    compiled = train.lower(jax.random.PRNGKey(0)).compile()
    compile_s = time.perf_counter() - t
    best = float("inf")
    for i in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(compiled(jax.random.PRNGKey(i)))
        best = min(best, time.perf_counter() - t)
    return cfg.num_updates * cfg.num_envs * cfg.num_steps / best, compile_s


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.ppo_speed", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer updates (smoke run)")
    args = ap.parse_args(argv)
    updates = 3 if args.quick else 10
    rows = []
    base = PPOConfig(env="sched", num_envs=16, num_steps=64, num_minibatches=4, update_epochs=4,
                     total_timesteps=16 * 64 * updates)
    for mt in ("mlp", "lstm", "distilbert-project", "distilbert-tokenize"):
        sps, comp = jitted_sps(base.replace(model_type=mt))
        rows.append({"env": "sched", "model_type": mt, "embedding": "shared", "loop": "jitted", "steps/s": f"{sps:.0f}",
                     "compile s": f"{comp:.1f}"})
        print(rows[-1], flush=True)
    cp = PPOConfig.from_json("rl/configs/cartpole.json").replace(total_timesteps=4 * 128 * updates * 4)
    # the MLP as in cartpole.json (separate actor / critic embeddings); the LSTM both with the library's
    # default shared embedding (MLIR-RL's layout) and with separate ones; both loops run the same networks
    for mt, shared in (("mlp", False), ("lstm", True), ("lstm", False)):
        c = cp.replace(model_type=mt, shared_embedding=shared)
        sps, comp = jitted_sps(c)
        py = python_loop_sps(c, max(2, updates // 2))
        emb = "shared" if shared else "separate"
        rows.append({"env": "CartPole-v1", "model_type": mt, "embedding": emb, "loop": "jitted", "steps/s": f"{sps:.0f}",
                     "compile s": f"{comp:.1f}", "speedup vs python loop": f"{sps / py:.1f}x"})  # fmt: skip
        rows.append({"env": "CartPole-v1", "model_type": mt, "embedding": emb, "loop": "python loop",
                     "steps/s": f"{py:.0f}"})  # fmt: skip
        print(rows[-2], rows[-1], flush=True)
    print(f"\nPPO speed on {device_description()} (num_envs x num_steps = 16x64 sched, 4x128 CartPole)")
    print_table(rows, ["env", "model_type", "embedding", "loop", "steps/s", "compile s", "speedup vs python loop"])
    os.makedirs("results", exist_ok=True)
    with open("results/ppo_speed.json", "w") as f:
        json.dump({"device": device_description(), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
