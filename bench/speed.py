"""Forward latency of distilbert_jax vs PyTorch `transformers`, side by side in one process.

    python -m bench.speed [--quick] [--repeats 15] [--arch distilbert bert] [--out results/speed]

For each case (DistilBERT size small|big and BERT-base, batch 1|8, seq 128, dtype fp32|bf16) the two
forwards run interleaved
(one JAX call, one torch call, repeat) after warm-up; the table gives medians and the ratio
torch-fp32 ms / ours ms (> 1 means we are faster). bf16 rows run our bf16-matmul forward (float32
params, LayerNorm and softmax) and torch under CPU autocast bf16. Also times WordPiece tokenization of
1000 sentences against `DistilBertTokenizerFast`. Writes `<out>.json` and `<out>.md`.
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
from bench.common import SIZES, hf_model, print_table, torch_reference
from bench.corpus import sentences, train_vocab

TARGETS = {  # DistilBERT (size, batch, dtype) -> minimum torch-fp32 / ours ratio asked for
    ("big", 1, "fp32"): 1.0,
    ("big", 8, "fp32"): 1.0,
    ("big", 8, "bf16"): 1.5,
    ("small", 1, "fp32"): 1.0,
}


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


def forward_case(size: str, batch: int, seq_len: int, repeats: int, arch: str = "distilbert") -> list[dict]:
    """Median ms of our fp32 / bf16 forwards and torch fp32 / autocast-bf16 forwards for one shape
    (`arch="bert"`, size "big": bert-base, 12 × 768)."""
    import torch

    hf = hf_model("base", size, randomize=False, arch=arch)
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        model32, variables = dj.from_pretrained(tmp, "base")
        model16, _ = dj.from_pretrained(tmp, "base", dtype=jnp.bfloat16)
    rng = np.random.default_rng(0)
    ids_np = rng.integers(5, SIZES[size]["vocab_size"], size=(batch, seq_len)).astype(np.int32)
    ids, mask = jnp.asarray(ids_np), jnp.ones((batch, seq_len), jnp.int32)
    t_ids, t_mask = torch.from_numpy(ids_np.astype(np.int64)), torch.ones(batch, seq_len, dtype=torch.long)
    f32 = jax.jit(lambda v, i, m: model32.apply(v, i, m).last_hidden_state)
    f16 = jax.jit(lambda v, i, m: model16.apply(v, i, m).last_hidden_state)

    def torch_fp32():
        with torch.inference_mode():
            hf(input_ids=t_ids, attention_mask=t_mask)

    def torch_bf16():
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            hf(input_ids=t_ids, attention_mask=t_mask)

    ms = _interleaved(
        {
            "ours_fp32": lambda: f32(variables, ids, mask).block_until_ready(),
            "ours_bf16": lambda: f16(variables, ids, mask).block_until_ready(),
            "torch_fp32": torch_fp32,
            "torch_bf16": torch_bf16,
        },
        repeats,
    )
    rows = []
    for dtype in ("fp32", "bf16"):
        ratio = ms["torch_fp32"] / ms[f"ours_{dtype}"]
        target = TARGETS.get((size, batch, dtype)) if arch == "distilbert" else None
        rows.append(dict(
            model=arch, size=size, batch=batch, seq=seq_len, dtype=dtype, ours_ms=round(ms[f"ours_{dtype}"], 2),
            torch_ms=round(ms[f"torch_{dtype}"], 2), torch_fp32_ms=round(ms["torch_fp32"], 2),
            ratio_vs_torch_fp32=round(ratio, 2), target=f">= {target}" if target else "",
            met="yes" if target is None or ratio >= target else "NO",
        ))  # fmt: skip
    return rows


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats (for the set-up command)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--arch", nargs="+", choices=("distilbert", "bert"), default=["distilbert", "bert"],
                        help="models to time: DistilBERT small + base, and/or BERT-base (default both)")  # fmt: skip
    parser.add_argument("--out", default="results/speed", help="writes <out>.json and <out>.md")
    args = parser.parse_args(argv)
    repeats = args.repeats or (5 if args.quick else 15)
    torch, device = torch_reference("distilbert_jax forward speed")
    rows = []
    cases = [("distilbert", s, b) for s in ("small", "big") for b in (1, 8) if "distilbert" in args.arch]
    cases += [("bert", "big", b) for b in (1, 8) if "bert" in args.arch]
    for arch, size, batch in cases:
        print(f"  timing {arch} {size} batch {batch} ...", file=sys.stderr)
        rows += forward_case(size, batch, args.seq_len, repeats, arch)
    tok = tokenizer_case(1000, repeats)

    print(f"\nForward latency, median of {repeats} interleaved runs (ratio = torch fp32 ms / ours ms):")
    columns = ["model", "size", "batch", "seq", "dtype", "ours_ms", "torch_ms", "torch_fp32_ms", "ratio_vs_torch_fp32",
               "target", "met"]  # fmt: skip
    print_table(rows, columns)
    print("\nTokenizer, 1000 sentences, pad/truncate to 128:")
    print_table([tok], list(tok))
    missed = [r for r in rows if r["met"] == "NO"]
    print(f"\ndevice: {device}; targets met: {sum(r['target'] != '' for r in rows) - len(missed)}/"
          f"{sum(r['target'] != '' for r in rows)}")  # fmt: skip

    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    result = dict(device=device, jax=jax.__version__, torch=torch.__version__, repeats=repeats, forward=rows,
                  tokenizer=tok)  # fmt: skip
    with open(args.out + ".json", "w") as f:
        json.dump(result, f, indent=2)
    with open(args.out + ".md", "w") as f:
        f.write(f"# distilbert_jax speed ({device})\n\n| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n")
        f.writelines("| " + " | ".join(str(r[c]) for c in columns) + " |\n" for r in rows)
    print(f"wrote {args.out}.json and {args.out}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
