"""CLI: `python -m rl.train --config rl/configs/<name>.json [--no-resume] [--eval-only]`.

Trains all seeds of the config at once (`jit(vmap(run_updates))` over chunks of `updates_per_chunk` updates),
with a tqdm bar, TensorBoard logs, checkpoints after every chunk (resumed automatically), a PNG learning
curve, a summary table and, for the scheduling env, the held-out evaluation table (results.json).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from distilbert_jax.atomicfile import atomic_write
from distilbert_jax.clitools import InputError, run_cli
from distilbert_jax.faults import kill_point

from . import checkpoint, ppo
from .config import PPOConfig
from .envs import Env, log_wrapper, sched_env
from .evaluate import evaluate_gymnax, evaluate_schedules, geomean_speedups


def run_dir(cfg: PPOConfig) -> str:
    return os.path.join(cfg.out_dir, cfg.name)


def training_env(cfg: PPOConfig) -> Env | None:
    """The env PPO trains on when it is not the default (cost model on the training programs): the
    validation programs (`train_programs`) and / or IREE-measured or learned-model rewards (`reward_backend`)."""
    if cfg.env not in ("sched", "refine") or (cfg.reward_backend == "model" and cfg.train_programs == "train"):
        return None
    from .mlir import suite
    from .programs import train_programs

    table = suite.validation_programs() if cfg.train_programs == "validation" else train_programs()
    if cfg.env == "refine":
        from .mlir.refine_env import refine_env

        if cfg.reward_backend == "learned":
            from .costnet.reward import LearnedRewards, load_ranker

            ranker = load_ranker(cfg.cost_model)
            return refine_env(table, scorer=lambda ops, names: LearnedRewards(ops, names, ranker))[0]
        os.makedirs(run_dir(cfg), exist_ok=True)
        return refine_env(table, log_path=os.path.join(run_dir(cfg), "measurements.jsonl"))[0]
    if cfg.reward_backend == "mlir":
        from .mlir.reward import measured_env

        return measured_env(table, machine=cfg.load_machine())[0]
    return log_wrapper(sched_env(machine=cfg.load_machine(), table=table)[0])


def train(cfg: PPOConfig, resume: bool = True, quiet: bool = False) -> tuple[ppo.Setup, ppo.RunnerState, dict]:
    """Train every seed; returns (setup, seed-batched runner, history of per-update metrics [S, U]).
    With `init_from`, a fresh run starts from that checkpoint's params (fine-tuning; new optimiser state)."""
    from tensorboardX import SummaryWriter
    from tqdm import tqdm

    setup = ppo.make_setup(cfg, env=training_env(cfg))
    out = run_dir(cfg)
    ckpt = os.path.join(out, "checkpoint.msgpack")
    hist_path = os.path.join(out, "history.npz")
    init = jax.jit(lambda k: ppo.init_runner(setup, k))   # per seed (a vmapped init works too: networks.orthogonal)
    runner = jax.tree.map(lambda *x: jnp.stack(x), *[init(jax.random.PRNGKey(s)) for s in cfg.seeds])
    history: dict[str, np.ndarray] = {}
    if resume and os.path.exists(ckpt):
        runner = checkpoint.load(ckpt, runner, cfg.to_dict(), PPOConfig().to_dict())
        if os.path.exists(hist_path):  # saved before the checkpoint: trimmed to the updates it holds
            done = int(np.asarray(runner.update)[0])
            history = {k: v[:, :done] for k, v in np.load(hist_path).items()}
    elif cfg.init_from:
        params = checkpoint.load_params(cfg.init_from, jax.tree.map(lambda x: x[0], runner.train.params))
        params = jax.tree.map(lambda x: jnp.stack([x] * len(cfg.seeds)), params)
        runner = runner._replace(train=ppo.TrainState(params, jax.vmap(setup.tx.init)(params)))
    done = int(np.asarray(runner.update)[0])
    chunks = {}
    writer = SummaryWriter(os.path.join(out, "tb"))
    steps_per_update = cfg.num_envs * cfg.num_steps
    bar = tqdm(total=cfg.num_updates, initial=done, desc=cfg.name, unit="upd", disable=quiet, file=sys.stdout)
    t0 = time.time()
    while done < cfg.num_updates:
        n = min(cfg.updates_per_chunk, cfg.num_updates - done)
        if n not in chunks:
            chunks[n] = jax.jit(jax.vmap(lambda r, n=n: ppo.run_updates(setup, r, n)), donate_argnums=0)
        runner, metrics = chunks[n](runner)
        metrics = jax.tree.map(np.asarray, metrics)
        for k, v in metrics.items():
            history[k] = np.concatenate([history[k], v], 1) if k in history else v
        for i in range(n):
            step = (done + i + 1) * steps_per_update
            for s, seed in enumerate(cfg.seeds):
                if metrics["episodes"][s, i] > 0:
                    writer.add_scalar(f"seed{seed}/episode_return", metrics["episode_return"][s, i], step)
                for k in ("entropy", "value_loss", "policy_loss", "approx_kl"):
                    writer.add_scalar(f"seed{seed}/{k}", metrics[k][s, i], step)
        done += n
        with atomic_write(hist_path, "wb") as f:  # whole or absent, and never behind the checkpoint
            np.savez(f, **history)
        kill_point("rl_chunk")
        checkpoint.save(ckpt, runner, cfg.to_dict())
        bar.update(n)
        ended = metrics["episodes"].astype(float)  # episodes that ended in this chunk, per seed and update
        mean_ret = (metrics["episode_return"] * ended).sum() / max(ended.sum(), 1.0)
        bar.set_postfix(ret=f"{mean_ret:.3g}",
                        sps=f"{n * steps_per_update * len(cfg.seeds) / max(time.time() - t0, 1e-9):.0f}")
        t0 = time.time()
    bar.close()
    writer.close()
    return setup, runner, history


