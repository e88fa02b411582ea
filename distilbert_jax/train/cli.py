"""Command line: `python -m distilbert_jax.train TASK --config FILE [--set key=value ...]`."""

from __future__ import annotations

import argparse
import json
import sys

from ..tables import format_table
from .config import TASKS, ConfigError, TrainConfig, read_json_object
from .overrides import apply_overrides, build_config  # noqa: F401  (apply_overrides: re-exported)


def load_config(task: str, path: str | None, overrides: list[str]) -> TrainConfig:
    """The `TrainConfig` of a command line: the JSON file, `--set` overrides, then the task."""
    data = read_json_object(path) if path else {}
    if data.get("task", task) != task:
        raise ConfigError(f"the command says task {task!r} but {path} says {data['task']!r}")
    data["task"] = task
    return build_config(TrainConfig.from_dict, data, path, overrides)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m distilbert_jax.train", description=__doc__)
    parser.add_argument("task", choices=TASKS, help="what to train")
    parser.add_argument("--config", help="JSON training config (see distilbert_jax/train/configs/)")
    add_run_options(parser, "e.g. --set total_steps=50 --set optim.learning_rate=1e-3")
    return parser


def add_run_options(parser: argparse.ArgumentParser, set_example: str) -> None:
    """The options every training CLI shares (read back by `overrides_from_args`)."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override a config key (value parsed as JSON), {set_example}")  # fmt: skip
    parser.add_argument("--out-dir", help="shorthand for --set out_dir=DIR")
    parser.add_argument("--steps", type=int, help="shorthand for --set total_steps=N")
    parser.add_argument("--no-resume", action="store_true", help="start fresh even if out_dir has checkpoints")
    parser.add_argument("--compile-cache", default="", metavar="DIR|off",
                        help="persistent XLA compilation cache (default ~/.cache/distilbert_jax/xla; 'off' disables)")  # fmt: skip


def overrides_from_args(args) -> list[str]:
    """The `--set` overrides plus those of `--out-dir`, `--steps` and `--no-resume`; also turns on the
    persistent compilation cache unless `--compile-cache off` (the run CLIs share these options)."""
    from .parallel import enable_compile_cache

    overrides = list(args.overrides)
    if args.out_dir:
        overrides.append(f"out_dir={json.dumps(args.out_dir)}")
    if args.steps is not None:
        overrides.append(f"total_steps={args.steps}")
    if args.no_resume:
        overrides.append("resume=false")
    if args.compile_cache != "off":
        enable_compile_cache(args.compile_cache or None)
    return overrides


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, train, print the final evaluation; exit 2 on a bad config, 1 on divergence."""
    args = build_parser().parse_args(argv)
    overrides = overrides_from_args(args)
    from .loop import TrainingDiverged, train

    try:
        cfg = load_config(args.task, args.config, overrides)
        gemm_configured(cfg.dtype)
        result = train(cfg)
    except (ConfigError, TrainingDiverged) as e:
        return training_failed(e)
    if result.export_dir is not None:  # the lead process (the only one in a 1-process run) reports
        print("\n" + metrics_table(result.history, result.final_eval))
        print(f"\nmodel exported to {result.export_dir}; plot {result.plot_path}")
    return 0


def gemm_configured(dtype: str) -> None:
    """Apply the GEMM back end for `dtype` (distilbert_jax.configure_cpu) before XLA starts; a bad
    $DISTILBERT_JAX_GEMM becomes a ConfigError (exit 2)."""
    from ..gemm import configure_cpu

    try:
        configure_cpu(dtype)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def training_failed(error: Exception) -> int:
    """Print a training command's error; its exit status: 1 for a diverged run, 2 for bad input."""
    from .loop import TrainingDiverged

    print(f"error: {error}", file=sys.stderr)
    return 1 if isinstance(error, TrainingDiverged) else 2


def metrics_table(history: dict[str, list[dict[str, float]]], final_eval: dict[str, float]) -> str:
    """A table of each metric: first and last logged training value, and the final evaluation."""
    train_log = history.get("train", [])
    first, last = (train_log[0], train_log[-1]) if train_log else ({}, {})
    fmt = lambda v: "" if v is None else f"{v:.4g}"  # noqa: E731
    start, end = f"train @ step {first.get('step', '-')}", f"train @ step {last.get('step', '-')}"
    rows = [{"metric": n, start: fmt(first.get(n)), end: fmt(last.get(n)), "final eval": fmt(final_eval.get(n))}
            for n in sorted(set(final_eval) | set(last) - {"step"})]  # fmt: skip
    return format_table(rows, ["metric", start, end, "final eval"])
