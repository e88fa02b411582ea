"""Forward latency of distilbert_jax vs PyTorch `transformers`, two ways, plus load time and memory.

    python -m bench.speed [--quick] [--rounds 5] [--per-round 3] [--arch distilbert bert] [--out results/speed]

For each case (DistilBERT size small|big and BERT-base, batch 1|8, seq 128, fp32 | bf16) it times:
- **separate processes** (the figures the targets use): our forward and torch's each in its own
  worker process (`bench.processes`), same thread count, alternating rounds of calls; medians.
- **interleaved in one process** (one JAX call, one torch call, repeat): shown for comparison — on a
  2-core machine the two thread pools slow each other, inflating both.
Each worker applies its dtype's XLA:CPU GEMM back end (`distilbert_jax.configure_cpu`) before XLA starts; the
interleaved rows share this process, which uses the fp32 choice (a bf16 choice that differs is warned about).
bf16 rows: our forward with bf16 params cast once at load (`param_dtype=jnp.bfloat16`, LayerNorm and
softmax in float32) against torch under CPU autocast bf16. Each time comes with GFLOP/s, beside the
machine's measured matmul peak (2048³ `jnp.dot` / `torch.matmul`, fp32 and bf16). Also: checkpoint load
time and peak RSS growth (`VmHWM`, fresh process) of ours vs `transformers`, and WordPiece tokenization
of 1000 sentences vs `DistilBertTokenizerFast`. Writes `<out>.json` and `<out>.md`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

import distilbert_jax as dj
from distilbert_jax.nas.predictor import encoder_flops
from distilbert_jax.nas.space import Arch
from distilbert_jax.tables import markdown_table
from bench.common import configure_gemm, cpu_description, gemm_report, hf_model, print_table, torch_reference
from distilbert_jax.clitools import need_writable, run_cli
from bench.corpus import sentences, train_vocab
from bench.processes import alternating, call_builder, medians, reset_peak_rss, run_in_fresh_process, threads, vm_kib

# DistilBERT (size, batch) -> the most ours-ms / torch-ms (same dtype) asked for, separate processes
TARGETS = {("big", 1): 1.0, ("big", 8): 0.9, ("small", 1): 1.0}
DTYPES = {"fp32": jnp.float32, "bf16": jnp.bfloat16}


def _interleaved(fns: dict[str, callable], repeats: int) -> dict[str, float]:
    for fn in fns.values():  # warm-up (compile / allocator)
        fn(), fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def forward_flops(config: dj.DistilBertConfig, batch: int, seq: int) -> float:
    """Matmul FLOPs of one encoder forward (DistilBERT or BERT: the config maps both)."""
    arch = Arch(config.n_layers, config.dim, config.n_heads, config.attention_dim, config.hidden_dim)
    return float(encoder_flops(arch, batch, seq))


# ---- builders, run inside worker processes (bench.processes) -----------------------------------
def jax_forward(path: str, batch: int, seq: int, dtype: str, gemm: str | None = None):
    """Our jitted forward of the model in `path` (bf16: params cast once at load), with GEMM back end `gemm`
    (default: distilbert_jax.gemm's choice)."""
    configure_gemm(dtype, gemm)
    model, variables = dj.from_pretrained(path, "base", dtype=DTYPES[dtype], param_dtype=DTYPES[dtype])
    ids, mask = _inputs(model.config.vocab_size, batch, seq)
    ids, mask = jnp.asarray(ids, jnp.int32), jnp.asarray(mask, jnp.int32)
    f = jax.jit(lambda v, i, m: model.apply(v, i, m).last_hidden_state)
    return lambda: f(variables, ids, mask).block_until_ready()


def torch_forward(path: str, batch: int, seq: int, dtype: str):
    """`transformers`' eval-mode forward of the model in `path` (bf16: CPU autocast)."""
    import contextlib

    import torch
    import transformers

    torch.set_num_threads(threads())
    transformers.utils.logging.disable_progress_bar()
    hf = transformers.AutoModel.from_pretrained(path, attn_implementation="eager").eval()
    ids, mask = (torch.from_numpy(a.astype(np.int64)) for a in _inputs(hf.config.vocab_size, batch, seq))

    def run():
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext()
        with torch.inference_mode(), ctx:
            hf(input_ids=ids, attention_mask=mask)

    return run


def _inputs(vocab: int, batch: int, seq: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.random.default_rng(0).integers(5, vocab, size=(batch, seq)).astype(np.int32)
    return ids, np.ones((batch, seq), np.int32)


def jax_matmul(n: int, dtype: str):
    configure_gemm(dtype)
    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), DTYPES[dtype])
    f = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))
    return lambda: f(a, a).block_until_ready()


def torch_matmul(n: int, dtype: str):
    import torch

    torch.set_num_threads(threads())
    a = torch.randn(n, n).to(torch.bfloat16 if dtype == "bf16" else torch.float32)
    return lambda: torch.matmul(a, a)


