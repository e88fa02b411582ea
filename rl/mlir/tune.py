"""Tune IREE's configs of a program's ops with the shipped policy, measured, never slower than IREE's default.

    python -m rl.mlir.tune --programs test --budget 8            # the 18 held-out programs
    python -m rl.mlir.tune --spec my_program.json --budget 8     # your own ops (format: `load_program_spec`)
    python -m rl.mlir.tune --programs test --compare --k 32      # + random search and greedy: the comparison table
    python -m rl.mlir.tune --programs test --rank-with runs/costnet --budget 8   # a learned cost model ranks

For each op: IREE's default config and time, IREE with data tiling + ukernels (matmul-like ops), the policy's
proposals (greedy first, then distinct samples, `--budget` in all), every measured candidate and the chosen
one — IREE's default is a candidate, so the result is never slower than the default beyond noise. With
`--rank-with` a learned cost model (`python -m rl.cost_learned train`) ranks `--candidates` random legal
refinements per op (plus the policy's proposals when `--policy` is given) and only its top `--budget` are
measured, best predicted first. Per program
the data-tiling flag is one decision (it is a compiler flag): on when it lowers the program's total. The
chosen configs go into one tuning spec per program (`<out>/<program>.spec.mlir`, ops matched by operand
types) to pass to `iree-compile --iree-codegen-tuning-spec-path=…` (plus the printed flags); the whole
program is then compiled with that file and re-measured against IREE's default in a fresh process, and those
re-measured figures are the ones reported.

Timing (`--timing`): "cpu" (default) runs one thread and reads its CPU time — stable on a shared machine;
"wall" is the multi-threaded wall-clock time a user sees on a quiet one (`rl.mlir.timer.TIMINGS`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import distributions as dist
from ..programs import ProgramTable, select_programs, stack_programs, test_programs, train_programs
from . import refine as R
from .emit import OpSpec, program_specs
from .refine_env import N_FEATURES, RefineEnv
from .timer import TIMINGS

log = logging.getLogger("rl.mlir")
HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_POLICY = os.path.join(os.path.dirname(HERE), "policies", "refine_mlp")
RANDOM_KS = (1, 8, 32)


# ---- the policy ------------------------------------------------------------------------------------------
def save_policy(path: str, cfg: Any, params: Any, meta: dict | None = None) -> None:
    """Write a policy directory: `config.json` (the PPO config, + `meta`) and `params.msgpack`."""
    from flax import serialization

    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump({"ppo": cfg.to_dict(), **(meta or {})}, f, indent=1)
    with open(os.path.join(path, "params.msgpack"), "wb") as f:
        f.write(serialization.to_bytes(jax.device_get(params)))


def policy_config(path: str) -> dict:
    """The PPO config (a dict) a policy directory written by `save_policy` was trained with."""
    with open(os.path.join(path, "config.json")) as f:
        return json.load(f)["ppo"]


def load_policy(path: str = DEFAULT_POLICY) -> tuple[Any, Any]:
    """(network, params) of a policy directory written by `save_policy`."""
    from flax import serialization

    from ..config import PPOConfig
    from ..envs import Env
    from ..ppo import build_network

    cfg_path, par_path = os.path.join(path, "config.json"), os.path.join(path, "params.msgpack")
    for p in (cfg_path, par_path):
        if not os.path.isfile(p):
            raise FileNotFoundError(f"policy {path}: missing {os.path.basename(p)} (train one with "
                                    "`python -m rl.train --config rl/configs/refine_mlp.json`)")
    cfg = PPOConfig.from_dict({**policy_config(path), "out_dir": "runs"})
    e = RefineEnv([])
    env = Env(e.reset, e.step, R.N_HEADS, R.A_MAX, R.ACTIVE_HEADS, False)
    network = build_network(cfg, env)
    obs = {"consumer": jnp.zeros((1, N_FEATURES)),
           "producer": jnp.zeros((1, 0)), "history": jnp.zeros((1, 0)), "mask": jnp.ones((1, R.N_HEADS, R.A_MAX), bool)}
    template = network.init(jax.random.PRNGKey(0), obs)
    with open(par_path, "rb") as f:
        try:
            params = serialization.from_bytes(template, f.read())
        except (ValueError, KeyError) as e:
            raise ValueError(f"policy {par_path} does not fit the network of {cfg_path}: {e}") from None
    return network, params


def rollouts(env: RefineEnv, network: Any, params: Any, n: int, key: jax.Array) -> tuple[np.ndarray, np.ndarray]:
    """`n` episodes per op (the first greedy, the rest sampled): done types [O, n, T] and choices [O, n, H]."""

    def one(op, k, greedy):
        obs, s = env.reset_to(op)
        ended = jnp.zeros((), bool)
        for _ in range(3):
            k, k1 = jax.random.split(k)
            logits, _ = network.apply(params, jax.tree.map(lambda x: x[None], obs))
            a = jnp.where(greedy, dist.mode(logits, obs["mask"][None]), dist.sample(k1, logits, obs["mask"][None]))[0]
            obs2, s2, _, term, _ = env.step_env(s, a)
            s = jax.tree.map(lambda new, old: jnp.where(ended, old, new), s2, s)
            obs = obs2
            ended = ended | term
        return s.done_types, s.choices

    ops = jnp.arange(env.n_ops)
    keys = jax.random.split(key, (env.n_ops, n))
    greedy = jnp.arange(n) == 0
    run = jax.jit(jax.vmap(jax.vmap(one, (None, 0, 0)), (0, 0, None)))
    done, choices = run(ops, keys, greedy)
    return np.asarray(done), np.asarray(choices)


def refinement_of(d: R.DefaultConfig, done_types: np.ndarray, choices: np.ndarray) -> R.Refinement:
    return R.to_refinement(d, R.replay(d, [t for t in R.STEP_ORDER if done_types[t]], choices))


def proposals(ops: list[tuple[OpSpec, R.DefaultConfig]], network: Any, params: Any, budget: int,
              seed: int = 0) -> list[list[R.Refinement]]:
    """Per op: the greedy schedule, then distinct sampled ones, `budget` in all (fewer if the policy keeps
    proposing the same ones within 16 × budget samples). "keep" (IREE's default) is not counted."""
    env = RefineEnv(ops)
    done, choices = rollouts(env, network, params, 16 * budget, jax.random.PRNGKey(seed))
    out = []
    for i, (_, d) in enumerate(ops):
        seen: list[R.Refinement] = []
        for j in range(done.shape[1]):
            r = refinement_of(d, done[i, j], choices[i, j])
            if r not in seen and (r.mode != "keep" or j == 0):
                seen.append(r)
            if len(seen) >= budget:
                break
        out.append(seen)
    return out


# ---- measuring and choosing ------------------------------------------------------------------------------
@dataclasses.dataclass
class OpResult:
    name: str
    default: R.DefaultConfig
    default_s: float
    data_tiling_s: float                     # nan where the op has no data-tiled form
    candidates: list                         # [(Refinement, seconds or nan)] in proposal order
    chosen: R.Refinement = R.Refinement("keep")
    chosen_s: float = float("nan")

    @property
    def n_failed(self) -> int:
        return sum(1 for _, t in self.candidates if np.isnan(t))

    @property
    def greedy_failed(self) -> bool:
        return bool(self.candidates) and bool(np.isnan(self.candidates[0][1]))

    @property
    def greedy_s(self) -> float:
        """The greedy proposal's time (the first candidate); IREE's default where it failed or none was made."""
        return self.default_s if not self.candidates or self.greedy_failed else self.candidates[0][1]


def measure(spec: OpSpec, d: R.DefaultConfig, r: R.Refinement, repeats: int, timing: str) -> float:
    m = R.measure_refinement(spec, d, r, repeats, timing=timing)
    return m.time_s if m.ok else float("nan")


def measure_all(jobs: list[tuple[OpSpec, R.DefaultConfig, R.Refinement]], repeats: int, timing: str,
                bar: Any = None) -> list[float]:
    """Times (nan = failed) of many (op, schedule) jobs, compiled by a pool of threads sized to the machine
    (IREE's compiler runs as a subprocess, so they compile in parallel)."""
    import concurrent.futures

    def one(job):
        t = measure(*job, repeats, timing)
        if bar is not None:
            bar.update(1)
        return t

    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        return list(pool.map(one, jobs))


def choose(results: list[OpResult]) -> bool:
    """Pick each op's config and the program's data-tiling flag (one flag for the program); returns it."""
    def best(r: OpResult, dt: bool) -> tuple[R.Refinement, float]:
        opts = [(R.Refinement("keep"), r.default_s)] + [(c, t) for c, t in r.candidates
                                                          if c.mode == "config" and not np.isnan(t)]
        if dt and r.default.data_tiling and not np.isnan(r.data_tiling_s):
            return R.Refinement("data-tiling"), r.data_tiling_s     # the flag turns the op into mmt4d
        return min(opts, key=lambda o: o[1])

    totals = {dt: sum(best(r, dt)[1] for r in results) for dt in (False, True)}
    use_dt = totals[True] < totals[False]
    for r in results:
        r.chosen, r.chosen_s = best(r, use_dt)
    return use_dt


def program_spec_text(results: list[OpResult]) -> str:
    """One tuning spec with every op whose chosen config differs from IREE's."""
    entries = [(list(r.default.operand_types), R.lowering_levels(r.default, r.chosen), r.default.pipeline)
               for r in results if r.chosen.mode == "config"]
    return R.tuning_spec(entries) if entries else ""


# ---- re-measuring the chosen spec in a fresh process -----------------------------------------------------
def remeasure(specs: list[OpSpec], spec_text: str, data_tiling: bool, repeats: int, timing: str,
              rounds: int = 3, wants: list[dict | None] | None = None) -> dict:
    """Compile every op with the program's spec file (and flags) and with nothing, in a fresh process, and
    time both `rounds` times alternately, uncached → {"default_s": [per op], "tuned_s": [per op], "ok": bool}
    (per op the timing's estimator over the rounds, as within a measurement). `wants`: per op the lowering
    config codegen must have used under the spec file (None: not checked), else "ok" is False."""
    import pickle
    import tempfile

    with tempfile.TemporaryDirectory(prefix="rl_tune_") as tmp:
        job = os.path.join(tmp, "job.pkl")
        with open(job, "wb") as f:
            pickle.dump((specs, spec_text, data_tiling, repeats, timing, rounds, wants or [None] * len(specs)), f)
        cmd = [sys.executable, "-m", "rl.mlir.tune", "--remeasure-job", job]
        root = os.path.dirname(os.path.dirname(HERE))
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=root)
        if proc.returncode != 0:
            raise RuntimeError(f"re-measuring in a fresh process failed:\n{proc.stderr[-2000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])


def _remeasure_job(path: str) -> None:
    import pickle

    from .measure import measure_source

    with open(path, "rb") as f:
        specs, spec_text, data_tiling, repeats, timing, rounds, wants = pickle.load(f)
    default, tuned, ok = [[] for _ in specs], [[] for _ in specs], True
    for _ in range(rounds):
        for i, spec in enumerate(specs):
            src = R.default_source(spec)
            a = measure_source([spec], spec.name, src, "", None, repeats=repeats, use_cache=False, timing=timing)
            flags = R.DT_FLAGS if data_tiling else ()
            b = measure_source([spec], spec.name, src, spec_text, wants[i], flags, repeats=repeats, use_cache=False,
                               timing=timing)
            ok &= a.ok and b.ok
            default[i].append(a.time_s)
            tuned[i].append(b.time_s)
    est = TIMINGS[timing][2]
    print(json.dumps({"default_s": [float(est(t)) for t in default],
                      "tuned_s": [float(est(t)) for t in tuned], "ok": bool(ok)}))


# ---- programs --------------------------------------------------------------------------------------------
def load_program_spec(path: str) -> ProgramTable:
    """Programs from JSON: a list of {"name": str, "ops": [{"op": KIND, "args": [...], ...kw}]} where KIND is
    a constructor of `rl.programs` (matmul(m, n, k), batch_matmul(b, m, n, k, transpose_b=false),
    conv2d(oh, ow, f, kh, kw, c, stride=1), pooling(oh, ow, c, k, stride), elementwise(m, n, kind="bias_add"|
    "bias_gelu"|"relu"|"residual_add"), reduction(m, k, with_exp=false)); ≤ 3 ops per program, each op
    reading the one before."""
    from .. import programs as P

    kinds = ("matmul", "batch_matmul", "conv2d", "pooling", "elementwise", "reduction")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"program spec {path} does not exist")
    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"program spec {path} is not valid JSON: {e}") from None
    data = [data] if isinstance(data, dict) else data
    if not isinstance(data, list) or not data:
        raise ValueError(f"program spec {path}: expected a program object or a non-empty list of them")
    progs = []
    for i, prog in enumerate(data):
        where = f"{path}: program {i}"
        if not isinstance(prog, dict) or not isinstance(prog.get("ops"), list) or not prog["ops"]:
            raise ValueError(f"{where}: expected {{'name': str, 'ops': [...]}} with at least one op")
        ops = []
        for j, op in enumerate(prog["ops"]):
            kind = op.get("op") if isinstance(op, dict) else None
            if kind not in kinds:
                raise ValueError(f"{where}, op {j}: 'op' must be one of {kinds}, got {kind!r}")
            kw = {k: v for k, v in op.items() if k not in ("op", "args")}
            try:
                ops.append(getattr(P, kind)(*op.get("args", []), **kw))
            except (TypeError, ValueError) as e:
                raise ValueError(f"{where}, op {j} ({kind}): {e}") from None
        progs.append((str(prog.get("name", f"program{i}")), ops))
    return stack_programs(progs)


