"""Parity of distilbert_jax against PyTorch `transformers`, head by head.

    python -m bench.parity small|big [--arch distilbert|bert|roberta|xlm-roberta|camembert|electra] [--head H ...]
                                     [--batch 2] [--seq-len 64] [--tol 1e-4]
    python -m bench.parity --model-dir path/to/hf_dir        # any of those, detected from config.json

Builds a seeded random-init `transformers` model of the given size per head, saves it to a temp HF
directory, loads it with `distilbert_jax.from_pretrained`, runs the same padded inputs through both
and prints max |Δ| of every output (logits, BERT's pooler output and each layer's hidden states).
BERT and ELECTRA runs get token-pair segment ids (`token_type_ids` 0 then 1); RoBERTa-family runs pad with
the pad id (their positions skip padding). "big" is each arch's base checkpoint: bert-base (12 × 768),
roberta-base, xlm-roberta-base (250k vocabulary), camembert-base, electra-base-discriminator. Every head
the arch has runs (ELECTRA adds its `discriminator`). Exits 1 on any failure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

import distilbert_jax as dj
from distilbert_jax.clitools import need_dir, run_cli
from bench.common import (ARCHS, arch_heads, configure_gemm, device_description, hf_class_name, hf_model, max_seq_len,
                          print_table, random_inputs, random_token_types)  # fmt: skip
from distilbert_jax.heads import ALL_HEADS

DEFAULT_TOL = 1e-4


def _masked_max_diff(ours: np.ndarray, ref: np.ndarray, token_mask: np.ndarray | None) -> float:
    diff = np.abs(np.asarray(ours, np.float64) - np.asarray(ref, np.float64))
    if token_mask is not None:  # only real tokens: padded positions' outputs are not used by anyone
        diff = diff[token_mask.astype(bool)]
    return float(diff.max()) if diff.size else 0.0


def compare(hf, model, variables, ids: np.ndarray, mask: np.ndarray, head: str,
            token_type_ids: np.ndarray | None = None) -> list[tuple[str, float, float]]:  # fmt: skip
    """Run both models on (ids, mask[, token_type_ids]); return (output name, max |Δ|, max |ref|) for each output."""
    import torch

    extra = {} if token_type_ids is None else {"token_type_ids": torch.from_numpy(token_type_ids.astype(np.int64))}
    with torch.no_grad():
        ref = hf(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), output_hidden_states=True,
                 **extra)  # fmt: skip
    types = None if token_type_ids is None else jnp.asarray(token_type_ids, jnp.int32)
    with jax.default_matmul_precision("highest"):
        out = jax.jit(lambda v, i, m, t: model.apply(v, i, m, output_hidden_states=True, token_type_ids=t))(
            variables, jnp.asarray(ids, jnp.int32), jnp.asarray(mask, jnp.int32), types
        )
    flat_mask = mask.reshape(-1, mask.shape[-1])
    results = []
    token_level = head in ("masked_lm", "token_classification", "question_answering", "discriminator")
    if head == "question_answering":
        pairs = [("start_logits", out.start_logits, ref.start_logits), ("end_logits", out.end_logits, ref.end_logits)]
    else:
        pairs = [] if head == "base" else [("logits", out.logits, ref.logits)]
    if head == "base" and getattr(ref, "pooler_output", None) is not None:
        pairs.append(("pooler_output", out.pooler_output, ref.pooler_output))
    pairs = [(name, ours, theirs, mask if token_level else None) for name, ours, theirs in pairs]
    for name, ours, theirs, m in pairs:
        results.append((name, _masked_max_diff(ours, theirs.numpy(), m), float(np.abs(theirs.numpy()).max())))
    for i, (ours, theirs) in enumerate(zip(out.hidden_states, ref.hidden_states)):
        name = "embeddings" if i == 0 else f"layer {i}"
        results.append((f"hidden[{name}]", _masked_max_diff(ours, theirs.numpy(), flat_mask), float(np.abs(theirs.numpy()).max())))
    return results


def parity_inputs(config: dj.DistilBertConfig, head: str, batch: int, seq_len: int, seed: int):
    """(ids, mask, token_type_ids or None) for a parity run: padded with the model's pad id, token pairs'
    segment ids where the family has two token types."""
    ids, mask = random_inputs(batch, seq_len, config.vocab_size, seed=seed,
                              choices=3 if head == "multiple_choice" else None, pad_id=config.pad_token_id)  # fmt: skip
    types = random_token_types(mask, seed) if config.type_vocab_size > 1 else None
    return ids, mask, types


def run_size(size: str, heads: list[str], batch: int, seq_len: int, tol: float, seed: int,
             arch: str = "distilbert") -> list[dict]:  # fmt: skip
    """Parity rows for every head at one size (random-init transformers models saved to temp dirs)."""
    rows = []
    label = size if arch == "distilbert" else f"{arch}-{size}"
    with tempfile.TemporaryDirectory() as tmp:
        for head in heads:
            t0 = time.perf_counter()
            hf = hf_model(head, size, seed=seed, arch=arch)
            path = os.path.join(tmp, head)
            hf.save_pretrained(path)
            model, variables = dj.from_pretrained(path, head)
            ids, mask, types = parity_inputs(model.config, head, batch, seq_len, seed)
            for name, diff, scale in compare(hf, model, variables, ids, mask, head, types):
                rows.append(dict(size=label, head=head, output=name, max_abs_diff=f"{diff:.2e}",
                                 max_abs_ref=f"{scale:.2f}", ok="PASS" if diff <= tol else "FAIL"))  # fmt: skip
            print(f"  {head}: done in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
            del hf
    return rows


def run_model_dir(path: str, batch: int, seq_len: int, tol: float, seed: int) -> list[dict]:
    """Parity rows for a user's HF directory (its own head and architecture, from config.json)."""
    import transformers

    from distilbert_jax.heads import head_of_architecture

    with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    arch = config.get("model_type", "distilbert")
    head = head_of_architecture((config.get("architectures") or ["DistilBertModel"])[0]) or "base"
    hf = getattr(transformers, hf_class_name(head, arch)).from_pretrained(path, attn_implementation="eager").eval()
    model, variables = dj.from_pretrained(path, head)
    seq_len = min(seq_len, model.config.max_seq_len)
    ids, mask, types = parity_inputs(model.config, head, batch, seq_len, seed)
    return [
        dict(size=os.path.basename(os.path.normpath(path)), head=head, output=name, max_abs_diff=f"{diff:.2e}",
             max_abs_ref=f"{scale:.2f}", ok="PASS" if diff <= tol else "FAIL")  # fmt: skip
        for name, diff, scale in compare(hf, model, variables, ids, mask, head, types)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("size", nargs="?", choices=("big", "small"), default="small")
    parser.add_argument("--arch", choices=ARCHS, default="distilbert",
                        help="distilbert (6 × 768 big) or a BERT-style model_type (its base size big)")
    parser.add_argument("--head", action="append", choices=sorted(ALL_HEADS), help="repeatable; default: all the arch has")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--tol", type=float, default=DEFAULT_TOL)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model-dir", help="run on this HF DistilBERT directory instead of a random model")
    args = parser.parse_args(argv)
    if args.model_dir is not None:
        need_dir(args.model_dir, "--model-dir", containing=("config.json",))
    if args.batch < 1 or args.seq_len < 2:
        parser.error("--batch must be ≥ 1 and --seq-len ≥ 2")

    gemm = configure_gemm("fp32")  # parity holds for the GEMM back end the benchmarks and CLIs run with
    print(f"distilbert_jax parity vs transformers — device {device_description()}; {gemm}", file=sys.stderr)
    if args.model_dir is not None:
        rows = run_model_dir(args.model_dir, args.batch, args.seq_len, args.tol, args.seed)
    else:
        if args.seq_len > max_seq_len(args.arch, args.size):
            parser.error(f"--seq-len exceeds the longest input of {args.arch} size {args.size} "
                         f"({max_seq_len(args.arch, args.size)})")  # fmt: skip
        heads = args.head or arch_heads(args.arch)
        missing = [h for h in heads if h not in arch_heads(args.arch)]
        if missing:
            parser.error(f"--arch {args.arch} has no {missing} head")
        rows = run_size(args.size, heads, args.batch, args.seq_len, args.tol, args.seed, args.arch)
    print_table(rows, ["size", "head", "output", "max_abs_diff", "max_abs_ref", "ok"])
    failed = [r for r in rows if r["ok"] != "PASS"]
    heads = sorted({r["head"] for r in rows})
    print(f"\n{len(heads)} heads, {len(rows)} outputs compared at tol {args.tol:g}: "
          f"{'all PASS' if not failed else f'{len(failed)} FAIL'}")  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
