"""GFLOP/s of each XLA:CPU GEMM back end at the model's GEMM shapes, beside `torch.matmul`, and whether the
rule of `distilbert_jax.gemm` picks the fastest back end on this CPU.

    python -m bench.gemm [--quick] [--rounds 5] [--per-round 5] [--backends xla onednn ...] [--out results/gemm]

Shapes M×K×N (base DistilBERT, seq 128): 128×768×768 and 128×768×3072 / 128×3072×768 (batch 1: q/k/v/out
and the FFN), 1024×768×3072 (batch 8 FFN), 2048³ (the matmul peak). dtypes: fp32, and bf16 as the model
runs it (bf16 operands, f32 result); `--dtypes bf16_out` adds bf16 → bf16 dots (what oneDNN could take).
XLA flags hold per process, so every back end runs in its own worker process (`bench.processes`), and torch
in another; the parent asks them in turn for a round (every shape, `per_round` timed calls each), so drift
on a shared machine hits all alike. Each figure is the median wall time as GFLOP/s; `cpu_gflops` divides by
the worker's process CPU time instead (steadier when other jobs load the machine). `lowering` is what the
compiled HLO made of the dot (`__ynn_fusion`, `__onednn_fusion`, `dot` = XLA's own; "+f32" when bf16
operands were converted to f32 first), so a flag that changed nothing shows. Writes `<out>.json`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import sys
import time

import numpy as np

from distilbert_jax.cpu import read_cpu
from distilbert_jax import mkl_gemm
from distilbert_jax.gemm import BACKENDS, configure_cpu, gemm_backend, library_dot
from distilbert_jax.tables import format_table
from bench.processes import Worker, threads

SHAPES = ((128, 768, 768), (128, 768, 3072), (128, 3072, 768), (1024, 768, 3072), (2048, 2048, 2048))
QUICK_SHAPES = SHAPES[:4]
DTYPES = ("fp32", "bf16", "bf16_out")
AGREE_WITHIN = 0.05  # the rule's choice "agrees" if within 5% of the best back end's geometric mean


def shape_name(shape) -> str:
    return "x".join(map(str, shape))


def parse_shape(text: str) -> tuple[int, int, int]:
    dims = tuple(int(d) for d in text.lower().split("x"))
    if len(dims) != 3 or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"a shape is MxKxN, e.g. 128x768x768; got {text!r}")
    return dims


def _operands(shape):
    m, k, n = shape
    rng = np.random.default_rng(0)
    return rng.standard_normal((m, k), np.float32), rng.standard_normal((k, n), np.float32)


def _time(fn, n: int) -> tuple[list[float], list[float]]:
    """(wall ms, process CPU ms) of n calls of fn."""
    wall, cpu = [], []
    for _ in range(n):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    return wall, cpu


# ---- builders, run inside worker processes (bench.processes "run") -------------------------------
_CALLS: dict[str, object] = {}  # this worker's compiled calls, kept between rounds
_LOWERING: dict[str, str] = {}


def lowering(hlo: str) -> str:
    """What a compiled dot became: the library fusion kind, or `dot` (XLA's own); "+f32" if it converts first."""
    kinds = sorted(set(re.findall(r'"kind":"(__\w+_fusion)"', hlo)))
    kinds += sorted(set(re.findall(r'custom_call_target="(distilbert_jax_mkl_\w+)"', hlo)))
    return (",".join(kinds) or "dot") + ("+f32" if re.search(r"= f32\[[\d,]+\]\{[\d,]+\} convert\(", hlo) else "")


def jax_round(backend: str, shapes: list, dtypes: list, n: int) -> dict:
    """One round of `n` timed calls per (dtype, shape) with XLA:CPU set to `backend` (set on the first call,
    before XLA starts in this worker)."""
    if not _CALLS:
        choice = configure_cpu(backend=backend)
        if not choice.applied:
            raise RuntimeError(f"could not apply GEMM back end {backend}: XLA had already started")
    import jax
    import jax.numpy as jnp

    out = {}
    for dtype in dtypes:
        for shape in shapes:
            key = f"{dtype} {shape_name(shape)}"
            if key not in _CALLS:
                a, b = _operands(shape)
                low = jnp.float32 if dtype == "fp32" else jnp.bfloat16
                res = jnp.bfloat16 if dtype == "bf16_out" else jnp.float32
                a, b = jnp.asarray(a, low), jnp.asarray(b, low)
                if library_dot(low) and dtype != "bf16_out":  # the mkl back end: what modeling.matmul calls
                    f = jax.jit(mkl_gemm.dot).lower(a, b).compile()
                else:
                    f = jax.jit(lambda a, b, res=res: jnp.dot(a, b, preferred_element_type=res)).lower(a, b).compile()
                _LOWERING[key] = lowering(f.as_text())
                _CALLS[key] = lambda f=f, a=a, b=b: f(a, b).block_until_ready()
                _time(_CALLS[key], 2)  # warm-up
            wall, cpu = _time(_CALLS[key], n)
            out[key] = dict(wall=wall, cpu=cpu, lowering=_LOWERING[key])
    return out


def torch_round(shapes: list, dtypes: list, n: int) -> dict:
    """The same round with `torch.matmul` (bf16: bf16 in and out, f32 accumulation inside)."""
    import torch

    torch.set_num_threads(threads())
    out = {}
    for dtype in dtypes:
        for shape in shapes:
            key = f"{dtype} {shape_name(shape)}"
            if key not in _CALLS:
                a, b = (torch.from_numpy(x).to(torch.float32 if dtype == "fp32" else torch.bfloat16) for x in _operands(shape))
                _CALLS[key] = lambda a=a, b=b: torch.matmul(a, b)
                _time(_CALLS[key], 2)
            wall, cpu = _time(_CALLS[key], n)
            out[key] = dict(wall=wall, cpu=cpu, lowering="torch")
    return out


# ---- the parent --------------------------------------------------------------------------------
def measure(backends: list[str], shapes: list, dtypes: list, rounds: int, per_round: int, n_threads: int,
            with_torch: bool = True) -> dict[str, dict]:  # fmt: skip
    """{who: {"<dtype> <shape>": {"wall": [ms], "cpu": [ms], "lowering": str}}}, who = a back end or "torch"."""
    cases = {name: ("bench.gemm:jax_round", dict(backend=name)) for name in backends}
    if with_torch:
        cases["torch"] = ("bench.gemm:torch_round", {})
    workers = {who: Worker(n_threads) for who in cases}
    results: dict[str, dict] = {who: {} for who in cases}
    try:
        for _ in range(rounds):
            for who, (builder, kwargs) in cases.items():
                got = workers[who].ask(op="run", builder=builder, kwargs=dict(kwargs, shapes=shapes, dtypes=dtypes, n=per_round))
                for key, r in got["result"].items():
                    acc = results[who].setdefault(key, dict(wall=[], cpu=[], lowering=r["lowering"]))
                    acc["wall"] += r["wall"]
                    acc["cpu"] += r["cpu"]
    finally:
        for worker in workers.values():
            worker.close()
    return results


def gflops(shape, ms: float) -> float:
    m, k, n = shape
    return 2 * m * k * n / ms / 1e6


def _geomean(values: list[float]) -> float:
    return math.exp(statistics.fmean(math.log(v) for v in values))


def summarize(results: dict, shapes: list, dtypes: list, cpu, judge: str = "wall") -> dict[str, list[dict]]:
    """Tables: "wall" and "per_cpu_second" (GFLOP/s per (dtype, shape), per wall / per process CPU second),
    "verdicts" (per dtype: geometric means by `judge`'s clock, the best back end, the rule's choice, whether
    they agree), "lowering" (what the compiled HLO made of the dot)."""
    backends = [w for w in results if w != "torch"]
    tables: dict[str, list[dict]] = {"wall": [], "per_cpu_second": [], "verdicts": [], "lowering": []}
    for dtype in dtypes:
        means: dict[str, list[float]] = {w: [] for w in results}
        for clock, table in (("wall", "wall"), ("cpu", "per_cpu_second")):
            for shape in shapes:
                key = f"{dtype} {shape_name(shape)}"
                row: dict = dict(dtype=dtype, shape=shape_name(shape))
                for who in results:
                    g = gflops(shape, statistics.median(results[who][key][clock]))
                    row[who] = round(g, 1)
                    if clock == judge:
                        means[who].append(g)
                row["best"] = max(backends, key=lambda w: row[w])
                tables[table].append(row)
        geo = {w: _geomean(gs) for w, gs in means.items()}
        best = max(backends, key=geo.get)
        rule = gemm_backend(cpu, "fp32" if dtype == "fp32" else "bf16", mkl=mkl_gemm.available()[0])[0]
        verdict = dict(dtype=dtype, judged_by=judge, **{w: round(geo[w], 1) for w in results}, best=best, rule=rule)
        if rule not in geo:
            verdict["agrees"] = "rule's back end not measured"
        elif geo[rule] >= (1 - AGREE_WITHIN) * geo[best]:
            verdict["agrees"] = "yes" if rule == best else f"yes (within {AGREE_WITHIN:.0%} of {best})"
        else:
            verdict["agrees"] = f"NO: {best} {geo[best] / geo[rule]:.2f}x faster (try DISTILBERT_JAX_GEMM={best})"
        tables["verdicts"].append(verdict)
        tables["lowering"].append(dict(dtype=dtype, **{w: " | ".join(sorted({results[w][f"{dtype} {shape_name(s)}"]["lowering"]
                                                                             for s in shapes})) for w in backends}))  # fmt: skip
    return tables


def model_case(backends: list[str], dtypes: list, batch: int, rounds: int, per_round: int, n_threads: int) -> list[dict]:
    """Base DistilBERT forward (seq 128, `batch`) with each back end, each in its own worker (bench.speed's
    builder), alternating rounds per dtype: the back ends' effect on the whole model, not one GEMM."""
    import tempfile

    from bench.common import hf_model
    from bench.processes import alternating, medians

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        hf_model("base", "big", randomize=False).save_pretrained(tmp)
        for dtype in dtypes:
            if dtype == "bf16_out":
                continue
            cases = {b: ("bench.speed:jax_forward", dict(path=tmp, batch=batch, seq=128, dtype=dtype, gemm=b)) for b in backends}
            cpu: dict[str, list[float]] = {}
            ms = medians(alternating(cases, rounds, per_round, n_threads, cpu_ms=cpu))
            cpu_med = medians(cpu)
            rows.append(dict(dtype=dtype, batch=batch, **{b: round(ms[b], 1) for b in backends}, best=min(backends, key=ms.get),
                             cpu_ms=" ".join(f"{b}={cpu_med[b]:.0f}" for b in backends),
                             best_by_cpu=min(backends, key=cpu_med.get)))  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 rounds, without the 2048^3 shape")
    parser.add_argument("--rounds", type=int, default=None, help="alternating rounds (default 5, quick 3)")
    parser.add_argument("--per-round", type=int, default=5, help="timed calls per shape per round")
    parser.add_argument("--backends", nargs="+", choices=sorted(BACKENDS), default=list(BACKENDS))
    parser.add_argument("--dtypes", nargs="+", choices=DTYPES, default=["fp32", "bf16"])
    parser.add_argument("--shapes", nargs="+", type=parse_shape, default=None, help="MxKxN (default: the model's)")
    parser.add_argument("--no-torch", action="store_true", help="skip torch.matmul")
    parser.add_argument("--judge", choices=("wall", "cpu", "auto"), default="auto",
                        help="clock the verdict uses: wall time, process CPU time, or auto = CPU time when the load "
                             "average exceeds the core count (other jobs running), else wall")  # fmt: skip
    parser.add_argument("--model", type=int, nargs="*", default=None, metavar="BATCH",
                        help="also time the base DistilBERT forward (seq 128) per back end at these batch sizes (default 1)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", default="results/gemm", help="writes <out>.json")
    args = parser.parse_args(argv)
    from distilbert_jax.clitools import need_writable

    need_writable(args.out + ".json", "--out")      # before any slow work
    rounds = args.rounds or (3 if args.quick else 5)
    model_batches = None if args.model is None else (args.model or [1])
    shapes = [list(s) for s in (args.shapes or (QUICK_SHAPES if args.quick else SHAPES))]
    cpu = read_cpu()
    print(f"bench.gemm on {cpu.describe()} [{cpu.vendor or 'unknown vendor'}]; back ends {args.backends}"
          f"{'' if args.no_torch else ' + torch'}, each in its own process, {args.threads} threads", file=sys.stderr)  # fmt: skip
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    results = measure(args.backends, shapes, args.dtypes, rounds, args.per_round, args.threads, not args.no_torch)
    judge = args.judge if args.judge != "auto" else ("cpu" if load > cpu.cores else "wall")
    tables = summarize(results, shapes, args.dtypes, cpu, judge)
    if model_batches:
        tables["model_ms"] = [r for b in model_batches for r in model_case(args.backends, args.dtypes, b, rounds, 2, args.threads)]

    print(f"\nGFLOP/s, median wall time of {rounds} rounds x {args.per_round} calls (what the targets use):")
    print(format_table(tables["wall"], list(tables["wall"][0])))
    print("\nGFLOP/s per CPU-second of the worker process (a per-core rate; steadier than wall time on a loaded machine):")
    print(format_table(tables["per_cpu_second"], list(tables["per_cpu_second"][0])))
    print("\nWhat each back end's flags made of the dot (compiled HLO):")
    print(format_table(tables["lowering"], list(tables["lowering"][0])))
    if model_batches:
        print("\nBase DistilBERT forward, seq 128, ms (median wall time; cpu_ms: the worker's CPU time per call), each back end "
              "in its own process:")  # fmt: skip
        print(format_table(tables["model_ms"], list(tables["model_ms"][0])))
    loaded = f" (load average {load:.1f} > {cpu.cores} cores: wall times are unreliable)" if judge == "cpu" else ""
    print(f"\nSummary: geometric mean over the shapes of GFLOP/s by {judge} time{loaded}, the fastest back end, and the "
          "rule's choice:")  # fmt: skip
    print(format_table(tables["verdicts"], list(tables["verdicts"][0])))
    print(f"\nCPU: {cpu.describe()}; flags avx512f={cpu.has_avx512} avx512_bf16={cpu.has_avx512_bf16} amx={cpu.has_amx}; "
          f"load average at start {load:.1f}")  # fmt: skip
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out + ".json", "w") as f:
        json.dump(dict(cpu=dict(vendor=cpu.vendor, model=cpu.model, cores=cpu.cores, avx512=cpu.has_avx512,
                                avx512_bf16=cpu.has_avx512_bf16, amx=cpu.has_amx), load_average=load, judged_by=judge,
                       backends={b: list(BACKENDS[b].flags) for b in args.backends}, threads=args.threads,
                       rounds=rounds, per_round=args.per_round, **tables, raw=results), f, indent=1)  # fmt: skip
    print(f"wrote {args.out}.json")
    return 0


if __name__ == "__main__":
    from distilbert_jax.clitools import run_cli

    sys.exit(run_cli(main))