def program_table(which: str) -> ProgramTable:
    from . import suite

    tables = {"test": test_programs, "train": train_programs, "validation": suite.validation_programs}
    if which not in tables:
        raise ValueError(f"unknown program set {which!r}; expected one of {sorted(tables)}")
    return tables[which]()


@dataclasses.dataclass
class ProgramResult:
    name: str
    ops: list
    data_tiling: bool
    spec_path: str = ""
    remeasured: dict = dataclasses.field(default_factory=dict)

    @property
    def default_s(self) -> float:
        return sum(r.default_s for r in self.ops)

    @property
    def data_tiling_s(self) -> float:
        return sum(r.data_tiling_s if r.default.data_tiling and not np.isnan(r.data_tiling_s) else r.default_s
                   for r in self.ops)

    @property
    def tuned_s(self) -> float:
        return sum(r.chosen_s for r in self.ops)


def tune_table(table: ProgramTable, network: Any, params: Any, budget: int = 8, repeats: int = 5,
               timing: str = "cpu", out: str | None = None, fresh: bool = True, seed: int = 0,
               progress: bool = True, ranker: Any = None, n_candidates: int = 256) -> list[ProgramResult]:
    """Tune every program of `table`; see the module docstring. `ranker` (`rl.costnet.rank.Ranker`): measure
    its top `budget` of `n_candidates` random refinements (+ the policy's proposals where `network` is set)."""
    from tqdm import tqdm

    picked = list(range(len(table.names)))
    specs = {p: program_specs(table, p) for p in picked}
    flat = [(p, k, s) for p in picked for k, s in enumerate(specs[p])]
    defaults = [R.default_config(s) for _, _, s in flat]
    ops = [(s, d) for (_, _, s), d in zip(flat, defaults)]
    props = proposals(ops, network, params, budget, seed) if network is not None else None
    if ranker is not None:
        props = ranker.top_k(ops, budget, n_candidates, props, seed)
    bar = tqdm(total=2 * len(flat) + sum(map(len, props)), desc="tuning", unit="meas", disable=not progress,
               file=sys.stdout)
    results: dict[int, list[OpResult]] = {p: [] for p in picked}
    jobs = []
    for (p, k, s), d, cands in zip(flat, defaults, props):
        jobs += [(s, d, R.Refinement("keep")), (s, d, R.Refinement("data-tiling" if d.data_tiling else "keep"))]
        jobs += [(s, d, c) for c in cands]
    times = iter(measure_all(jobs, repeats, timing, bar))
    for (p, k, s), d, cands in zip(flat, defaults, props):
        base, dt = next(times), next(times)
        measured = [(c, next(times)) for c in cands]
        measured = [(c, base if c.mode == "keep" else t) for c, t in measured]
        results[p].append(OpResult(f"{k}:{s.name}", d, base, dt if d.data_tiling else float("nan"), measured))
    bar.close()
    out_results = []
    for p in tqdm(picked, desc="re-measuring in a fresh process", unit="prog", disable=not (progress and fresh),
                  file=sys.stdout):
        use_dt = choose(results[p])
        pr = ProgramResult(table.names[p], results[p], use_dt)
        text = program_spec_text(results[p])
        if out:
            os.makedirs(out, exist_ok=True)
            pr.spec_path = os.path.join(out, f"{table.names[p]}.spec.mlir".replace("/", "_").replace(">", "_"))
            with open(pr.spec_path, "w") as f:
                f.write(text or "// IREE's default is the fastest measured config for every op: no spec needed\n")
        if fresh:
            wants = [R.lowering_levels(r.default, r.chosen) if r.chosen.mode == "config" else None for r in results[p]]
            pr.remeasured = remeasure(specs[p], text, use_dt, repeats, timing, wants=wants)
        out_results.append(pr)
    return out_results


