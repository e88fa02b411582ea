"""Command line:

    python -m distilbert_jax.nas train --config FILE [--set key=value ...] [--steps N] [--out-dir DIR]
    python -m distilbert_jax.nas extract --supernet DIR --arch "{'sample_layer_num': 4, ...}" --out DIR
    python -m distilbert_jax.nas latency --supernet RUN_OR_SUPERNET_DIR --n 300 --out runs/latency
    python -m distilbert_jax.nas candidates --latency runs/latency --constraint 7 --out runs/cands.jsonl
"""

from __future__ import annotations

import argparse
import sys
import warnings

from ..tables import format_table


def build_parser() -> argparse.ArgumentParser:
    from distilbert_jax.train.cli import add_run_options

    parser = argparse.ArgumentParser(prog="python -m distilbert_jax.nas", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a SuperNet on sampled archs (MLM or distillation)")
    t.add_argument("--config", help="JSON config (see distilbert_jax/nas/configs/)")
    add_run_options(t, "e.g. --set objective='\"distill\"'")
    e = sub.add_parser("extract", help="slice one arch out of a SuperNet into a standalone model directory")
    e.add_argument("--supernet", required=True, help="a SuperNet directory (OUT_DIR/supernet of `train`)")
    e.add_argument("--arch", required=True, help="AutoTinyBERT's arch string, or JSON")
    e.add_argument("--out", required=True, help="the directory to write")
    la = sub.add_parser("latency", help="measure sampled archs + the BERT-base reference, fit the latency predictor")
    la.add_argument("--supernet", required=True, help="a SuperNet training run directory or its supernet/ directory")
    la.add_argument("--out", required=True, help="the directory to write (latencies.jsonl, predictor/, report.json, PNG)")
    la.add_argument("--n", type=int, default=300, help="archs to sample and measure (default 300)")
    for name, default, what in (("batch", 1, "batch size"), ("seq", 128, "tokens per sequence"),
                                ("rounds", 10, "timing rounds (median over them)"), ("seed", 0, "sampling seed")):  # fmt: skip
        la.add_argument(f"--{name}", type=int, default=default, help=f"{what} (default {default})")
    la.add_argument("--quantile", type=float, default=0.25,
                    help="latency = this quantile of the rounds (default 0.25: robust to other processes; 0.5: median)")
    la.add_argument("--reference", help="the reference arch (default BERT-base's shape, 12 x 768 x 3072, 12 heads)")
    la.add_argument("--compile-cache", default="", metavar="DIR|off",
                    help="persistent XLA compilation cache (default ~/.cache/distilbert_jax/xla; 'off' disables)")  # fmt: skip
    c = sub.add_parser("candidates", help="every arch whose predicted latency meets a constraint")
    c.add_argument("--latency", required=True, help="a directory written by `latency`")
    c.add_argument("--constraint", required=True, help="speedup over the reference (7 or 7x) or a latency (12ms)")
    c.add_argument("--out", required=True, help="the candidates JSONL file to write")
    return parser


def _train(args) -> int:
    from distilbert_jax.train.cli import overrides_from_args
    from distilbert_jax.train.config import ConfigError
    from distilbert_jax.train.loop import TrainingDiverged

    from .config import load_nas_config
    from .train import train_supernet

    overrides = overrides_from_args(args)
    try:
        settings, cfg = load_nas_config(args.config, overrides)
        result = train_supernet(settings, cfg)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    train_log = result.history.get("train", [])
    first, last = (train_log[0], train_log[-1]) if train_log else ({}, {})
    fmt = lambda v: "" if v is None else f"{v:.4g}"  # noqa: E731
    rows = [{"metric": n, f"train @ {first.get('step', '-')}": fmt(first.get(n)),
             f"train @ {last.get('step', '-')}": fmt(last.get(n))} for n in sorted(set(last) - {"step"})]  # fmt: skip
    print("\n" + format_table(rows, list(rows[0]) if rows else ["metric"]))
    evals = [{"eval": k, "value": fmt(v)} for k, v in sorted(result.final_eval.items())]
    print("\n" + format_table(evals, ["eval", "value"]))
    print(f"\nSuperNet written to {result.supernet_dir} ({result.compilations} step compilations); plot {result.plot_path}")
    return 0


def _extract(args) -> int:
    from .io import SuperNetDirError, extract_to_dir
    from .space import ArchError

    try:
        arch, config = extract_to_dir(args.supernet, args.arch, args.out)
    except (ArchError, SuperNetDirError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = [{"field": k, "value": str(v)} for k, v in arch.to_json().items()]
    rows.append({"field": "transformers loads it", "value": "yes" if config.transformers_compatible else
                 f"no (qkv {arch.qkv} != hidden {arch.hidden}); distilbert_jax.from_pretrained does"})  # fmt: skip
    print(format_table(rows, ["field", "value"]))
    print(f"\nextracted {arch} to {args.out}")
    return 0


def _latency(args) -> int:
    from distilbert_jax.train.parallel import enable_compile_cache

    from .latency import REFERENCE, LatencyDataError, latency_summary, run_latency
    from .predictor import PredictorError
    from .space import ArchError, parse_arch

    if args.compile_cache != "off":
        enable_compile_cache(args.compile_cache or None)
    try:
        reference = parse_arch(args.reference) if args.reference else REFERENCE
        run = run_latency(args.supernet, args.out, n=args.n, batch=args.batch, seq=args.seq, rounds=args.rounds,
                          quantile=args.quantile, seed=args.seed, reference=reference)  # fmt: skip
    except (ArchError, LatencyDataError, PredictorError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(latency_summary(run.report))
    print(f"\nwritten to {run.out}: latencies.jsonl, predictor/, report.json, latency.png")
    return 0


def _candidates(args) -> int:
    from .candidates import CandidatesFileError, ConstraintError
    from .latency import DeviceMismatchWarning, LatencyDataError, candidates_from_latency, candidates_summary
    from .predictor import PredictorError
    from .space import ArchError

    with warnings.catch_warnings(record=True) as caught:  # the device-mismatch warning, said plainly
        warnings.simplefilter("always", DeviceMismatchWarning)
        try:
            cands = candidates_from_latency(args.latency, args.constraint, args.out)
        except (ConstraintError, LatencyDataError, CandidatesFileError, PredictorError, ArchError) as e:
            cands = e
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    if isinstance(cands, Exception):
        print(f"error: {cands}", file=sys.stderr)
        return 2
    print(candidates_summary(cands))
    print(f"\n{len(cands)} candidates written to {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run one command; exit 2 on bad input, 1 on divergence."""
    args = build_parser().parse_args(argv)
    commands = {"train": _train, "extract": _extract, "latency": _latency, "candidates": _candidates}
    return commands[args.command](args)