def smoothed_returns(history: dict, window: int) -> np.ndarray:
    """Episode-count-weighted moving average of the per-update mean return: [S, U]."""
    ret, cnt = history["episode_return"], history["episodes"].astype(float)
    k = np.ones(window)
    num = np.stack([np.convolve(r * c, k)[: len(r)] for r, c in zip(ret, cnt)])
    den = np.stack([np.convolve(c, k)[: len(c)] for c in cnt])
    return num / np.maximum(den, 1)


def plot_curve(cfg: PPOConfig, history: dict, path: str) -> None:
    """PNG learning curve: smoothed episode return vs env steps, one line per seed."""
    from distilbert_jax.train.reporting import pyplot

    plt = pyplot()
    sm = smoothed_returns(history, max(1, sm_window(history)))
    steps = (np.arange(sm.shape[1]) + 1) * cfg.num_envs * cfg.num_steps
    fig, ax = plt.subplots(figsize=(6, 4))
    for seed, row in zip(cfg.seeds, sm):
        ax.plot(steps, row, label=f"seed {seed}")
    ax.set_xlabel("env steps")
    ax.set_ylabel("episode return" + (" (log10 speedup)" if cfg.env == "sched" else ""))
    ax.set_title(f"{cfg.name}: {cfg.env}, {cfg.model_type}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def sm_window(history: dict) -> int:
    return max(1, history["episode_return"].shape[1] // 20)


def evaluate(cfg: PPOConfig, setup: ppo.Setup, runner: ppo.RunnerState) -> dict:
    """Per-seed evaluation: held-out geomean speedup table (sched), measured tuning of the held-out programs
    (refine) or greedy mean return (gymnax); nothing with eval_backend "none"."""
    results: dict = {}
    if cfg.eval_backend == "none":
        return {seed: {} for seed in cfg.seeds}
    for s, seed in enumerate(cfg.seeds):
        params = jax.tree.map(lambda x: x[s], runner.train.params)
        if cfg.env == "sched" and cfg.eval_backend == "mlir":
            results[seed] = evaluate_measured(cfg, setup, params, seed)
        elif cfg.env == "refine":
            from .mlir.tune import evaluate_policy

            results[seed] = evaluate_policy(setup.network, params, budget=cfg.eval_samples, seed=seed)
        elif cfg.env == "sched":
            _, test_env = sched_env(test=True, machine=cfg.load_machine())
            log10 = evaluate_schedules(test_env, setup.network, params, cfg.eval_samples, seed)
            results[seed] = geomean_speedups(log10)
        else:
            results[seed] = {"greedy mean return": evaluate_gymnax(setup.env, setup.network, params, seed=seed)}
    return results


def evaluate_measured(cfg: PPOConfig, setup: ppo.Setup, params, seed: int) -> dict:
    """Held-out evaluation by IREE measurement (rl.mlir): prints the per-program table, writes
    mlir_eval_seed<seed>.json, returns geomean speedups over no schedule and over IREE's default."""
    from .mlir.evaluate import format_tables, measured_methods, summary_rows, to_json

    _, test_env = sched_env(test=True, machine=cfg.load_machine())
    res = measured_methods(test_env, setup.network, params, cfg.eval_samples, seed)
    print(f"\nseed {seed}: measured with IREE on the host CPU ({len(res['programs'])} held-out programs)")
    print(format_tables(res))
    os.makedirs(run_dir(cfg), exist_ok=True)
    with open(os.path.join(run_dir(cfg), f"mlir_eval_seed{seed}.json"), "w") as f:
        json.dump(to_json(res), f, indent=1)
    out = {}
    for method, vs_none, vs_iree, _ in summary_rows(res):
        if method in ("IREE default", "heuristic", "policy (greedy)") or method.endswith(f"of {cfg.eval_samples})"):
            out[f"{method} ×none"] = vs_none
            out[f"{method} ×IREE"] = vs_iree
    return out


def print_summary(cfg: PPOConfig, history: dict, results: dict, wall: float) -> None:
    """Summary table: final smoothed training return and evaluation per seed."""
    final = smoothed_returns(history, max(1, history["episode_return"].shape[1] // 10))[:, -1]
    cols = list(next(iter(results.values())).keys()) or ["(no evaluation)"]
    print(f"\n{cfg.name}: env={cfg.env} model_type={cfg.model_type} steps/seed={cfg.num_updates * cfg.num_envs * cfg.num_steps}"
          f" wall={wall:.0f}s device={jax.devices()[0].device_kind}")
    print("| seed | train return (last 10%) | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 2) + "|")
    for (seed, res), f in zip(results.items(), final):
        print(f"| {seed} | {f:.3f} | " + " | ".join(f"{res[c]:.2f}" if c in res else "—" for c in cols) + " |")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m rl.train", description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, help="JSON config (see rl/configs/)")
    ap.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint")
    ap.add_argument("--eval-only", action="store_true", help="evaluate the checkpoint without training")
    ap.add_argument("--total-timesteps", type=int, help="override total_timesteps")
    ap.add_argument("--seeds", type=int, nargs="+", help="override seeds")
    ap.add_argument("--out-dir", help="override out_dir")
    args = ap.parse_args(argv)
    try:
        cfg = PPOConfig.from_json(args.config)
        over = {k: v for k, v in (("total_timesteps", args.total_timesteps), ("seeds", args.seeds),
                                  ("out_dir", args.out_dir)) if v is not None}
        cfg = cfg.replace(**over)
    except (ValueError, FileNotFoundError) as e:
        raise InputError(str(e)) from None
    t0 = time.time()
    if args.eval_only:
        ckpt = os.path.join(run_dir(cfg), "checkpoint.msgpack")
        if not os.path.exists(ckpt):
            raise InputError(f"no checkpoint at {ckpt}; train first")
    setup, runner, history = train(cfg, resume=True if args.eval_only else not args.no_resume)
    wall = time.time() - t0
    out = run_dir(cfg)
    plot_curve(cfg, history, os.path.join(out, "learning_curve.png"))
    if cfg.env == "refine":          # a policy directory the tuner loads (`python -m rl.mlir.tune --policy DIR`)
        from .mlir.tune import save_policy

        save_policy(os.path.join(out, "policy"), cfg, jax.tree.map(lambda x: x[0], runner.train.params),
                    {"trained_on": cfg.train_programs, "updates": int(np.asarray(runner.update)[0])})
    results = evaluate(cfg, setup, runner)
    print_summary(cfg, history, results, wall)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({"config": cfg.to_dict(), "train_wall_s": wall, "eval": {str(k): v for k, v in results.items()},
                   "final_train_return": smoothed_returns(history, max(1, history["episode_return"].shape[1] // 10))[:, -1].tolist()},
                  f, indent=2)
    print(f"wrote {out}/results.json, learning_curve.png, tb/, checkpoint.msgpack")


if __name__ == "__main__":
    sys.exit(run_cli(main))