def geomean(x) -> float:
    x = np.asarray(x, float)
    return float(np.exp(np.mean(np.log(x)))) if len(x) else float("nan")


def op_rows(pr: ProgramResult) -> list[list[str]]:
    rows = []
    for r in pr.ops:
        greedy = r.candidates[0] if r.candidates else (R.Refinement("keep"), r.default_s)
        rows.append([pr.name, r.name, f"{r.default_s * 1e3:.3f}",
                     "—" if np.isnan(r.data_tiling_s) else f"{r.data_tiling_s * 1e3:.3f}",
                     f"{greedy[0].key()} {greedy[1] * 1e3:.3f}" if not np.isnan(greedy[1]) else f"{greedy[0].key()} failed",
                     f"{len(r.candidates)} ({r.n_failed} failed)", r.chosen.key(), f"{r.chosen_s * 1e3:.3f}",
                     f"{r.default_s / r.chosen_s:.2f}×"])
    return rows


def markdown(header: list[str], rows: list[list[str]]) -> str:
    from distilbert_jax.tables import markdown_table

    return markdown_table([dict(zip(header, r)) for r in rows], header)


def summary(results: list[ProgramResult]) -> tuple[str, dict]:
    """Per-program table and geomeans (from the fresh-process re-measurement where there is one)."""
    rows, sp, sp_dt = [], [], []
    for pr in results:
        rm = pr.remeasured
        d, t = (sum(rm["default_s"]), sum(rm["tuned_s"])) if rm else (pr.default_s, pr.tuned_s)
        sp.append(d / t)
        sp_dt.append(pr.data_tiling_s / pr.tuned_s)
        rows.append([pr.name, f"{pr.default_s * 1e3:.3f}", f"{pr.data_tiling_s * 1e3:.3f}",
                     f"{pr.tuned_s * 1e3:.3f}", "on" if pr.data_tiling else "off", f"{pr.default_s / pr.tuned_s:.2f}×",
                     f"{d / t:.2f}×" + ("" if not rm or rm.get("ok") else " (failed)"),
                     f"{pr.data_tiling_s / pr.tuned_s:.2f}×", os.path.basename(pr.spec_path) or "—"])
    g = {"tuned vs IREE default (re-measured)": geomean(sp), "tuned vs IREE data tiling": geomean(sp_dt),
         "min vs IREE default": float(min(sp)) if sp else float("nan")}
    head = ["program", "IREE default (ms)", "IREE data tiling (ms)", "tuned (ms)", "data tiling",
            "× default", "× default (fresh process)", "× data tiling", "spec"]
    return markdown(head, rows), g


