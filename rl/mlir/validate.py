"""How good is the analytic cost model? Rank correlation with IREE-measured times, and a re-runnable calibration.

`python -m rl.mlir.validate [--n 64] [--repeats 3] [--out results/cost_model]`:
1. for every program of `rl.mlir.suite.validation_programs()` (12), `--n` uniformly random legal env episodes
   (the env's own random policy) are measured with IREE (cached; failed schedules are counted and left out);
2. Spearman rank correlation between the model's predicted time and the measured time, per program and
   overall (pooled speedups over each program's unscheduled time), table + scatter PNG;
3. calibration: the model's machine constants (cores, scalar / vector rates, cache and DRAM bandwidths,
   overheads) are fitted by Nelder–Mead on log-scaled multipliers, minimising the squared log error of
   predicted vs measured times on 2/3 of each program's schedules; before/after Spearman and log error are
   reported on the held-out 1/3. The fit is written to `<out>/machine_calibrated.json`
   (`rl.cost_model.Machine(**json)`), so it can be re-run on another machine.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np

from distilbert_jax.clitools import need_writable, run_cli

from .. import evaluate as model_eval
from ..cost_model import Machine
from ..env import SchedState, SchedulingEnv
from .emit import program_specs
from .evaluate import final_states, measure_schedules
from .measure import measure_program
from .schedule import unscheduled
from .suite import validation_programs

FIT_FIELDS = ("cores", "scalar_ops_per_cycle", "vector_pipes", "bw_l2", "bw_l3", "bw_dram_core", "bw_dram_total",
              "tile_overhead_cycles", "fork_overhead")


def collect(env: SchedulingEnv, n: int, seed: int = 0, repeats: int = 3) -> dict:
    """Random legal schedules [P, n] (final env states), their measured times (nan = failed) and the
    measured unscheduled time [P]."""
    from tqdm import tqdm

    states, _ = final_states(env, model_eval.random_policy, n, jax.random.PRNGKey(seed))
    bar = tqdm(total=env.n_programs * (n + 1), desc="measuring", unit="sched")
    base = np.zeros(env.n_programs)
    for p in range(env.n_programs):
        specs = program_specs(env.table, p)
        base[p] = measure_program(specs, [unscheduled(s) for s in specs], repeats).time_s
        bar.update(1)
    measured = measure_schedules(env.table, states, repeats, bar)
    bar.close()
    return {"states": states, "measured": measured, "base": base}


def predict(env: SchedulingEnv, states: SchedState, machine: Machine) -> np.ndarray:
    """Model time [P, n] of final states [P, n] under `machine` (traceable: machine fields may be tracers)."""
    e = copy.copy(env)
    e.machine = machine
    return jax.vmap(jax.vmap(e._program_time))(states)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """`distilbert_jax.nas.predictor.spearman`, NaN below 3 schedules."""
    from distilbert_jax.nas.predictor import spearman as rank_correlation

    return rank_correlation(a, b) if len(a) > 2 else float("nan")


def correlations(pred: np.ndarray, base_pred: np.ndarray, meas: np.ndarray, base: np.ndarray,
                 mask: np.ndarray) -> tuple[list[float], float]:
    """Per-program Spearman (times) and overall Spearman (pooled speedups) over schedules where mask."""
    per = [spearman(pred[p][mask[p]], meas[p][mask[p]]) for p in range(len(pred))]
    sp_pred = (base_pred[:, None] / pred)[mask]
    sp_meas = (base[:, None] / meas)[mask]
    return per, spearman(sp_pred, sp_meas)


def fit_machine(env: SchedulingEnv, states: SchedState, meas: np.ndarray, base: np.ndarray, mask: np.ndarray,
                base_states: SchedState, m0: Machine = Machine(), iters: int = 600) -> Machine:
    """Fit FIT_FIELDS (log multipliers) to minimise mean squared log error on schedules where mask, plus the
    unscheduled programs."""
    from scipy.optimize import minimize

    log_meas = jnp.asarray(np.log(np.where(mask, meas, 1.0)))
    log_base = jnp.asarray(np.log(base))
    w = jnp.asarray(mask, jnp.float32)
    x0 = {f: float(getattr(m0, f)) for f in FIT_FIELDS}

    @jax.jit
    def loss(z):
        m = dataclasses.replace(m0, **{f: x0[f] * jnp.exp(z[i]) for i, f in enumerate(FIT_FIELDS)})
        err = (jnp.log(predict(env, states, m)) - log_meas) ** 2
        err_b = (jnp.log(predict(env, base_states, m))[:, 0] - log_base) ** 2
        return (jnp.sum(err * w) + jnp.sum(err_b)) / (jnp.sum(w) + len(base))

    res = minimize(lambda z: float(loss(jnp.asarray(z, jnp.float32))), np.zeros(len(FIT_FIELDS)),
                   method="Nelder-Mead", options={"maxiter": iters, "xatol": 1e-3, "fatol": 1e-6})
    fitted = {f: x0[f] * float(np.exp(res.x[i])) for i, f in enumerate(FIT_FIELDS)}
    fitted["cores"] = max(1.0, fitted["cores"])
    return dataclasses.replace(m0, **fitted)


def unscheduled_states(env: SchedulingEnv) -> SchedState:
    """Initial (unscheduled) state of every program, shaped [P, 1]."""
    s = jax.vmap(env._initial_state)(jnp.arange(env.n_programs))
    return jax.tree.map(lambda x: np.asarray(x)[:, None], s)


def random_search_lines(names: list[str], meas: np.ndarray, base: np.ndarray, default: np.ndarray,
                        ks: tuple[int, ...] = (1, 8, 32)) -> list[str]:
    """Markdown: random search (best of the first k measured random schedules; a program with none that
    worked counts as unscheduled) — geomean speedup over no schedule and over IREE's default."""
    lines = ["| method | geomean vs no schedule | geomean vs IREE default | programs with no working schedule |",
             "|---|---|---|---|",
             f"| IREE default | {np.exp(np.mean(np.log(base / default))):.2f}× | 1.00× | 0 |"]
    for k in ks:
        if k > meas.shape[1]:
            continue
        best = np.nanmin(np.where(np.isnan(meas[:, :k]), np.inf, meas[:, :k]), axis=1)
        t = np.where(np.isinf(best), base, best)
        lines.append(f"| random search (best of {k}) | {np.exp(np.mean(np.log(base / t))):.2f}× | "
                     f"{np.exp(np.mean(np.log(default / t))):.3f}× | {int(np.isinf(best).sum())} |")
    return lines


