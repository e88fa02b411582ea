"""Training-step throughput (tokens/s) of distilbert_jax MLM vs a PyTorch `transformers` step, side
by side in one process, plus the loaders' MLM batch throughput.

    python -m bench.train_speed [--quick] [--repeats 7] [--out results/train_speed]

Each case (size small|base; fp32|bf16) times one full optimizer step on the same batch / seq: ours is
the project's jitted, state-donating step (AdamW + warmup/decay + clipping, dropout on); torch runs
`DistilBertForMaskedLM` in train mode, loss.backward(), clip_grad_norm_, AdamW.step(). The calls run
interleaved (one ours, one torch, repeat) after warm-up and the table gives medians; tokens/s counts
batch x seq positions. bf16: our bf16-matmul compute (float32 params / master weights) and torch CPU
autocast bf16. Writes `<out>.json`.
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
from bench.common import SIZES, hf_model, print_table, torch_reference
from bench.speed import _interleaved
from distilbert_jax.train import OptimConfig, Task, create_state, jit_train_step, make_optimizer, make_train_step
from distilbert_jax.train.config import DataConfig, TrainConfig
from distilbert_jax.train.data import SyntheticBatches
from distilbert_jax.train.tasks import mlm_max_predictions

# size -> (batch, seq) of a full run / of --quick
SHAPES = {"small": ((32, 128), (32, 128)), "base": ((8, 128), (4, 128))}
MASK_PROB = 0.15
OPTIM = OptimConfig(learning_rate=1e-4, warmup_steps=10, weight_decay=0.01, max_grad_norm=1.0)


def _ours(dtype, batch: dict[str, np.ndarray], hf, max_predictions: int | None = None) -> callable:
    """A closure running one of our optimizer steps (blocking), starting from the torch model's weights."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        model, variables = dj.from_pretrained(tmp, "masked_lm", dtype=dtype)
    tx, schedule = make_optimizer(OPTIM, 1000)
    box = {"state": create_state(variables["params"], tx, 0)}
    step = jit_train_step(make_train_step(model, Task("mlm", max_predictions=max_predictions), tx, schedule), box["state"])
    device_batch = {k: jnp.asarray(v) for k, v in batch.items()}

    def run():
        box["state"], metrics = step(box["state"], device_batch)
        jax.block_until_ready(metrics["loss"])

    return run


def _torch(hf, batch: dict[str, np.ndarray], bf16: bool) -> callable:
    import contextlib

    import torch

    hf.train()
    opt = torch.optim.AdamW(hf.parameters(), lr=OPTIM.learning_rate, weight_decay=OPTIM.weight_decay)
    tb = {k: torch.from_numpy(v.astype(np.int64)) for k, v in batch.items()}

    def run():
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with ctx:
            loss = hf(**tb).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(hf.parameters(), OPTIM.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return run


def train_case(size: str, batch_size: int, seq_len: int, repeats: int) -> list[dict]:
    """Median step time and tokens/s of ours vs torch, fp32 and bf16, for one size."""
    hf_size = "big" if size == "base" else size
    vocab = SIZES[hf_size]["vocab_size"]
    batch = next(SyntheticBatches("mlm", vocab, batch_size, seq_len, seed=1, mask_prob=MASK_PROB))
    hf32 = hf_model("masked_lm", hf_size, randomize=False, dropout=0.1, attention_dropout=0.1)
    # "full": logits at every position, the same work as torch; "masked": only at the masked tokens
    # (the training CLI's default for MLM, exact: see Task.max_predictions)
    m = mlm_max_predictions(TrainConfig(task="mlm", data=DataConfig(seq_len=seq_len, mask_prob=MASK_PROB)))
    fns = {}
    for dtype, jdtype in (("fp32", jnp.float32), ("bf16", jnp.bfloat16)):
        fns[f"ours_{dtype}_full"] = _ours(jdtype, batch, hf32)
        fns[f"ours_{dtype}_masked"] = _ours(jdtype, batch, hf32, m)
    hf16 = hf_model("masked_lm", hf_size, randomize=False, dropout=0.1, attention_dropout=0.1)
    fns.update(torch_fp32=_torch(hf32, batch, False), torch_bf16=_torch(hf16, batch, True))
    ms = _interleaved(fns, repeats)
    tokens = batch_size * seq_len
    rows = []
    for dtype, projection in (("fp32", "full"), ("fp32", "masked"), ("bf16", "full"), ("bf16", "masked")):
        ours, theirs = ms[f"ours_{dtype}_{projection}"], ms[f"torch_{dtype}"]
        rows.append(dict(size=size, batch=batch_size, seq=seq_len, dtype=dtype, mlm_logits=projection, ours_ms=round(ours, 1),
                         torch_ms=round(theirs, 1), ours_tok_s=int(tokens / ours * 1e3),
                         torch_tok_s=int(tokens / theirs * 1e3), speedup=round(theirs / ours, 2)))  # fmt: skip
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
    parser.add_argument("--quick", action="store_true", help="fewer repeats, smaller base batch")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--sizes", default="small,base")
    parser.add_argument("--out", default="results/train_speed", help="writes <out>.json")
    args = parser.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 7)
    torch, device = torch_reference("MLM training step")
    rows = []
    for size in args.sizes.split(","):
        batch_size, seq_len = SHAPES[size][1 if args.quick else 0]
        print(f"  timing {size} {batch_size}x{seq_len} ...", file=sys.stderr)
        rows += train_case(size, batch_size, seq_len, repeats)
    loader = loader_case(32, 128, 1 if args.quick else 3)

    print(f"\nMLM train step (AdamW + clipping, dropout on), median of {repeats} interleaved steps; "
          "speedup = torch ms / ours ms")  # fmt: skip
    print_table(rows, ["size", "batch", "seq", "dtype", "mlm_logits", "ours_ms", "torch_ms", "ours_tok_s", "torch_tok_s", "speedup"])
    print("\nLoader throughput:")
    print_table([loader], list(loader))
    print(f"\ndevice: {device}")
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out + ".json", "w") as f:
        json.dump(dict(device=device, jax=jax.__version__, torch=torch.__version__, repeats=repeats, quick=args.quick,
                       train_step=rows, loader=loader), f, indent=2)  # fmt: skip
    print(f"wrote {args.out}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