# ---- the comparison table (random search, greedy, budget) -------------------------------------------------
def random_search(specs: list[OpSpec], k: int, repeats: int, timing: str, rng: np.random.Generator,
                  bar: Any = None) -> tuple[np.ndarray, int]:
    """Program times [k] of k uniformly random schedules in this space (one random episode per op; a failed
    op counts as IREE's default), and the number of failed op schedules."""
    ds = [R.default_config(s) for s in specs]
    base = measure_all([(s, d, R.Refinement("keep")) for s, d in zip(specs, ds)], repeats, timing)
    draws = [[R.random_refinement(d, rng) for d in ds] for _ in range(k)]
    t = np.asarray(measure_all([(s, d, r) for row in draws for s, d, r in zip(specs, ds, row)], repeats, timing,
                               bar)).reshape(k, len(specs))
    failed = int(np.isnan(t).sum())
    return np.where(np.isnan(t), np.asarray(base)[None], t).sum(1), failed


def compare(table: ProgramTable, network: Any, params: Any, k: int = 32, budget: int = 8, repeats: int = 5,
            timing: str = "cpu", seed: int = 0, tuned: list[ProgramResult] | None = None) -> dict:
    """Measured speedups over IREE's default per program: IREE data tiling, random search best of 1/8/32,
    the policy greedy (one measurement per op) and with `budget` (the tuner's choice)."""
    from tqdm import tqdm

    tuned = tuned or tune_table(table, network, params, budget, repeats, timing, fresh=False, seed=seed)
    rng = np.random.default_rng(seed)
    bar = tqdm(total=sum(len(pr.ops) for pr in tuned) * k, desc="random search", unit="meas", file=sys.stdout)
    rows = {}
    for pr in tuned:
        p = table.names.index(pr.name)
        rand, failed = random_search(program_specs(table, p), k, repeats, timing, rng, bar)
        greedy = sum(r.greedy_s for r in pr.ops)
        rows[pr.name] = {"IREE default": 1.0, "IREE data tiling": pr.default_s / pr.data_tiling_s,
                         **{f"random best of {n}": pr.default_s / rand[:n].min() for n in RANDOM_KS if n <= k},
                         "policy greedy": pr.default_s / greedy, f"policy budget {budget}": pr.default_s / pr.tuned_s,
                         "_random_failed": failed, "_greedy_failed": sum(r.greedy_failed for r in pr.ops),
                         "_default_ms": pr.default_s * 1e3}
    bar.close()
    return rows