def log_rmse(pred: np.ndarray, meas: np.ndarray, mask: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.log(pred[mask]) - np.log(meas[mask])) ** 2)))


def plot(path: str, names: list[str], panels: list[tuple[str, np.ndarray, np.ndarray]], meas: np.ndarray,
         base: np.ndarray, mask: np.ndarray) -> None:
    """Scatter of predicted vs measured speedup over the unscheduled program, one colour per program."""
    from distilbert_jax.train.reporting import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 5.2), squeeze=False)
    for ax, (title, pred, base_pred) in zip(axes[0], panels):
        for p, name in enumerate(names):
            mk = mask[p]
            ax.scatter((base_pred[p] / pred[p])[mk], (base[p] / meas[p])[mk], s=10, label=name)
        ax.set_xscale("log")
        ax.set_yscale("log")
        lim = [0.05, 300]
        ax.plot(lim, lim, "k--", lw=0.8)
        ax.set_xlabel("model speedup over unscheduled")
        ax.set_ylabel("measured speedup over unscheduled (IREE, host CPU)")
        ax.set_title(title)
    axes[0][0].legend(fontsize=6, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m rl.mlir.validate", description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=64, help="random schedules per program")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="results/cost_model")
    args = ap.parse_args(argv)
    need_writable(args.out, "--out")
    logging.basicConfig(level=logging.ERROR)
    os.makedirs(args.out, exist_ok=True)
    env = SchedulingEnv(validation_programs())
    data = collect(env, args.n, args.seed, args.repeats)
    states, meas, base = data["states"], data["measured"], data["base"]
    ok = ~np.isnan(meas)
    base_states = unscheduled_states(env)
    pred0 = np.asarray(predict(env, states, Machine()))
    base_pred0 = np.asarray(predict(env, base_states, Machine()))[:, 0]
    per0, all0 = correlations(pred0, base_pred0, meas, base, ok)
    train = ok & (np.arange(args.n) % 3 != 2)[None]
    held = ok & (np.arange(args.n) % 3 == 2)[None]
    fitted = fit_machine(env, states, meas, base, train, base_states)
    pred1 = np.asarray(predict(env, states, fitted))
    base_pred1 = np.asarray(predict(env, base_states, fitted))[:, 0]
    per_h0, all_h0 = correlations(pred0, base_pred0, meas, base, held)
    per_h1, all_h1 = correlations(pred1, base_pred1, meas, base, held)
    names = list(env.table.names)
    lines = [f"Cost model vs IREE-measured time, {args.n} random legal schedules per program "
             f"({int(ok.sum())} compiled, verified and correct; {int((~ok).sum())} failed in IREE)", "",
             "| program | measured schedules | Spearman (all, default model) | held-out: default | held-out: calibrated |",
             "|---|---|---|---|---|"]
    for p, name in enumerate(names):
        lines.append(f"| {name} | {int(ok[p].sum())} | {per0[p]:.2f} | {per_h0[p]:.2f} | {per_h1[p]:.2f} |")
    lines.append(f"| **overall (pooled speedups)** | {int(ok.sum())} | {all0:.2f} | {all_h0:.2f} | {all_h1:.2f} |")
    lines.append(f"| median over programs | | {np.nanmedian(per0):.2f} | {np.nanmedian(per_h0):.2f} | "
                 f"{np.nanmedian(per_h1):.2f} |")
    default = np.asarray([measure_program(program_specs(env.table, p), None, args.repeats).time_s
                          for p in range(env.n_programs)])
    lines += ["", "Random search on these programs, measured:", ""] + random_search_lines(names, meas, base, default)
    lines += ["", f"held-out log-time RMSE: default {log_rmse(pred0, meas, held):.2f}, calibrated "
              f"{log_rmse(pred1, meas, held):.2f} (natural log)",
              "calibrated machine: " + ", ".join(f"{f}={getattr(fitted, f):.4g}" for f in FIT_FIELDS)]
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(args.out, "machine_calibrated.json"), "w") as f:
        json.dump(dataclasses.asdict(fitted), f, indent=1)
    np.savez(os.path.join(args.out, "data.npz"), measured=meas, base=base, default=default, pred_default=pred0,
             pred_calibrated=pred1, names=np.asarray(names))
    plot(os.path.join(args.out, "scatter.png"), names,
         [(f"default model (Spearman overall {all0:.2f})", pred0, base_pred0),
          (f"calibrated (held-out overall {all_h1:.2f})", pred1, base_pred1)], meas, base, ok)
    print(f"wrote {args.out}/table.md, scatter.png, machine_calibrated.json, data.npz")


if __name__ == "__main__":
    import sys

    sys.exit(run_cli(main))
