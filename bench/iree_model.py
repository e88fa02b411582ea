"""End-to-end latency of our DistilBERT forward through IREE (default, data tiling, tuned), XLA and PyTorch.

    python -m bench.iree_model [--size base|tiny] [--batch 1 8] [--budget 8] [--no-torch] [--out results/iree_model]

Per batch size: the jitted forward (last hidden state, seq 128, random init) is lowered to StableHLO and
compiled by IREE for the host CPU; `rl.mlir.jax_model.tune_model` tunes each dispatch group (root op +
operand types) with `--budget` candidate configs, once without and once with data tiling (+ ukernels), and
writes one tuning spec each. "IREE tuned" is the faster whole model of the two (single-thread CPU time);
its spec and flags are printed and saved. Every IREE output is checked against `jax.jit`'s (max |Δ| column).
Then each engine runs in its own worker process (`bench.processes`: same thread count, alternating rounds):
IREE default, IREE data tiling, IREE tuned (both variants), XLA:CPU `jax.jit`, PyTorch `transformers`
(eval, eager attention, the same weights). Median wall ms and process CPU ms per call. Writes
`<out>/results.json`, `<out>/results.md`, and per batch the compiled modules and tuning specs (`<out>/b<B>/`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

from distilbert_jax.clitools import InputError, need_writable, run_cli
from distilbert_jax.hardware import cpu_description
from distilbert_jax.tables import markdown_table

from bench.processes import alternating, run_in_fresh_process, threads

DT = "data tiling"


# ---- builders, run inside worker processes (bench.processes) -----------------------------------
def iree_case(vmfb: str, inputs: str):
    """IREE's multi-threaded CPU driver running the compiled model `vmfb` on the arrays of `inputs` (.npz)."""
    import iree.runtime as rt

    ctx = rt.SystemContext(config=rt.Config("local-task"))
    with open(vmfb, "rb") as f:
        ctx.add_vm_module(rt.VmModule.copy_buffer(ctx.instance, f.read()))
    fn = ctx.modules.module["main"]
    with np.load(inputs) as z:
        dev = [rt.asdevicearray(ctx.config.device, z[f"a{i}"]) for i in range(len(z.files))]
    return lambda: fn(*dev).to_host()


def xla_case(size: str, batch: int, seq: int, seed: int):
    """Our forward under `jax.jit` (XLA:CPU, the project's fp32 GEMM back end)."""
    from bench.common import configure_gemm

    configure_gemm("fp32")
    import jax

    from rl.mlir.jax_model import ModelCase, build

    model, variables, ids, mask = build(ModelCase(size, batch, seq, seed))
    f = jax.jit(lambda v, i, m: model.apply(v, i, m).last_hidden_state)
    return lambda: f(variables, ids, mask).block_until_ready()


def torch_model(size: str, batch: int, seq: int, seed: int):
    """(`transformers` DistilBertModel with our random-init weights, eval, eager attention; ids; mask)."""
    import torch
    import transformers

    from distilbert_jax.weights import params_to_hf
    from rl.mlir.jax_model import ModelCase, build

    torch.set_num_threads(threads())
    model, variables, ids, mask = build(ModelCase(size, batch, seq, seed))
    config = transformers.DistilBertConfig(**model.config.to_hf())
    config._attn_implementation = "eager"
    hf = transformers.DistilBertModel(config).eval()
    state = {k: torch.from_numpy(np.array(v)) for k, v in params_to_hf(variables, model).items()}
    missing, unexpected = hf.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"weights do not fit transformers' DistilBertModel: missing {missing}, unexpected {unexpected}")
    return hf, torch.from_numpy(ids.astype(np.int64)), torch.from_numpy(mask.astype(np.int64))


def torch_case(size: str, batch: int, seq: int, seed: int):
    import torch

    hf, ids, mask = torch_model(size, batch, seq, seed)

    def run():
        with torch.inference_mode():
            return hf(input_ids=ids, attention_mask=mask).last_hidden_state

    return run