def jax_load(path: str) -> dict:
    """Seconds and peak RSS growth (MB) of `from_pretrained` in this (fresh) process."""
    jnp.zeros(1).block_until_ready()  # backend up before measuring
    reset_peak_rss()
    before = vm_kib("VmRSS")
    t0 = time.perf_counter()
    _, variables = dj.from_pretrained(path, "base")
    jax.block_until_ready(variables)
    return dict(seconds=time.perf_counter() - t0, peak_growth_mb=(vm_kib("VmHWM") - before) / 1024)


def torch_load(path: str) -> dict:
    import torch
    import transformers

    torch.set_num_threads(threads())
    transformers.utils.logging.disable_progress_bar()
    reset_peak_rss()
    before = vm_kib("VmRSS")
    t0 = time.perf_counter()
    transformers.AutoModel.from_pretrained(path)
    return dict(seconds=time.perf_counter() - t0, peak_growth_mb=(vm_kib("VmHWM") - before) / 1024)


# ---- cases --------------------------------------------------------------------------------------
def forward_case(path: str, arch: str, size: str, batch: int, seq: int, rounds: int, per_round: int, n_threads: int,
                 interleaved_repeats: int) -> list[dict]:  # fmt: skip
    """Rows for one shape: separate-process and interleaved medians, fp32 and bf16."""
    cases = {
        f"{who}_{dtype}": (f"bench.speed:{who}_forward", dict(path=path, batch=batch, seq=seq, dtype=dtype))
        for dtype in DTYPES
        for who in ("jax", "torch")
    }
    separate = medians(alternating(cases, rounds, per_round, n_threads))
    together = _interleaved({name: call_builder(*spec) for name, spec in cases.items()}, interleaved_repeats)
    flops = forward_flops(dj.DistilBertConfig.from_json_file(path), batch, seq)
    rows = []
    for dtype in DTYPES:
        ours, theirs = separate[f"jax_{dtype}"], separate[f"torch_{dtype}"]
        target = TARGETS.get((size, batch)) if arch == "distilbert" else None
        ratio = ours / theirs
        rows.append(dict(
            model=arch, size=size, batch=batch, seq=seq, dtype=dtype, ours_ms=round(ours, 2), torch_ms=round(theirs, 2),
            ours_over_torch=round(ratio, 2), target=f"<= {target}" if target else "",
            met="" if target is None else ("yes" if ratio <= target else "NO"),
            ours_gflops=round(flops / ours / 1e6, 1), torch_gflops=round(flops / theirs / 1e6, 1),
            interleaved_ours_ms=round(together[f"jax_{dtype}"], 2), interleaved_torch_ms=round(together[f"torch_{dtype}"], 2),
        ))  # fmt: skip
    return rows


def peak_case(n: int, rounds: int, n_threads: int) -> list[dict]:
    """Measured GFLOP/s of an n³ matmul, fp32 and bf16, JAX and torch (each in its own process)."""
    cases = {f"{who}_{dtype}": (f"bench.speed:{who}_matmul", dict(n=n, dtype=dtype)) for dtype in DTYPES for who in ("jax", "torch")}
    ms = medians(alternating(cases, rounds, 2, n_threads))
    return [dict(matmul=f"{n}^3", dtype=dtype, jax_gflops=round(2 * n**3 / ms[f"jax_{dtype}"] / 1e6, 1),
                 torch_gflops=round(2 * n**3 / ms[f"torch_{dtype}"] / 1e6, 1)) for dtype in DTYPES]  # fmt: skip


def load_case(path: str, n_threads: int, repeats: int) -> dict:
    """Load time and peak RSS growth, ours vs transformers, medians over fresh processes."""
    file_mb = sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path) if f.endswith(".safetensors")) / 2**20
    runs = {who: [run_in_fresh_process(f"bench.speed:{who}_load", n_threads, path=path) for _ in range(repeats)]
            for who in ("jax", "torch")}  # fmt: skip
    med = {who: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for who, rs in runs.items()}
    return dict(file_mb=round(file_mb, 1), ours_s=round(med["jax"]["seconds"], 2), torch_s=round(med["torch"]["seconds"], 2),
                ours_peak_growth_mb=round(med["jax"]["peak_growth_mb"]), torch_peak_growth_mb=round(med["torch"]["peak_growth_mb"]),
                ours_growth_over_file=round(med["jax"]["peak_growth_mb"] / file_mb, 2), target="<= 1.3",
                met="yes" if med["jax"]["peak_growth_mb"] <= 1.3 * file_mb else "NO")  # fmt: skip