def compare_tables(rows: dict) -> tuple[str, str]:
    methods = [m for m in next(iter(rows.values())) if not m.startswith("_")]
    per = [[name] + [f"{r['_default_ms']:.3f}"] + [f"{r[m]:.2f}×" for m in methods] for name, r in rows.items()]
    head = ["program", "IREE default (ms)"] + methods
    g = [[m, f"{geomean([r[m] for r in rows.values()]):.3f}×", f"{min(r[m] for r in rows.values()):.2f}×",
          f"{sum(r[m] > 1.0 for r in rows.values())}/{len(rows)}"] for m in methods]
    return markdown(head, per), markdown(["method", "geomean vs IREE default", "worst program", "programs faster"], g)


def evaluate_policy(network: Any, params: Any, budget: int = 8, seed: int = 0, programs: str = "test") -> dict:
    """Held-out evaluation for `rl.train` (env "refine"): geomean speedups over IREE's default, measured."""
    table = program_table(programs)
    res = tune_table(table, network, params, budget, fresh=False, seed=seed, progress=False)
    greedy = [pr.default_s / sum(r.greedy_s for r in pr.ops) for pr in res]
    return {"greedy ×IREE": geomean(greedy), f"budget {budget} ×IREE": geomean([pr.default_s / pr.tuned_s for pr in res]),
            "greedy worst": float(min(greedy))}


