"""Measured evaluation: schedules from the env (policy, heuristic, random search) compiled and timed with IREE.

`python -m rl.mlir.evaluate [--programs test|validation] [--k 32] [--repeats 3] [--out results/mlir_eval.json]`
measures, per program, no schedule (scalar loops, one thread), IREE's default codegen, the env's heuristic,
random search (best of 1 / 8 / 32 measured schedules, up to k: the first n of one set of k uniformly random
legal episodes) and, given a trained policy (`rl.train` with `"eval_backend": "mlir"`), its greedy schedule, and
prints the geomean speedups over no schedule and over IREE's default. A schedule IREE rejects (or whose
config did not reach codegen, or whose result is wrong) counts as the unscheduled program (1×) and is
counted in the `failed` column; random search takes its best *successful* schedule.

Random search stops slow schedules early (`random_search_times`): the k schedules of a program are measured
in order, and each one after the first successful one runs under a deadline of `STOP_FACTOR` (1.5) × the best
time so far; a schedule whose run passes it is stopped ("slow", recorded as +inf) — it cannot be the best of
any first-n prefix that contains it, because an earlier schedule is faster. Best of 1 / 8 / 32 therefore stay
exact (up to the run-to-run noise the 1.5 margin covers: an op's time is its first run when that run exceeds
0.5 s, the median of 3 runs after warm-up otherwise), while a 40 s scalar schedule costs at most 1.5 × the best.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any

import jax
import numpy as np

from distilbert_jax.clitools import need_writable, run_cli

from .. import evaluate as model_eval
from ..env import SchedState, SchedulingEnv
from ..programs import ProgramTable, select_programs, test_programs
from .emit import program_specs
from .measure import measure_program
from .schedule import from_env_state, unscheduled
from .timer import MIN_DEADLINE_S

RANDOM_KS = (1, 8, 32)
STOP_FACTOR = 1.5     # random search: a schedule is stopped once its run passes STOP_FACTOR × the best so far


def final_states(env: SchedulingEnv, policy: model_eval.Policy, k: int, key: jax.Array) -> tuple[SchedState, np.ndarray]:
    """`k` episodes per program: final states (leaves [P, k, ...]) and modelled log10 speedups [P, k]."""
    progs = jax.numpy.arange(env.n_programs)
    keys = jax.random.split(key, (env.n_programs, k))
    run = jax.vmap(jax.vmap(lambda p, kk: model_eval.rollout(env, policy, p, kk), (None, 0)), (0, 0))
    states, log10 = jax.jit(run)(progs, keys)
    return jax.tree.map(np.asarray, states), np.asarray(log10)


def state_at(states: SchedState, p: int, i: int) -> SchedState:
    return jax.tree.map(lambda x: x[p, i], states)


def measure_schedules(table: ProgramTable, states: SchedState, repeats: int, bar: Any = None) -> np.ndarray:
    """Measured program times [P, k] (nan where the schedule failed) of env final states [P, k]."""
    n_p, k = np.asarray(states.prog).shape
    out = np.full((n_p, k), np.nan)
    for p in range(n_p):
        specs = program_specs(table, p)
        for i in range(k):
            m = measure_program(specs, from_env_state(table, state_at(states, p, i)), repeats)
            out[p, i] = m.time_s if m.ok else np.nan
            if bar is not None:
                bar.update(1)
    return out


def random_search_times(table: ProgramTable, states: SchedState, repeats: int, bar: Any = None,
                        stop_factor: float | None = STOP_FACTOR) -> np.ndarray:
    """Measured times [P, k] of random schedules [P, k], measured in order: nan = failed, +inf = stopped
    because its run passed `stop_factor` × the best time of the schedules before it (None: never stopped)."""
    n_p, k = np.asarray(states.prog).shape
    out = np.full((n_p, k), np.nan)
    for p in range(n_p):
        specs, best = program_specs(table, p), np.inf
        for i in range(k):
            deadline = None if stop_factor is None or np.isinf(best) else max(stop_factor * best, MIN_DEADLINE_S)
            m = measure_program(specs, from_env_state(table, state_at(states, p, i)), repeats, deadline_s=deadline)
            out[p, i] = m.time_s if m.ok else (np.inf if m.status == "slow" else np.nan)
            best = min(best, out[p, i]) if m.ok else best
            if bar is not None:
                bar.update(1)
    return out


def measured_methods(env: SchedulingEnv, network: Any = None, params: Any = None, k: int = 32, seed: int = 0,
                     repeats: int = 3, progress: bool = True, policies: dict | None = None) -> dict[str, Any]:
    """Measured times per method and program: {"programs": names, "times": {method: [P]}, "failed": {method: [P] bool},
    "random": [P, k], "model_log10": {method: [P]}} (seconds; see the module docstring). The greedy policy
    (`network`, `params`) is "policy (greedy)"; `policies` adds more, {method name: (network, params)}."""
    from tqdm import tqdm

    table = env.table
    n_p = env.n_programs
    key_h, key_r, key_p = jax.random.split(jax.random.PRNGKey(seed), 3)
    heur, heur_model = final_states(env, model_eval.heuristic_policy(env), 1, key_h)
    rand, rand_model = final_states(env, model_eval.random_policy, k, key_r)
    policies = {**({"policy (greedy)": (network, params)} if network is not None else {}), **(policies or {})}
    pols = {name: final_states(env, model_eval.network_policy(net, prm, True), 1, key_p)
            for name, (net, prm) in policies.items()}
    total = n_p * (2 + 1 + k + len(pols))
    bar = tqdm(total=total, desc="measuring", unit="sched", disable=not progress, file=sys.stdout)
    times, failed = {}, {}
    base, default = np.zeros(n_p), np.zeros(n_p)
    for p in range(n_p):
        specs = program_specs(table, p)
        base[p] = measure_program(specs, [unscheduled(s) for s in specs], repeats).time_s
        default[p] = measure_program(specs, None, repeats).time_s
        bar.update(2)
    times["no schedule"], times["IREE default"] = base, default
    for name, states in [("heuristic", heur)] + [(name, st) for name, (st, _) in pols.items()]:
        t = measure_schedules(table, states, repeats, bar)[:, 0]
        failed[name] = np.isnan(t)
        times[name] = np.where(np.isnan(t), base, t)
    rand_t = random_search_times(table, rand, repeats, bar)
    bar.close()
    for n in sorted({n for n in RANDOM_KS if n <= k} | {k}):
        if n <= k:
            best = np.where(np.isnan(rand_t[:, :n]), np.inf, rand_t[:, :n]).min(axis=1)
            failed[f"random search (best of {n})"] = np.isinf(best)
            times[f"random search (best of {n})"] = np.where(np.isinf(best), base, best)
    model = {"heuristic": heur_model[:, 0], f"random search (best of {k})": rand_model.max(1)}
    model.update({name: lg[:, 0] for name, (_, lg) in pols.items()})
    return {"programs": list(table.names), "times": times, "failed": failed, "random": rand_t,
            "random_failed_fraction": float(np.isnan(rand_t).mean()),
            "random_stopped_fraction": float(np.isinf(rand_t).mean()), "model_log10": model}


def geomean(x: np.ndarray) -> float:
    return float(np.exp(np.mean(np.log(x))))


def summary_rows(res: dict[str, Any]) -> list[tuple[str, float, float, int]]:
    """(method, geomean speedup over no schedule, over IREE default, failed programs) per method."""
    t = res["times"]
    return [(m, geomean(t["no schedule"] / v), geomean(t["IREE default"] / v), int(np.sum(res["failed"].get(m, 0))))
            for m, v in t.items()]


def format_tables(res: dict[str, Any]) -> str:
    """Markdown: the geomean summary, then per-program speedups over no schedule ("failed": no working
    schedule, counted as the unscheduled program)."""
    lines = ["| method | geomean speedup vs no schedule | vs IREE default | failed |", "|---|---|---|---|"]
    lines += [f"| {m} | {a:.2f}× | {b:.3f}× | {f} |" for m, a, b, f in summary_rows(res)]
    t = res["times"]
    methods = list(t)
    lines += ["", "| program | no schedule (ms) | " + " | ".join(methods[1:]) + " |",
              "|---" * (len(methods) + 1) + "|"]
    no_fail = np.zeros(len(res["programs"]), bool)
    failed = {m: np.asarray(res["failed"].get(m, no_fail), bool) for m in methods}
    for p, name in enumerate(res["programs"]):
        base = t["no schedule"][p]
        cells = ["failed" if failed[m][p] else f"{base / t[m][p]:.2f}×" for m in methods[1:]]
        lines.append(f"| {name} | {base * 1e3:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def to_json(res: dict[str, Any]) -> dict[str, Any]:
    conv = lambda v: v.tolist() if isinstance(v, np.ndarray) else v  # noqa: E731
    out = {k: ({kk: conv(vv) for kk, vv in v.items()} if isinstance(v, dict) else conv(v)) for k, v in res.items()}
    out["summary"] = [dict(zip(("method", "vs_no_schedule", "vs_iree_default", "failed"), r)) for r in summary_rows(res)]
    return out


def trained_policy(config_path: str) -> tuple[Any, Any]:
    """(network, params of the first seed) of the run trained with `config_path` (its out_dir/name checkpoint)."""
    from .. import checkpoint, ppo
    from ..config import PPOConfig

    cfg = PPOConfig.from_json(config_path)
    ckpt = os.path.join(cfg.out_dir, cfg.name, "checkpoint.msgpack")
    if not os.path.exists(ckpt):
        raise FileNotFoundError(f"no checkpoint at {ckpt} for {config_path}; train it first")
    setup = ppo.make_setup(cfg.replace(reward_backend="model", train_programs="train", init_from=None))
    template = jax.eval_shape(lambda: ppo.init_runner(setup, jax.random.PRNGKey(0)).train.params)
    return setup.network, checkpoint.load_params(ckpt, template)


def main(argv: list[str] | None = None) -> None:
    from .suite import validation_programs

    ap = argparse.ArgumentParser(prog="python -m rl.mlir.evaluate", description=__doc__.splitlines()[0])
    ap.add_argument("--programs", choices=("test", "validation"), default="test")
    ap.add_argument("--program", action="append", metavar="NAME",
                    help="only this program of the set (repeatable; default: all)")
    ap.add_argument("--k", type=int, default=32, help="random schedules per program")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="results/mlir_eval.json")
    ap.add_argument("--run", action="append", default=[], metavar="CONFIG",
                    help="a trained run's config (rl/configs/*.json): its checkpoint's greedy policy (first seed) "
                         "is measured too; repeatable")
    args = ap.parse_args(argv)
    need_writable(args.out, "--out")
    logging.basicConfig(level=logging.ERROR)
    try:
        env = SchedulingEnv(select_programs(test_programs() if args.programs == "test" else validation_programs(),
                                            args.program))
        policies = {f"policy {os.path.basename(c).removesuffix('.json')} (greedy)": trained_policy(c) for c in args.run}
    except (ValueError, FileNotFoundError) as e:
        ap.error(str(e))
    res = measured_methods(env, k=args.k, seed=args.seed, repeats=args.repeats, policies=policies)
    print(format_tables(res))
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(to_json(res), f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
