"""Inference throughput: sentences/s of `dj.embed` and questions/s of `dj.answer_questions` vs
`transformers` on the same inputs.

    python -m bench.throughput [--task embed|qa|both] [--n 10000] [--size big] [--batch 32] [--rounds 2]

embed: the offline corpus's sentences (varied lengths). Ours: `dj.embed` (mean pooling), which sorts by
length into buckets, reuses compiled shapes and overlaps tokenization with compute. Theirs:
`AutoTokenizer` + `AutoModel` in eval mode, batches of the same size in the given order with padding to
the batch's longest text, mean pooling — what a user of `transformers` writes. Checked: max |Δ| of the
embeddings.

qa: (question, context) pairs from the corpus (`qa_pairs`): a context is 1–8 consecutive sentences, every
50th one 40 (longer than max_length 384: several windows), the question a few of its words. A random-init
`DistilBertForQuestionAnswering` checkpoint. Ours: `dj.answer_questions` (max_length 384, stride 128; the
small size's 128 positions: 128 / 64),
batched like `embed`. Theirs: the fast tokenizer with truncation="only_second", stride 128,
return_overflowing_tokens and offsets, padding per batch of `--batch` pairs in the given order,
`model(...)` under `torch.inference_mode()`, then the same span decoding — `dj.decode_answer` on torch's
logits and the best window per question, so decoding costs the same on both sides and the answers are
comparable. Checked: how many answers agree (same span) and max |Δ score|.

Each framework runs in its own process (`bench.processes`), alternating rounds; medians. Our compiled
shapes are built before timing (the first call of a session pays them once).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import numpy as np

from bench.common import SIZES, cpu_description, hf_model, print_table
from distilbert_jax.clitools import need_writable, run_cli
from bench.corpus import sentences, train_vocab
from bench.processes import alternating, medians, run_in_fresh_process

QA_MAX_LENGTH, QA_STRIDE = 384, 128


def qa_lengths(max_positions: int) -> tuple[int, int]:
    """(max_length, stride) of the qa case: 384 / 128, less for a model with fewer positions."""
    max_length = min(QA_MAX_LENGTH, max_positions)
    return max_length, min(QA_STRIDE, max_length // 2)


def _texts(n: int) -> list[str]:
    return sentences(n)


def qa_pairs(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """`n` (questions, contexts): a context is 1–8 consecutive corpus sentences (every 50th, from the
    30th on: 40 of them, which overflow 384 tokens), its question 2–8 consecutive words of it plus "?"."""
    pool = sorted(set(sentences(5000)))
    rng = np.random.default_rng(seed)
    questions, contexts = [], []
    for i in range(n):
        k = 40 if i % 50 == 29 else int(rng.integers(1, 9))
        first = int(rng.integers(0, len(pool) - k))
        context = " ".join(pool[first : first + k])
        words = context.split()
        m = int(rng.integers(2, 9))
        at = int(rng.integers(0, max(1, len(words) - m)))
        questions.append(" ".join(words[at : at + m]) + "?")
        contexts.append(context)
    return questions, contexts


def save_checkpoint(path: str, texts: list[str], head: str, size: str) -> None:
    """A random-init `transformers` checkpoint for `head` with a WordPiece vocab trained on `texts`."""
    import transformers

    os.makedirs(path, exist_ok=True)
    train_vocab(texts, os.path.join(path, "vocab.txt"))
    with open(os.path.join(path, "vocab.txt"), encoding="utf-8") as f:
        vocab_size = sum(1 for _ in f)
    hf_model(head, size, randomize=False, vocab_size=vocab_size).save_pretrained(path)
    transformers.DistilBertTokenizerFast(os.path.join(path, "vocab.txt")).save_pretrained(path)


def compile_buckets(call, batch: int, limit: int) -> None:
    """`call(input_ids, attention_mask, token_type_ids)` once per padded width our batching uses (multiples
    of 32 up to `limit`), so that timed calls compile nothing."""
    import jax
    import jax.numpy as jnp

    for width in sorted({min(limit, w) for w in range(32, limit + 32, 32)}):
        ids = jnp.zeros((batch, width), jnp.int32)
        jax.block_until_ready(call(ids, ids.at[:, 0].set(1), ids))


def jax_embed(path: str, n: int, batch: int):
    """A closure embedding the `n` texts with `dj.embed` (blocking: returns numpy)."""
    import distilbert_jax as dj
    from distilbert_jax.inference import pool_hidden

    model, variables = dj.from_pretrained(path, "base")
    tok = dj.Tokenizer.from_pretrained(path)
    texts = _texts(n)
    normalize = model.config.normalize_embeddings  # what embed passes
    compile_buckets(lambda ids, mask, _: pool_hidden(model, variables, ids, mask, ("mean",), normalize), batch,
                    min(tok.model_max_length, model.config.max_position_embeddings))  # fmt: skip
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


def jax_qa(path: str, n: int, batch: int):
    """A closure answering the `n` questions with `dj.answer_questions` (a list of `Answer | None`)."""
    import distilbert_jax as dj
    from distilbert_jax.inference import qa_logits

    model, variables = dj.from_pretrained(path, "question_answering")
    tok = dj.Tokenizer.from_pretrained(path)
    questions, contexts = qa_pairs(n)
    max_length, stride = qa_lengths(model.config.max_position_embeddings)
    compile_buckets(lambda *arrays: qa_logits(model, variables, *arrays), batch, max_length)
    return lambda: dj.answer_questions(model, variables, tok, questions, contexts, max_length=max_length,
                                       stride=stride, batch_size=batch)  # fmt: skip


def torch_qa(path: str, n: int, batch: int):
    """A closure answering the `n` questions with `transformers` as its users write it (batches of
    `batch` pairs in order, overflowing windows, padding per batch), decoded with `dj.decode_answer`."""
    import torch
    import transformers

    from bench.processes import threads
    from distilbert_jax.inference import decode_answer

    torch.set_num_threads(threads())
    transformers.utils.logging.disable_progress_bar()
    tok = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModelForQuestionAnswering.from_pretrained(path, attn_implementation="eager").eval()
    questions, contexts = qa_pairs(n)
    max_length, stride = qa_lengths(model.config.max_position_embeddings)

    def run(questions=questions, contexts=contexts):
        best: list = [None] * len(questions)
        with torch.inference_mode():
            for lo in range(0, len(questions), batch):
                enc = tok(questions[lo : lo + batch], contexts[lo : lo + batch], truncation="only_second",
                          max_length=max_length, stride=stride, return_overflowing_tokens=True,
                          return_offsets_mapping=True, padding=True, return_tensors="pt")  # fmt: skip
                out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
                starts, ends, offsets = out.start_logits.numpy(), out.end_logits.numpy(), enc["offset_mapping"].numpy()
                for row, j in enumerate(enc["overflow_to_sample_mapping"].tolist()):
                    seq = np.array([-1 if s is None else s for s in enc.sequence_ids(row)])
                    found = decode_answer(starts[row], ends[row], offsets[row], seq, contexts[lo + j])
                    if found and (best[lo + j] is None or found[0].score > best[lo + j].score):
                        best[lo + j] = found[0]
        return best

    run(questions[:batch], contexts[:batch])  # warm-up: allocator, thread pool
    return run


def results_of(who: str, task: str, path: str, n: int, batch: int) -> list:
    """The embeddings (task "embed") or answers as [text, start, end, score] | None (task "qa") of
    framework `who` ("jax" / "torch"), JSON-able for `run_in_fresh_process`."""
    fn = globals()[f"{who}_{task}"](path, n, batch)
    if task == "embed":
        return np.asarray(fn(), np.float64).tolist()
    return [None if a is None else [a.text, a.start, a.end, a.score] for a in fn()]


def answer_agreement(ours: list, theirs: list) -> dict:
    """How many answers ([text, start, end, score] | None) name the same span, and the largest |Δ score|
    among those."""
    same = [(a, b) for a, b in zip(ours, theirs) if (a and a[:3]) == (b and b[:3])]
    deltas = [abs(a[3] - b[3]) for a, b in same if a]
    return dict(agree=f"{len(same)}/{len(ours)}", max_abs_dscore=float(max(deltas, default=0.0)))


def measure(task: str, path: str, n: int, batch: int, rounds: int, threads: int) -> dict:
    """One summary row: seconds and items/s of both frameworks (medians of `rounds` alternating rounds,
    each in its own process) and their agreement on the first min(n, 256) items."""
    check = min(n, 256)
    ours, theirs = (run_in_fresh_process("bench.throughput:results_of", threads, who=who, task=task, path=path,
                                         n=check, batch=batch) for who in ("jax", "torch"))  # fmt: skip
    if task == "embed":
        agreement = dict(max_abs_diff=float(np.abs(np.asarray(ours) - np.asarray(theirs)).max()))
    else:
        agreement = answer_agreement(ours, theirs)
    cases = {who: (f"bench.throughput:{who}_{task}", dict(path=path, n=n, batch=batch)) for who in ("jax", "torch")}
    ms = medians(alternating(cases, rounds, 1, threads, warmup=0))  # builders warm up themselves
    unit = "sentences" if task == "embed" else "questions"
    return dict(task=task, unit=unit, n=n, batch=batch, ours_s=round(ms["jax"] / 1e3, 2),
                torch_s=round(ms["torch"] / 1e3, 2), ours_per_s=round(n / ms["jax"] * 1e3, 1),
                torch_per_s=round(n / ms["torch"] * 1e3, 1), speedup=round(ms["torch"] / ms["jax"], 2),
                **agreement)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="both", choices=("embed", "qa", "both"))
    parser.add_argument("--n", type=int, default=10000, help="number of sentences / questions")
    parser.add_argument("--size", default="big", choices=("small", "big"))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", default="results/throughput", help="writes <out>.json")
    args = parser.parse_args(argv)
    need_writable(args.out + ".json", "--out")  # before minutes of timing
    cpu = cpu_description()
    tasks = ("embed", "qa") if args.task == "both" else (args.task,)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for task in tasks:
            path = os.path.join(tmp, task)
            texts = _texts(args.n) if task == "embed" else [" ".join(pair) for pair in zip(*qa_pairs(args.n))]
            save_checkpoint(path, texts, "base" if task == "embed" else "question_answering", args.size)
            rows.append(measure(task, path, args.n, args.batch, args.rounds, args.threads))
    max_length, stride = qa_lengths(SIZES[args.size]["max_position_embeddings"])
    print(f"\nInference throughput ({args.size} size; embed: mean pooling; qa: max_length {max_length}, stride "
          f"{stride}), medians of {args.rounds} rounds, each framework in its own process ({args.threads} threads "
          f"each); per_s = {' / '.join(row['unit'] for row in rows)} per second:")  # fmt: skip
    columns = ["task", "n", "batch", "ours_s", "torch_s", "ours_per_s", "torch_per_s", "speedup"]
    print_table(rows, columns + [c for c in ("max_abs_diff", "agree", "max_abs_dscore") if any(c in r for r in rows)])
    print(f"\nCPU: {cpu}")
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out + ".json", "w") as f:
        json.dump(dict(cpu=cpu, threads=args.threads, rounds=args.rounds, size=args.size, **{r["task"]: r for r in rows}),
                  f, indent=2)  # fmt: skip
    print(f"wrote {args.out}.json")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