def tokenizer_case(n: int, repeats: int) -> dict:
    """Median ms to tokenize `n` sentences (pad + truncate to 128) with ours vs DistilBertTokenizerFast."""
    from transformers import DistilBertTokenizerFast

    texts = sentences(n)
    with tempfile.TemporaryDirectory() as tmp:
        train_vocab(texts, os.path.join(tmp, "vocab.txt"))
        ours = dj.Tokenizer.from_pretrained(tmp)
        theirs = DistilBertTokenizerFast.from_pretrained(tmp)
    ms = _interleaved(
        {
            "ours": lambda: ours(texts, max_length=128),
            "hf": lambda: theirs(texts, max_length=128, padding=True, truncation=True, return_tensors="np"),
        },
        repeats,
    )
    tokens = int(ours(texts, max_length=128).attention_mask.sum())
    return dict(sentences=n, tokens=tokens, ours_ms=round(ms["ours"], 2), hf_fast_ms=round(ms["hf"], 2),
                ratio=round(ms["hf"] / ms["ours"], 2), ours_tokens_per_s=int(tokens / ms["ours"] * 1e3))  # fmt: skip


FORWARD_COLUMNS = ["model", "size", "batch", "seq", "dtype", "ours_ms", "torch_ms", "ours_over_torch", "target", "met", "ours_gflops",
                   "torch_gflops", "interleaved_ours_ms", "interleaved_torch_ms"]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer rounds (for the set-up command)")
    parser.add_argument("--rounds", type=int, default=None, help="alternating rounds per case (default 7, quick 3)")
    parser.add_argument("--per-round", type=int, default=3, help="timed calls per case per round")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--arch", nargs="+", choices=("distilbert", "bert"), default=["distilbert", "bert"],
                        help="models to time: DistilBERT small + base, and/or BERT-base (default both)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="intra-op threads of each framework")
    parser.add_argument("--out", default="results/speed", help="writes <out>.json and <out>.md")
    args = parser.parse_args(argv)
    need_writable(args.out + ".json", "--out")  # before minutes of timing
    rounds = args.rounds or (3 if args.quick else 7)
    configure_gemm("fp32")  # this process (the interleaved rows); each worker applies its own dtype's choice
    gemm = gemm_report()
    torch, device = torch_reference("distilbert_jax forward speed")
    cpu = cpu_description()
    print(f"CPU: {cpu}", file=sys.stderr)
    rows, load = [], None
    with tempfile.TemporaryDirectory() as tmp:
        models = [(arch, size) for arch in args.arch for size in (("small", "big") if arch == "distilbert" else ("big",))]
        for arch, size in models:
            path = os.path.join(tmp, f"{arch}-{size}")
            hf_model("base", size, randomize=False, arch=arch).save_pretrained(path)
            for batch in (1, 8):
                print(f"  timing {arch} {size} batch {batch} ...", file=sys.stderr)
                rows += forward_case(path, arch, size, batch, args.seq_len, rounds, args.per_round, args.threads,
                                     rounds * args.per_round)  # fmt: skip
            if (arch, size) == ("distilbert", "big"):
                print("  load time and memory ...", file=sys.stderr)
                load = load_case(path, args.threads, 3 if args.quick else 5)
    print("  matmul peak ...", file=sys.stderr)
    peak = peak_case(2048, rounds, args.threads)
    tok = tokenizer_case(1000, rounds * args.per_round)

    print(f"\nForward latency, seq {args.seq_len}, medians of {rounds} rounds x {args.per_round} calls, each framework in "
          f"its own process ({args.threads} threads each); interleaved_* = both in this process, for comparison:")  # fmt: skip
    print_table(rows, FORWARD_COLUMNS)
    print("\nMatmul peak of this machine (GFLOP/s):")
    print_table(peak, list(peak[0]))
    if load:
        print("\nLoading the big DistilBERT checkpoint (fresh process each; peak RSS growth from VmHWM):")
        print_table([load], list(load))
    print("\nTokenizer, 1000 sentences, pad/truncate to 128:")
    print_table([tok], list(tok))
    checks = [r for r in rows if r["met"]] + ([load] if load else [])
    missed = [r for r in checks if r["met"] == "NO"]
    print(f"\nCPU: {cpu}; {gemm}; {device}; targets met: {len(checks) - len(missed)}/{len(checks)}")

    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    result = dict(cpu=cpu, gemm=gemm, device=device, jax=jax.__version__, torch=torch.__version__, threads=args.threads, rounds=rounds,
                  per_round=args.per_round, forward=rows, matmul_peak=peak, load=load, tokenizer=tok)  # fmt: skip
    with open(args.out + ".json", "w") as f:
        json.dump(result, f, indent=2)
    with open(args.out + ".md", "w") as f:
        f.write(f"# distilbert_jax speed\n\nCPU: {cpu}; {gemm}\n\n" + markdown_table(rows, FORWARD_COLUMNS))
    print(f"wrote {args.out}.json and {args.out}.md")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