def torch_diff(size: str, batch: int, seq: int, seed: int, expected: str) -> dict:
    """max |transformers − jax.jit| of the last hidden state (`expected`: .npy of jax.jit's output)."""
    run = torch_case(size, batch, seq, seed)
    return {"max_abs_diff": float(np.abs(run().numpy().astype(np.float64) - np.load(expected)).max())}


# ---- one batch size ----------------------------------------------------------------------------
def tune_and_compile(case, budget: int, seed: int, folder: str) -> tuple[dict, dict, list]:
    """Tune `case` without and with data tiling; compile the four IREE variants into `folder` → ({variant:
    vmfb path}, {variant: max |Δ| vs jax.jit}, per-group rows)."""
    from rl.mlir import jax_model as J
    from rl.mlir import refine as R

    exp = J.export(case)
    os.makedirs(folder, exist_ok=True)
    np.savez(os.path.join(folder, "inputs.npz"), **{f"a{i}": x for i, x in enumerate(exp.inputs)})
    np.save(os.path.join(folder, "expected.npy"), exp.expected)
    tuned = {flags: J.tune_model(exp, flags, budget, seed) for flags in ((), R.DT_FLAGS)}
    variants = {"IREE default": ((), ""), f"IREE {DT}": (R.DT_FLAGS, ""),
                "IREE tuned": ((), tuned[()].spec_text), f"IREE tuned + {DT}": (R.DT_FLAGS, tuned[R.DT_FLAGS].spec_text)}
    paths, errors, rows = {}, {}, []
    for name, (flags, spec) in variants.items():
        vmfb = J.compile_model(exp.text, True, flags, spec)
        stem = name.replace(" ", "_").replace("+", "").replace("__", "_")
        paths[name] = os.path.join(folder, stem + ".vmfb")
        with open(paths[name], "wb") as f:
            f.write(vmfb)
        if spec:
            with open(os.path.join(folder, stem + ".spec.mlir"), "w") as f:
                f.write(spec)
        out, times = J.run_model(vmfb, exp.inputs, "cpu", 3)
        errors[name] = (J.max_abs_diff(out, exp.expected), min(times))
    for flags, res in tuned.items():
        for g in res.groups:
            ok = [t for _, t in g.candidates if not np.isnan(t)]
            rows.append({"batch": case.batch, DT: "on" if flags else "off", "group (root op, operand types)": g.label,
                         "dispatches": len(g.dispatches), "IREE (ms)": f"{g.default_s * 1e3:.3f}",
                         "candidates": f"{len(g.candidates)} ({len(g.candidates) - len(ok)} failed)",
                         "chosen": g.chosen.key(), "chosen (ms)": f"{g.chosen_s * 1e3:.3f}",
                         "×": f"{g.default_s / g.chosen_s:.2f}"})
        if res.dropped:
            print(f"dropped by the whole-model check ({DT} {'on' if flags else 'off'}): {res.dropped}")
    return paths, errors, rows


