"""Inference throughput: sentences/s of `dj.embed` vs `transformers` on the same texts.

    python -m bench.throughput [--n 10000] [--size big] [--batch 32] [--rounds 2]

Texts are the offline corpus's sentences (varied lengths). Ours: `dj.embed` (mean pooling), which sorts
by length into buckets, reuses compiled shapes and overlaps tokenization with compute. Theirs:
`AutoTokenizer` + `AutoModel` in eval mode, batches of the same size in the given order with padding
to the batch's longest text, mean pooling — what a user of `transformers` writes. Each framework runs
in its own process (`bench.processes`), alternating rounds; medians. Also checks that both give the
same embeddings (max |Δ|).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import numpy as np

from bench.common import cpu_description, hf_model, print_table
from bench.corpus import sentences, train_vocab
from bench.processes import alternating, medians, run_in_fresh_process


def _texts(n: int) -> list[str]:
    return sentences(n)


def jax_embed(path: str, n: int, batch: int):
    """A closure embedding the `n` texts with `dj.embed` (blocking: returns numpy)."""
    import distilbert_jax as dj

    model, variables = dj.from_pretrained(path, "base")
    tok = dj.Tokenizer.from_pretrained(path)
    texts = _texts(n)
    dj.embed(model, variables, tok, sorted(texts, key=len)[::50], pooling="mean", batch_size=batch)  # compile the buckets
    return lambda: dj.embed(model, variables, tok, texts, pooling="mean", batch_size=batch)


def torch_embed(path: str, n: int, batch: int):
    """A closure embedding the `n` texts with `transformers` (batches in order, mean pooling)."""
    import torch
    import transformers

    from bench.processes import threads

    torch.set_num_threads(threads())
    transformers.utils.logging.disable_progress_bar()
    tok = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModel.from_pretrained(path, attn_implementation="eager").eval()
    texts = _texts(n)
    limit = min(tok.model_max_length, model.config.max_position_embeddings)

    def run(texts=texts):
        out = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch):
                enc = tok(texts[start : start + batch], padding=True, truncation=True, max_length=limit, return_tensors="pt")
                hidden = model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).float()
                out.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)).numpy())
        return np.concatenate(out)

    run(texts[:batch])  # warm-up: allocator, thread pool
    return run


def embeddings_of(who: str, path: str, n: int, batch: int) -> list:
    fn = (jax_embed if who == "jax" else torch_embed)(path, n, batch)
    return np.asarray(fn(), np.float64).tolist()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10000, help="number of sentences")
    parser.add_argument("--size", default="big", choices=("small", "big"))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", default="results/throughput", help="writes <out>.json")
    args = parser.parse_args(argv)
    cpu = cpu_description()
    with tempfile.TemporaryDirectory() as path:
        texts = _texts(args.n)
        train_vocab(texts, os.path.join(path, "vocab.txt"))
        with open(os.path.join(path, "vocab.txt"), encoding="utf-8") as f:
            vocab_size = sum(1 for _ in f)
        hf_model("base", args.size, randomize=False, vocab_size=vocab_size).save_pretrained(path)
        import transformers

        transformers.DistilBertTokenizerFast(os.path.join(path, "vocab.txt")).save_pretrained(path)
        check = min(args.n, 256)
        ours_e, theirs_e = (np.asarray(run_in_fresh_process("bench.throughput:embeddings_of", args.threads, who=who, path=path,
                                                            n=check, batch=args.batch)) for who in ("jax", "torch"))  # fmt: skip
        cases = {who: (f"bench.throughput:{who}_embed", dict(path=path, n=args.n, batch=args.batch)) for who in ("jax", "torch")}
        ms = medians(alternating(cases, args.rounds, 1, args.threads, warmup=0))  # builders warm up themselves
    row = dict(sentences=args.n, size=args.size, batch=args.batch, ours_s=round(ms["jax"] / 1e3, 2),
               torch_s=round(ms["torch"] / 1e3, 2), ours_sent_s=round(args.n / ms["jax"] * 1e3, 1),
               torch_sent_s=round(args.n / ms["torch"] * 1e3, 1), speedup=round(ms["torch"] / ms["jax"], 2),
               max_abs_diff=float(np.abs(ours_e - theirs_e).max()))  # fmt: skip
    print(f"\nEmbedding throughput (mean pooling), medians of {args.rounds} rounds, each framework in its own process "
          f"({args.threads} threads each):")  # fmt: skip
    print_table([row], list(row))
    print(f"\nCPU: {cpu}")
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out + ".json", "w") as f:
        json.dump(dict(cpu=cpu, threads=args.threads, rounds=args.rounds, embed=row), f, indent=2)
    print(f"wrote {args.out}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
