"""Command line:

    python -m distilbert_jax.nas train --config FILE [--set key=value ...] [--steps N] [--out-dir DIR]
    python -m distilbert_jax.nas extract --supernet DIR --arch "{'sample_layer_num': 4, ...}" --out DIR
    python -m distilbert_jax.nas latency --supernet RUN_OR_SUPERNET_DIR --n 300 --out runs/latency
    python -m distilbert_jax.nas candidates --latency runs/latency --constraint 7 --out runs/cands.jsonl
    python -m distilbert_jax.nas search --method {random,fast,evolved} --supernet RUN_DIR --candidates FILE
                                        [--generations G | --evaluations N] [--seed S] [--out DIR] [--task-fitness DIR]
    python -m distilbert_jax.nas pipeline --config distilbert_jax/nas/configs/pipeline_small.json [--set key=value]
    python -m distilbert_jax.nas compare-arms --config distilbert_jax/nas/configs/arms_small.json [--set key=value]
    python -m distilbert_jax.nas rank-check --config distilbert_jax/nas/configs/rank_small.json [--set key=value]
    python -m distilbert_jax.nas task-supernet --supernet RUN_DIR --candidates FILE --out DIR [--set steps=600]
    python -m distilbert_jax.nas compare --supernet RUN_DIR --candidates FILE --evaluations N [--seeds 3] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from ..tables import format_table


XLA_CACHE_DIR = "xla_cache"  # `latency`'s compilation cache, inside its --out


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
    e.add_argument("--arch", required=True, help="the arch: short form (L2_H224_A2_Q128_F128; per layer "
                   "L2_H224_A2-4_Q128-256_F128-512), AutoTinyBERT's dict or JSON")
    e.add_argument("--out", required=True, help="the directory to write")
    la = sub.add_parser("latency", help="measure sampled archs, their sub-layers and the BERT-base reference; fit "
                        "the latency predictors and keep the best on held-out archs")
    la.add_argument("--supernet", required=True, help="a SuperNet training run directory or its supernet/ directory")
    la.add_argument("--out", required=True, help="the directory to write (latencies.jsonl, predictor/ (the chosen one), "
                    "predictors/, report.json, PNG)")
    la.add_argument("--n", type=int, default=100, help="archs to sample and measure (default 100)")
    for name, default, what in (("batch", 1, "batch size"), ("seq", 128, "tokens per sequence"),
                                ("rounds", 10, "timing rounds (latency = the --quantile of them)"),
                                ("seed", 0, "sampling seed")):  # fmt: skip
        la.add_argument(f"--{name}", type=int, default=default, help=f"{what} (default {default})")
    la.add_argument("--quantile", type=float, default=0.25,
                    help="latency = this quantile of the rounds (default 0.25: robust to other processes; 0.5: median)")
    la.add_argument("--reference", help="the reference arch, any arch format (default BERT-base's shape, "
                    "L12_H768_A12_Q768_F3072)")
    la.add_argument("--compile-cache", default="", metavar="DIR|off",
                    help="persistent XLA compilation cache (default OUT/xla_cache, inside --out; 'off' disables)")  # fmt: skip
    c = sub.add_parser("candidates", help="every arch whose predicted latency meets a constraint")
    c.add_argument("--latency", required=True, help="a directory written by `latency`")
    c.add_argument("--constraint", required=True, help="speedup over the reference (7 or 7x) or a latency (12ms)")
    c.add_argument("--out", required=True, help="the candidates JSONL file to write")
    for name, help_, example in (
            ("pipeline", "every step, corpus -> SuperNet -> latency -> search -> fine-tuned models", "pipeline_small"),
            ("compare-arms", "searched vs random vs DistilBERT-ratio vs TinyBERT-like arms at several constraints, "
             "fine-tuned over seeds: mean accuracy ± SE", "arms_small"),
            ("rank-check", "Kendall tau between one-shot SuperNet loss, loss after further training and downstream "
             "accuracy over archs of one window, per SuperNet training variant", "rank_small")):  # fmt: skip
        pi = sub.add_parser(name, help=help_)
        pi.add_argument("--config", required=name != "pipeline",
                        help=f"JSON config (see distilbert_jax/nas/configs/{example}.json)")
        pi.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key (value parsed as JSON)")
        pi.add_argument("--out-dir", help="shorthand for --set out_dir=DIR")
    from .search import METHODS

    for name, help_ in (("search", "search the candidates of a latency constraint by one-shot fitness"),
                        ("compare", "compare the search methods at equal numbers of fitness evaluations over seeds")):
        c = sub.add_parser(name, help=help_)
        c.add_argument("--supernet", required=True, help="the SuperNet run directory (`train --out-dir`) or its supernet/")
        c.add_argument("--candidates", required=True, help="candidates JSONL (`python -m distilbert_jax.nas candidates`)")
        c.add_argument("--eval-batches", type=int, help="held-out batches per fitness evaluation (default: the run's)")
        c.add_argument("--out", help="output directory (default runs/search/METHOD-seedS or runs/compare)")
        c.add_argument("--task-fitness", metavar="DIR", help="score archs by the task SuperNet in DIR (`task-supernet "
                       "--out DIR`): its error rate on the task's search-validation split, instead of the masked-LM loss")  # fmt: skip
        if name == "search":
            c.add_argument("--method", choices=METHODS, required=True)
            budget = c.add_mutually_exclusive_group()
            budget.add_argument("--generations", type=int, help="generations of 25 evaluations (default 10)")
            budget.add_argument("--evaluations", type=int, help="distinct fitness evaluations")
            c.add_argument("--seed", type=int, default=0)
        else:
            c.add_argument("--evaluations", type=int, required=True, help="distinct fitness evaluations per run")
            c.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per method (default 3)")
            c.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    ts = sub.add_parser("task-supernet", help="train the SuperNet further on a downstream task over the candidates of a "
                        "window, for the search's task fitness (`search --task-fitness`)")  # fmt: skip
    ts.add_argument("--supernet", required=True, help="the SuperNet run directory (`train --out-dir`) or its supernet/")
    ts.add_argument("--candidates", required=True, help="candidates JSONL: the archs sampled, one per step")
    ts.add_argument("--task", default="modules16", help="the module task 'modulesN' (default modules16)")
    ts.add_argument("--out", required=True, help="the directory to write (params.msgpack, task_fitness.json)")
    ts.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="a TaskFitnessConfig key (steps, learning_rate, warmup_steps, batch_size, seq_len, seed, ...)")
    return parser


def _task_supernet(args) -> int:
    from distilbert_jax.train.config import ConfigError
    from distilbert_jax.train.overrides import apply_overrides

    from .candidates import CandidatesFileError, read_candidates
    from .fitness import SearchSetupError
    from .io import SuperNetDirError, find_supernet_dir
    from .pipeline import PipelineConfig
    from .space import ArchError
    from .task_fitness import TaskFitness, TaskFitnessError, train_task_supernet

    try:
        sets = apply_overrides({}, args.overrides)
        cfg = PipelineConfig(task=args.task, search_fitness="task", task_fitness_set=sets).task_fitness_config()
        candidates = read_candidates(args.candidates)
        supernet_dir = find_supernet_dir(args.supernet)
        if supernet_dir is None:
            raise SearchSetupError(f"{args.supernet}: not a SuperNet directory or a run directory holding supernet/")
        train_task_supernet(supernet_dir, candidates, args.task, args.out, cfg)
        fit = TaskFitness(args.out)
    except (ConfigError, TaskFitnessError, CandidatesFileError, SearchSetupError, SuperNetDirError, ArchError,
            FileNotFoundError) as e:  # fmt: skip
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = [{"arch": str(a), **{k: f"{v:.3f}" for k, v in fit.metrics(a).items()}} for a in candidates.archs[:5]]
    print(f"\nsearch-validation split: {fit.examples} sentences; the first candidates:\n" + format_table(rows, list(rows[0])))
    print(f"written: {args.out} (use it with `search --task-fitness {args.out}`)")
    return 0


def _train(args) -> int:
    from distilbert_jax.train.cli import gemm_configured, metrics_table, overrides_from_args, training_failed
    from distilbert_jax.train.config import ConfigError
    from distilbert_jax.train.loop import TrainingDiverged

    from .config import load_nas_config
    from .train import train_supernet

    overrides = overrides_from_args(args)
    try:
        settings, cfg = load_nas_config(args.config, overrides)
        gemm_configured(cfg.dtype)
        result = train_supernet(settings, cfg)
    except (ConfigError, TrainingDiverged) as e:
        return training_failed(e)
    print("\n" + metrics_table(result.history, result.final_eval))
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
    why = "per-layer sizes: one FFN width / head count per model there" if not arch.uniform else f"qkv {arch.qkv} != hidden {arch.hidden}"
    rows.append({"field": "transformers loads it", "value": "yes" if config.transformers_compatible else
                 f"no ({why}); distilbert_jax.from_pretrained does"})  # fmt: skip
    print(format_table(rows, ["field", "value"]))
    print(f"\nextracted {arch} to {args.out}")
    return 0


def _latency(args) -> int:
    from distilbert_jax.train.parallel import enable_compile_cache

    from .latency import REFERENCE, LatencyDataError, latency_summary, run_latency
    from .predictor import PredictorError
    from .space import ArchError, parse_arch

    if args.compile_cache != "off":
        enable_compile_cache(args.compile_cache or os.path.join(args.out, XLA_CACHE_DIR))
    try:
        reference = parse_arch(args.reference) if args.reference else REFERENCE
        run = run_latency(args.supernet, args.out, n=args.n, batch=args.batch, seq=args.seq, rounds=args.rounds,
                          quantile=args.quantile, seed=args.seed, reference=reference)  # fmt: skip
    except (ArchError, LatencyDataError, PredictorError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(latency_summary(run.report))
    print(f"\nwritten to {run.out}: latencies.jsonl, predictor/ ({run.report['chosen']}), predictors/, report.json, "
          "latency.png")
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


def _search(args) -> int:
    from distilbert_jax.train.config import ConfigError

    from .candidates import CandidatesFileError, read_candidates
    from .fitness import CachedFitness, SearchSetupError, load_search_setup
    from .io import SuperNetDirError
    from .search import SearchError, compare_methods, compare_rows, resolve_budget, search, summary_row, write_search
    from .search_plots import plot_best_so_far
    from .space import ArchError
    from .task_fitness import TaskFitness, TaskFitnessError

    try:
        candidates = read_candidates(args.candidates)
        setup = load_search_setup(args.supernet, args.eval_batches)
        task = TaskFitness(args.task_fitness) if args.task_fitness else None
        fitness = CachedFitness(task.fitness if task else setup.fitness)
        space = setup.supernet.space
        if args.command == "search":
            budget = resolve_budget(args.generations, args.evaluations)
            results = [search(args.method, candidates, fitness, budget=budget, seed=args.seed, space=space)]
            out = args.out or f"runs/search/{args.method}-seed{args.seed}"
            paths = write_search(out, results[0], candidates)
        else:
            seeds = range(args.seeds)
            results = compare_methods(candidates, fitness, evaluations=resolve_budget(None, args.evaluations),
                                      seeds=seeds, methods=args.methods, space=space)  # fmt: skip
            out = args.out or "runs/compare"
            for r in results:
                write_search(f"{out}/{r.method}-seed{r.seed}", r, candidates)
    except (SearchError, SearchSetupError, CandidatesFileError, SuperNetDirError, ConfigError, ArchError,
            FileNotFoundError, TaskFitnessError) as e:  # fmt: skip
        print(f"error: {e}", file=sys.stderr)
        return 2
    for note in (f"{r.method} seed {r.seed}: {n}" for r in results for n in r.notes):
        print(note)
    rows = [summary_row(r) for r in results]
    if args.command == "compare":
        print("\n" + format_table(compare_rows(results), list(compare_rows(results)[0])))
        paths = {"best-so-far plot": plot_best_so_far(results, f"{out}/compare.png")}
    print("\n" + format_table(rows, list(rows[0])))
    secs = sorted(fitness.seconds)
    what = (f"task error of {args.task_fitness}: {len(task.batches)} search-validation batches each" if task
            else f"{len(setup.batches)} held-out batches each")  # fmt: skip
    print(f"\n{len(secs)} fitness evaluations computed ({what}), median "
          f"{secs[len(secs) // 2]:.3f} s, {sum(secs):.1f} s in all (first per bucket includes compilation; "
          f"{(task or setup.evaluator).compilations()} compilations); {len(candidates)} candidates, constraint "
          f"{candidates.meta.get('constraint')}")  # fmt: skip
    print("written: " + ", ".join(str(p) for p in paths.values()) + f" (under {out})")
    return 0


def _pipeline(args) -> int:
    import json

    from distilbert_jax.train.cli import training_failed
    from distilbert_jax.train.config import ConfigError
    from distilbert_jax.train.loop import TrainingDiverged
    from distilbert_jax.train.parallel import enable_compile_cache

    from .candidates import CandidatesFileError, ConstraintError
    from .fitness import SearchSetupError
    from .latency import LatencyDataError
    from .arms import ArmsConfig, run_compare_arms
    from .pipeline import PipelineConfig, run_pipeline
    from .rank_check import RankConfig, run_rank_check
    from .search import SearchError
    from .space import ArchError

    config, run, results = {"pipeline": (PipelineConfig, run_pipeline, "results.md"),
                            "compare-arms": (ArmsConfig, run_compare_arms, "arms.md"),
                            "rank-check": (RankConfig, run_rank_check, "rank.md")}[args.command]  # fmt: skip
    overrides = args.overrides + ([f"out_dir={json.dumps(args.out_dir)}"] if args.out_dir else [])
    try:
        cfg = config.from_json(args.config, overrides)
        enable_compile_cache()
        run(cfg)
    except (ConfigError, ConstraintError, CandidatesFileError, LatencyDataError, SearchError, SearchSetupError,
            ArchError, FileNotFoundError, TrainingDiverged) as e:  # fmt: skip
        return training_failed(e)
    print(f"\nresults: {cfg.out_dir}/{results}; every step's record: {cfg.out_dir}/pipeline_state.json")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run one command; exit 2 on bad input, 1 on divergence."""
    args = build_parser().parse_args(argv)
    if args.command != "train":  # `train` applies its config's dtype's choice
        from distilbert_jax.train.cli import gemm_configured, training_failed
        from distilbert_jax.train.config import ConfigError

        try:
            gemm_configured("fp32")
        except ConfigError as e:
            return training_failed(e)
    commands = {"train": _train, "extract": _extract, "latency": _latency, "candidates": _candidates,
                "search": _search, "compare": _search, "pipeline": _pipeline, "compare-arms": _pipeline,
                "rank-check": _pipeline, "task-supernet": _task_supernet}  # fmt: skip
    return commands[args.command](args)