def measure_batch(args, batch: int) -> tuple[list[dict], list[dict], dict]:
    from rl.mlir.jax_model import ModelCase

    case = ModelCase(args.size, batch, args.seq, args.seed)
    folder = os.path.join(args.out, f"b{batch}")
    t0 = time.time()
    paths, errors, group_rows = tune_and_compile(case, args.budget, args.seed, folder)
    tune_s = time.time() - t0
    best = min(("IREE tuned", f"IREE tuned + {DT}"), key=lambda n: errors[n][1])
    kw = dict(size=args.size, batch=batch, seq=args.seq, seed=args.seed)
    cases = {n: ("bench.iree_model:iree_case", {"vmfb": p, "inputs": os.path.join(folder, "inputs.npz")})
             for n, p in paths.items()}
    cases["XLA:CPU (jax.jit)"] = ("bench.iree_model:xla_case", kw)
    if not args.no_torch:
        cases["PyTorch (transformers)"] = ("bench.iree_model:torch_case", kw)
        diff = run_in_fresh_process("bench.iree_model:torch_diff", threads(), **kw,
                                    expected=os.path.join(folder, "expected.npy"))
        errors["PyTorch (transformers)"] = (diff["max_abs_diff"], float("nan"))
    cpu: dict = {}
    times = alternating(cases, args.rounds, args.per_round, threads(), cpu_ms=cpu)
    med = {n: statistics.median(t) for n, t in times.items()}
    base = med["IREE default"]
    rows = []
    for n in cases:
        label = n + (" ← chosen" if n == best else "")
        rows.append({"batch": batch, "engine": label, "median ms": f"{med[n]:.2f}",
                     "CPU ms / call": f"{statistics.median(cpu[n]):.1f}", "× IREE default": f"{base / med[n]:.2f}",
                     "1-thread CPU ms": f"{errors[n][1] * 1e3:.1f}" if n in paths else "—",
                     "max |Δ| vs jax.jit": f"{errors[n][0]:.1e}" if n in errors else "—"})
    summary = {"median_ms": med, "cpu_ms": {n: statistics.median(c) for n, c in cpu.items()},
               "single_thread_cpu_ms": {n: e[1] * 1e3 for n, e in errors.items() if n in paths},
               "max_abs_diff": {n: e[0] for n, e in errors.items()}, "chosen": best, "tune_s": tune_s,
               "tuned_vs_default": base / med[best], "tuned_vs_data_tiling": med[f"IREE {DT}"] / med[best],
               "spec": paths[best].replace(".vmfb", ".spec.mlir")}
    return rows, group_rows, summary


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.iree_model", description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="base", choices=("base", "tiny"), help="DistilBERT config (default base)")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--budget", type=int, default=8, help="candidate configs measured per dispatch group")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--per-round", type=int, default=3)
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch row")
    ap.add_argument("--out", default="results/iree_model", help="folder for the tables, specs and modules")
    args = ap.parse_args(argv)
    if args.budget < 1 or args.rounds < 1 or args.per_round < 1 or min(args.batch) < 1 or args.seq < 1:
        ap.error("--budget, --rounds, --per-round, --batch and --seq must be ≥ 1")
    need_writable(args.out, "--out")
    try:
        import iree.compiler  # noqa: F401
        import iree.runtime  # noqa: F401
    except ImportError:
        raise InputError("this benchmark needs IREE: pip install -e '.[mlir]'") from None
    cpu = cpu_description()
    print(f"CPU: {cpu}; {threads()} threads per engine", file=sys.stderr)
    rows, groups, summary = [], [], {}
    for b in args.batch:
        r, g, s = measure_batch(args, b)
        rows += r
        groups += g
        summary[f"batch {b}"] = s
    cols = ["batch", "engine", "median ms", "CPU ms / call", "× IREE default", "1-thread CPU ms", "max |Δ| vs jax.jit"]
    gcols = list(groups[0]) if groups else []
    head = (f"DistilBERT-{args.size} forward, seq {args.seq}, fp32, on {cpu}; tuning budget {args.budget} "
            f"per dispatch group")
    md = f"{head}\n\n{markdown_table(rows, cols)}\nPer dispatch group (1-thread CPU time):\n\n{markdown_table(groups, gcols)}"
    print("\n" + md)
    for name, s in summary.items():
        print(f"{name}: tuned ({s['chosen']}) {s['tuned_vs_default']:.2f}× IREE default, "
              f"{s['tuned_vs_data_tiling']:.2f}× IREE {DT}; goal ≥ 1.2× IREE default "
              f"{'met' if s['tuned_vs_default'] >= 1.2 else 'NOT met'}; spec {s['spec']}")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(md)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"cpu": cpu, "args": vars(args), "rows": rows, "groups": groups, "summary": summary}, f, indent=1)


if __name__ == "__main__":
    sys.exit(run_cli(main))
