"""Command line:

    python -m distilbert_jax.nas train --config FILE [--set key=value ...] [--steps N] [--out-dir DIR]
    python -m distilbert_jax.nas extract --supernet DIR --arch "{'sample_layer_num': 4, ...}" --out DIR
"""

from __future__ import annotations

import argparse
import sys

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


def main(argv: list[str] | None = None) -> int:
    """Run the `train` or `extract` command; exit 2 on bad input, 1 on divergence."""
    args = build_parser().parse_args(argv)
    return _train(args) if args.command == "train" else _extract(args)