def cpu_name() -> str:
    from .measure import device_id

    return device_id()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m rl.mlir.tune", description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--programs", default=None, help="program set: test (18 held-out), validation (12), train")
    src.add_argument("--spec", help="JSON file of your own programs (see load_program_spec)")
    ap.add_argument("--program", action="append", help="only this program (repeatable)")
    ap.add_argument("--budget", type=int, default=8, help="policy proposals measured per op (default 8)")
    ap.add_argument("--policy", default=None, help="policy directory (default: the shipped one; with --rank-with: "
                    "none unless given, else its proposals join the ranked candidates)")
    ap.add_argument("--rank-with", default=None, help="cost-model directory (`python -m rl.cost_learned train`): "
                    "measure only its top --budget of --candidates random refinements per op")
    ap.add_argument("--candidates", type=int, default=256, help="random refinements ranked per op with --rank-with")
    ap.add_argument("--timing", choices=("cpu", "wall"), default="cpu", help="see rl.mlir.timer.TIMINGS")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (reduced by the timing's estimator: median for wall, minimum for cpu)")
    ap.add_argument("--out", default="results/tune", help="where specs and results.json go")
    ap.add_argument("--compare", action="store_true", help="also random search (best of 1/8/k) and greedy")
    ap.add_argument("--k", type=int, default=32, help="random schedules per program with --compare")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-fresh", action="store_true", help="skip re-measuring the chosen specs in a fresh process")
    ap.add_argument("--remeasure-job", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.remeasure_job:
        _remeasure_job(args.remeasure_job)
        return
    from distilbert_jax.clitools import InputError, need_dir, need_file, need_writable

    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    if args.budget < 1 or args.k < 1 or args.repeats < 1 or args.candidates < 1:
        ap.error("--budget, --k, --repeats and --candidates must be ≥ 1")
    if args.rank_with:
        need_dir(args.rank_with, "--rank-with", ("config.json",))
    need_writable(args.out, "--out")
    if args.spec:
        need_file(args.spec, "--spec")
    try:
        table = load_program_spec(args.spec) if args.spec else program_table(args.programs or "test")
        table = select_programs(table, args.program)
        network, params = (None, None) if args.rank_with and not args.policy else \
            load_policy(args.policy or DEFAULT_POLICY)
        ranker = None
        if args.rank_with:
            from ..costnet.rank import Ranker

            ranker = Ranker.load(args.rank_with)
    except (ValueError, FileNotFoundError) as e:
        raise InputError(str(e)) from None
    try:
        import iree.compiler  # noqa: F401
    except ImportError:
        raise InputError("the measured backend needs IREE: pip install -e '.[mlir]'") from None
    t0 = time.time()
    results = tune_table(table, network, params, args.budget, args.repeats, args.timing, args.out,
                         fresh=not args.no_fresh, seed=args.seed, ranker=ranker, n_candidates=args.candidates)
    how = f"cost model {args.rank_with} ranks {args.candidates} random candidates per op" if ranker else "policy"
    print(f"\nmeasured on {cpu_name()}, timing {args.timing!r}, budget {args.budget} per op ({how})\n")
    first = "model top-1 (ms)" if ranker else "policy greedy (ms)"
    print(markdown(["program", "op", "IREE default (ms)", "IREE data tiling (ms)", first,
                    "candidates", "chosen", "chosen (ms)", "× default"], [r for pr in results for r in op_rows(pr)]))
    table_md, g = summary(results)
    print("\n" + table_md)
    out = {"cpu": cpu_name(), "timing": args.timing, "budget": args.budget, "geomean": g,
           "programs": {pr.name: {"default_s": pr.default_s, "data_tiling_s": pr.data_tiling_s, "tuned_s": pr.tuned_s,
                                  "data_tiling": pr.data_tiling, "spec": pr.spec_path, "remeasured": pr.remeasured,
                                  "ops": [{"op": r.name, "default_s": r.default_s, "data_tiling_s": r.data_tiling_s,
                                           "chosen": r.chosen.key(), "chosen_s": r.chosen_s,
                                           "candidates": [[c.key(), t] for c, t in r.candidates]} for r in pr.ops]}
                        for pr in results}}
    if args.compare:
        rows = compare(table, network, params, args.k, args.budget, args.repeats, args.timing, args.seed,
                       tuned=results)
        per, gm = compare_tables(rows)
        print("\n" + per + "\n\n" + gm)
        out["compare"] = rows
    print(f"\ngeomean tuned vs IREE default (fresh process): {g['tuned vs IREE default (re-measured)']:.3f}×, "
          f"worst program {g['min vs IREE default']:.2f}×; vs IREE with data tiling: "
          f"{g['tuned vs IREE data tiling']:.3f}×   ({time.time() - t0:.0f} s)")
    print(f"specs: {args.out}/<program>.spec.mlir — iree-compile ... --iree-codegen-tuning-spec-path=<spec>"
          f" [{' '.join(R.DT_FLAGS)} where the table says data tiling on]")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(out, f, indent=1, default=str)


if __name__ == "__main__":
    from distilbert_jax.clitools import run_cli

    sys.exit(run_cli(main))
