"""Training-step throughput (tokens/s) of distilbert_jax MLM vs a PyTorch `transformers` step, plus
the loaders' MLM batch throughput.

    python -m bench.train_speed [--quick] [--rounds 5] [--sizes small,base] [--out results/train_speed]

Each case (size small|base; fp32|bf16) times one full optimizer step on the same batch / seq: ours is
the project's jitted, state-donating step (AdamW + warmup/decay + clipping, dropout on); torch runs
`DistilBertForMaskedLM` in train mode, loss.backward(), clip_grad_norm_, AdamW.step(). Timed two ways:
each framework in its own worker process (`bench.processes`, alternating rounds, same thread count:
the figures the targets use) and interleaved in one process (for comparison). Medians; tokens/s counts
batch x seq positions; GFLOP/s counts matmul FLOPs (3x the forward). "full" projects every position to
the vocabulary (the same work as torch); "masked" only the masked tokens (the CLI's default for MLM,
exact: see Task.max_predictions). bf16: our bf16-matmul compute (float32 params / master weights, fp32
loss) and torch CPU autocast bf16. Writes `<out>.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

import distilbert_jax as dj
from bench.common import SIZES, configure_gemm, cpu_description, gemm_report, hf_model, print_table, torch_reference
from distilbert_jax.clitools import need_writable, run_cli
from bench.processes import alternating, call_builder, medians
from bench.speed import _interleaved, forward_flops
from distilbert_jax.train import OptimConfig, Task, create_state, jit_train_step, make_optimizer, make_train_step
from distilbert_jax.train.config import DataConfig, TrainConfig
from distilbert_jax.train.data import SyntheticBatches
from distilbert_jax.train.tasks import mlm_max_predictions

# size -> (batch, seq) of a full run / of --quick
SHAPES = {"small": ((32, 128), (32, 128)), "base": ((8, 128), (4, 128))}
MASK_PROB = 0.15
OPTIM = OptimConfig(learning_rate=1e-4, warmup_steps=10, weight_decay=0.01, max_grad_norm=1.0)


def _batch(size: str, batch_size: int, seq_len: int) -> dict[str, np.ndarray]:
    """The seeded synthetic MLM batch every case trains on (identical in every process)."""
    vocab = SIZES["big" if size == "base" else size]["vocab_size"]
    return next(SyntheticBatches("mlm", vocab, batch_size, seq_len, seed=1, mask_prob=MASK_PROB))


def _max_predictions(seq_len: int) -> int:
    return mlm_max_predictions(TrainConfig(task="mlm", data=DataConfig(seq_len=seq_len, mask_prob=MASK_PROB)))


# ---- builders, run inside worker processes (bench.processes) or in this one ----------------------
def jax_step(path: str, size: str, batch_size: int, seq_len: int, dtype: str, projection: str):
    """A closure running one of our optimizer steps (blocking) from the checkpoint in `path`."""
    configure_gemm(dtype)
    model, variables = dj.from_pretrained(path, "masked_lm", dtype={"fp32": jnp.float32, "bf16": jnp.bfloat16}[dtype])
    tx, schedule = make_optimizer(OPTIM, 1000)
    box = {"state": create_state(variables["params"], tx, 0, compute_dtype=model.dtype)}
    m = _max_predictions(seq_len) if projection == "masked" else None
    step = jit_train_step(make_train_step(model, Task("mlm", max_predictions=m), tx, schedule), box["state"])
    device_batch = {k: jnp.asarray(v) for k, v in _batch(size, batch_size, seq_len).items()}

    def run():
        box["state"], metrics = step(box["state"], device_batch)
        jax.block_until_ready(metrics["loss"])

    return run


def torch_step(path: str, size: str, batch_size: int, seq_len: int, dtype: str):
    """A closure running one torch AdamW step of `DistilBertForMaskedLM` (autocast for bf16)."""
    import contextlib

    import torch
    import transformers

    from bench.processes import threads

    torch.set_num_threads(threads())
    transformers.utils.logging.disable_progress_bar()
    hf = transformers.AutoModelForMaskedLM.from_pretrained(path, attn_implementation="eager").train()
    opt = torch.optim.AdamW(hf.parameters(), lr=OPTIM.learning_rate, weight_decay=OPTIM.weight_decay)
    tb = {k: torch.from_numpy(v.astype(np.int64)) for k, v in _batch(size, batch_size, seq_len).items()}

    def run():
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext()
        with ctx:
            loss = hf(**tb).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(hf.parameters(), OPTIM.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return run


def _step_flops(config: dj.DistilBertConfig, batch_size: int, seq_len: int, predicted: int) -> float:
    """Matmul FLOPs of a train step: 3x (encoder forward + MLM head at `predicted` positions)."""
    d, v = config.dim, config.vocab_size
    return 3 * (forward_flops(config, batch_size, seq_len) + 2 * predicted * d * (d + v))


def train_case(size: str, batch_size: int, seq_len: int, rounds: int, n_threads: int) -> list[dict]:
    """Median step time, tokens/s and GFLOP/s of ours vs torch, fp32 and bf16, full and masked logits:
    separate processes (targets) and interleaved in this process (comparison)."""
    import tempfile

    with tempfile.TemporaryDirectory() as path:
        hf_model("masked_lm", "big" if size == "base" else size, randomize=False, dropout=0.1,
                 attention_dropout=0.1).save_pretrained(path)  # fmt: skip
        config = dj.DistilBertConfig.from_json_file(path)
        common = dict(path=path, size=size, batch_size=batch_size, seq_len=seq_len)
        cases = {f"ours_{d}_{p}": ("bench.train_speed:jax_step", dict(common, dtype=d, projection=p))
                 for d in ("fp32", "bf16") for p in ("full", "masked")}  # fmt: skip
        cases.update({f"torch_{d}": ("bench.train_speed:torch_step", dict(common, dtype=d)) for d in ("fp32", "bf16")})
        separate = medians(alternating(cases, rounds, 1, n_threads))
        together = _interleaved({name: call_builder(*spec) for name, spec in cases.items()}, rounds)
    tokens = batch_size * seq_len
    masked = int((_batch(size, batch_size, seq_len)["labels"] != -100).sum())
    rows = []
    for dtype, projection in (("fp32", "full"), ("fp32", "masked"), ("bf16", "full"), ("bf16", "masked")):
        ours, theirs = separate[f"ours_{dtype}_{projection}"], separate[f"torch_{dtype}"]
        flops = _step_flops(config, batch_size, seq_len, tokens if projection == "full" else masked)
        target = 1.0 if (size, dtype, projection) == ("base", "bf16", "full") else None
        rows.append(dict(size=size, batch=batch_size, seq=seq_len, dtype=dtype, mlm_logits=projection, ours_ms=round(ours, 1),
                         torch_ms=round(theirs, 1), speedup=round(theirs / ours, 2), target=f">= {target}" if target else "",
                         met="" if target is None else ("yes" if theirs / ours >= target else "NO"),
                         ours_tok_s=int(tokens / ours * 1e3), torch_tok_s=int(tokens / theirs * 1e3),
                         ours_gflops=round(flops / ours / 1e6, 1),
                         interleaved_ours_ms=round(together[f"ours_{dtype}_{projection}"], 1),
                         interleaved_torch_ms=round(together[f"torch_{dtype}"], 1)))  # fmt: skip
    return rows


def loader_case(batch_size: int, seq_len: int, repeats: int) -> dict:
    """Tokens/s of the loaders' MLM batches on the default corpus (memory-mapped token cache),
    through `bench.loader_speed`'s epoch timer."""
    import tempfile

    from bench.loader_speed import epoch_rate
    from loaders import TokenStore, default_corpus, mlm_batches

    corpus = default_corpus()
    tok = corpus.tokenizer()
    with tempfile.TemporaryDirectory() as cache_dir:
        store = TokenStore(corpus.pretrain("train"), tok, cache_dir)
        rate, steps = epoch_rate(lambda: mlm_batches(store, tok, batch_size=batch_size, seq_len=seq_len, seed=0,
                                                      epochs=1, process_index=0, process_count=1), repeats)  # fmt: skip
    return dict(case=f"loaders mlm_batches {batch_size}x{seq_len} (cached)", batches_per_epoch=steps,
                tok_s=int(rate))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer rounds, smaller base batch")
    parser.add_argument("--rounds", type=int, default=None, help="alternating rounds of one step per case (default 7, quick 3)")
    parser.add_argument("--sizes", default="small,base")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="intra-op threads of each framework")
    parser.add_argument("--out", default="results/train_speed", help="writes <out>.json")
    args = parser.parse_args(argv)
    need_writable(args.out + ".json", "--out")  # before minutes of timing
    rounds = args.rounds or (3 if args.quick else 7)
    configure_gemm("fp32")  # this process (the interleaved rows); each worker applies its own dtype's choice
    gemm = gemm_report()
    torch, device = torch_reference("MLM training step")
    cpu = cpu_description()
    rows = []
    for size in args.sizes.split(","):
        batch_size, seq_len = SHAPES[size][1 if args.quick else 0]
        print(f"  timing {size} {batch_size}x{seq_len} ...", file=sys.stderr)
        rows += train_case(size, batch_size, seq_len, rounds, args.threads)
    loader = loader_case(32, 128, 1 if args.quick else 3)

    print(f"\nMLM train step (AdamW + clipping, dropout on), medians of {rounds} alternating rounds, each framework in its "
          f"own process ({args.threads} threads each); speedup = torch ms / ours ms; interleaved_* = both in one process:")  # fmt: skip
    print_table(rows, ["size", "batch", "seq", "dtype", "mlm_logits", "ours_ms", "torch_ms", "speedup", "target", "met",
                       "ours_tok_s", "torch_tok_s", "ours_gflops", "interleaved_ours_ms", "interleaved_torch_ms"])  # fmt: skip
    print("\nLoader throughput:")
    print_table([loader], list(loader))
    print(f"\nCPU: {cpu}; {gemm}; {device}")
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out + ".json", "w") as f:
        json.dump(dict(cpu=cpu, gemm=gemm, device=device, jax=jax.__version__, torch=torch.__version__, threads=args.threads, rounds=rounds,
                       quick=args.quick, train_step=rows, loader=loader), f, indent=2)  # fmt: skip
    print(f"wrote {args.out}.json")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
