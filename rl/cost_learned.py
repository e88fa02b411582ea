"""A learned cost model of IREE schedules: train, evaluate on held-out programs, and search with it.

    python -m rl.cost_learned train --data runs/sched --out runs/costnet      # + trees, analytic, curve
    python -m rl.cost_learned evaluate --model runs/costnet --data runs/sched # held-out ranking table
    python -m rl.cost_learned search --model runs/costnet --data runs/sched   # measurements vs speedup

`--data` is the directory of `python -m rl.mlir.dataset` (its `records.jsonl`) or the file itself. Records
are split by their program's split (train / val / test programs): the models learn from the training
programs only and are scored on the held-out (test) programs. The model is `rl.costnet` (DistilBERT over
(op, schedule) tokens, pairwise ranking + log-time regression); beside it gradient-boosted trees on the
same features and the analytic `rl.cost_model`, calibrated on the training records.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np

from loaders.datasets import DataError
from loaders.schedules import ScheduleSet, by_split, group_ids, read_records, subsample, usable

from . import costnet as C
from .costnet import baselines, search
from .costnet.metrics import group_ranks, ranking_metrics

CURVE = (0.1, 0.25, 0.5, 1.0)
MODEL_NAMES = ("DistilBERT cost model", "gradient-boosted trees", "analytic (calibrated)")
ENSEMBLE = "ensemble (DistilBERT + trees, rank average)"
REMEASURED = "measurement B (the same schedules timed again)"


def load_splits(data: str, space: str) -> dict[str, list[dict]]:
    """Usable records of `space` by split; DataError when there are none for training."""
    parts = by_split(usable(read_records(data), space))
    if not parts["train"]:
        raise DataError(f"{data}: no usable {space!r} records of training programs")
    return parts


CLEAR_GAP = float(np.log(1.05))   # pairs more than 5 % apart: beyond the timing noise of a shared machine


def metrics_of(pred: np.ndarray, records: Sequence[dict]) -> dict:
    """`ranking_metrics` over every pair, plus "pairwise_5pct": over pairs whose times differ by > 5 %."""
    gid, _ = group_ids(records)
    true = np.log([r["time_s"] for r in records])
    return {**ranking_metrics(pred, true, gid), "pairwise_5pct": ranking_metrics(pred, true, gid, CLEAR_GAP)["pairwise"]}


def summary_table(rows: dict[str, dict]) -> str:
    from distilbert_jax.tables import markdown_table

    head = ["model", "ops", "schedules", "median Spearman", "pairwise acc.", "pairwise (> 5 % apart)",
            "top-1 recall", "top-5 recall"]
    fmt = lambda m: {"ops": m["ops"], "schedules": m["schedules"], "median Spearman": f"{m['spearman_median']:.3f}",  # noqa: E731
                     "pairwise acc.": f"{m['pairwise']:.3f}", "pairwise (> 5 % apart)": f"{m['pairwise_5pct']:.3f}",
                     "top-1 recall": f"{m['top1']:.2f}",
                     "top-5 recall": f"{m['top5']:.2f}"}
    return markdown_table([{"model": n, **fmt(m)} for n, m in rows.items()], head)


def train_models(cfg: C.CostNetConfig, train: list[dict], progress: bool = True, tree_iters: int = 300):
    """(model, params, stats, history) of the cost model and fitted trees on `train`."""
    data = ScheduleSet.build(train, lambda rs: C.encode(rs, cfg.n_buckets))
    model, state, stats, hist = C.fit(cfg, data, progress)
    return model, state.params, stats, hist, baselines.Trees(tree_iters, seed=cfg.seed).fit(train)


def rank_average(*fns: Callable) -> Callable:
    """A predictor scoring each record by the mean over `fns` of its rank within its op (`group_ranks`): an
    ensemble of models on different scales (its scores rank schedules of one op; they are not times)."""
    def predict(records: Sequence[dict]) -> np.ndarray:
        gid, _ = group_ids(records)
        return np.mean([group_ranks(fn(records), gid) for fn in fns], axis=0)

    return predict


def predictors(model, params, stats, cfg: C.CostNetConfig, trees, analytic) -> dict[str, Callable]:
    """{row name: records → scores [N], lower = faster}: the cost model, the trees (and the ensemble of the
    two) where `trees` is given, the calibrated analytic model."""
    net = lambda rs: C.predict(model, params, C.encode(rs, cfg.n_buckets), stats)  # noqa: E731
    out = {MODEL_NAMES[0]: net}
    if trees is not None:
        out[MODEL_NAMES[1]] = trees.predict
    out[MODEL_NAMES[2]] = analytic.predict
    if trees is not None:
        out[ENSEMBLE] = rank_average(net, trees.predict)
    return out


def evaluate_all(preds: dict[str, Callable], records: list[dict]) -> dict[str, dict]:
    out = {}
    for name, fn in preds.items():
        try:
            out[name] = metrics_of(fn(records), records)
        except ValueError as e:           # the analytic model cannot rebuild an op (e.g. an unknown program)
            print(f"warning: {name}: {e}", file=sys.stderr)
    return out


def plot_curve(path: str, curve: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, key, label in ((axes[0], "spearman_median", "median Spearman (held-out)"),
                           (axes[1], "pairwise", "pairwise accuracy (held-out)")):
        for name in (*MODEL_NAMES, ENSEMBLE):
            pts = [(c["train_records"], c["test"][name][key]) for c in curve if name in c["test"]]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=name)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("training records")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def curve_table(curve: list[dict]) -> str:
    from distilbert_jax.tables import markdown_table

    names = (*MODEL_NAMES, ENSEMBLE)
    head = ["train fraction", "train records"] + [f"{n} ρ / pairwise" for n in names]
    rows = [{"train fraction": f"{c['fraction']:.0%}", "train records": c["train_records"],
             **{f"{n} ρ / pairwise": (f"{c['test'][n]['spearman_median']:.3f} / {c['test'][n]['pairwise']:.3f}"
                                     if n in c["test"] else "—") for n in names}} for c in curve]
    return markdown_table(rows, head)


def cmd_train(args: argparse.Namespace) -> None:
    from .mlir.tune import cpu_name

    parts = load_splits(args.data, args.space)
    which = "test" if parts["test"] else "val"
    if which in args.fit_on:
        raise DataError(f"--fit-on {','.join(args.fit_on)}: the {which} programs are the held-out ones scored on")
    heldout = parts[which]
    if not heldout:
        raise DataError(f"{args.data}: no usable records of held-out (test or val) programs to score on")
    parts["train"] = [r for s in args.fit_on for r in parts[s]]     # the records the models learn from
    if "val" in args.fit_on:
        parts["val"] = []                                           # no longer held out: not reported
    cfg = C.CostNetConfig(space=args.space, steps=args.steps, dim=args.dim, n_layers=args.layers, seed=args.seed,
                          dropout=args.dropout, weight_decay=args.weight_decay)
    print(f"{len(parts['train'])} training records ({' + '.join(args.fit_on)} programs) / {len(parts['val'])} val / "
          f"{len(parts['test'])} test records ({args.space}); scoring on {which} programs")
    analytic = baselines.Analytic().fit(parts["train"])
    curve = []
    fractions = sorted(set(args.curve) | {1.0})
    for frac in fractions:
        t0 = time.time()
        train = subsample(parts["train"], frac, args.seed) if frac < 1 else parts["train"]
        model, params, stats, hist, trees = train_models(cfg, train, not args.quiet, args.tree_iters)
        preds = predictors(model, params, stats, cfg, trees, analytic)
        res = {"fraction": frac, "train_records": len(train), "seconds": time.time() - t0,
               "test": evaluate_all(preds, heldout), "history": hist}
        curve.append(res)
        print(f"  {frac:.0%} of train ({len(train)} records, {res['seconds']:.0f} s): " + ", ".join(
            f"{n.split()[0]} ρ {m['spearman_median']:.3f} pw {m['pairwise']:.3f}" for n, m in res["test"].items()))
    C.save(args.out, cfg, params, stats, {"analytic": analytic.to_dict(), "heldout_split": which,
                                          "train_records": len(parts["train"]), "fit_on": list(args.fit_on),
                                          "data": os.path.abspath(args.data)})
    with open(os.path.join(args.out, "trees.pkl"), "wb") as f:
        pickle.dump(trees, f)
    final = curve[-1]["test"]
    if parts["val"] and which == "test":
        final_val = evaluate_all(preds, parts["val"])
    else:
        final_val = {}
    plot_curve(os.path.join(args.out, "learning_curve.png"), curve)
    md = (f"measured on {cpu_name()}; trained on the {' + '.join(args.fit_on)} programs; held-out = {which} "
          "programs\n\n" + summary_table(final) + "\n\nlearning curve ("
          f"{which}):\n\n" + curve_table(curve) + "\n")
    with open(os.path.join(args.out, "summary.md"), "w") as f:
        f.write(md)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"heldout": which, "final": final, "val": final_val, "curve": curve}, f, indent=1)
    print("\n" + md)
    if final_val:
        print("validation programs:\n\n" + summary_table(final_val))
    print(f"model: {args.out} (config.json, params.msgpack, trees.pkl); curve: {args.out}/learning_curve.png")


def load_all(path: str):
    """(cfg, predictors) of a model directory written by `train`."""
    cfg, model, params, stats, meta = C.load(path)
    trees_path = os.path.join(path, "trees.pkl")
    trees = None
    if os.path.isfile(trees_path):
        with open(trees_path, "rb") as f:
            trees = pickle.load(f)
    analytic = baselines.Analytic()
    analytic.a, analytic.b = meta.get("analytic", {}).get("a", 1.0), meta.get("analytic", {}).get("b", 0.0)
    return cfg, predictors(model, params, stats, cfg, trees, analytic)


def cmd_evaluate(args: argparse.Namespace) -> None:
    from .mlir.tune import cpu_name

    cfg, preds = load_all(args.model)
    parts = load_splits(args.data, cfg.space)
    recs = parts[args.split]
    if not recs:
        raise DataError(f"{args.data}: no usable {cfg.space!r} records of {args.split} programs")
    rows = evaluate_all(preds, recs)
    print(f"\n{args.split} programs ({len(recs)} records), measured on {cpu_name()}\n\n" + summary_table(rows))
    if args.remeasured:
        print(remeasured_tables(preds, recs, args.remeasured, cfg.space))


def pair_remeasured(records: Sequence[dict], path: str, space: str) -> tuple[list[dict], np.ndarray]:
    """(the records of `records` that `path` measured again — same id, both usable —, their second times [n])."""
    again = {r["id"]: r["time_s"] for r in usable(read_records(path), space) if r.get("id")}
    paired = [r for r in records if r.get("id") in again]
    if not paired:
        raise DataError(f"--remeasured {path}: none of its usable {space!r} records has the id of an evaluated record "
                        "(measure them with `python -m rl.mlir.dataset --remeasure <records> --out DIR`)")
    return paired, np.array([again[r["id"]] for r in paired], float)


def geomean_of_two(paired: Sequence[dict], t_b: np.ndarray) -> list[dict]:
    """`paired` (as `pair_remeasured` returns them, with their second times `t_b`), each timed by the geometric
    mean of its two measurements (less noisy labels)."""
    return [dict(r, time_s=float(np.sqrt(r["time_s"] * b))) for r, b in zip(paired, t_b)]


def simulated_ceiling(records: Sequence[dict], t_a: np.ndarray, t_b: np.ndarray, sims: int = 20,
                      seed: int = 0) -> dict:
    """What a noise-free model would score against one measurement, simulated: the truth is taken as the mean
    log time m of the two measurements, a measurement as m + noise drawn (with a random sign) from the op's own
    (log A − log B) / √2 (same variance as one measurement's noise; heavy tails kept). Returns {"second": mean
    (median ρ, pairwise, pairwise > 5 %) of a simulated second measurement against a simulated first one —
    check it against the measured B-vs-A row —, "perfect": the same of m itself, "sims"}."""
    la, lb = np.log(t_a), np.log(t_b)
    m, d = (la + lb) / 2, (la - lb) / np.sqrt(2)
    gid, _ = group_ids(records)
    rng = np.random.default_rng(seed)

    def draw() -> np.ndarray:
        e = np.empty(len(m))
        for g in np.unique(gid):
            idx = np.flatnonzero(gid == g)
            e[idx] = rng.choice(d[idx], len(idx)) * rng.choice([-1.0, 1.0], len(idx))
        return m + e

    def score(pred: np.ndarray, truth: np.ndarray) -> list[float]:
        x = metrics_of(pred, [dict(r, time_s=float(np.exp(t))) for r, t in zip(records, truth)])
        return [x["spearman_median"], x["pairwise"], x["pairwise_5pct"]]

    second, perfect = [], []
    for _ in range(sims):
        a = draw()
        second.append(score(draw(), a))
        perfect.append(score(m, a))
    return {"second": np.mean(second, 0).tolist(), "perfect": np.mean(perfect, 0).tolist(), "sims": sims}


def remeasured_tables(preds: dict[str, Callable], records: list[dict], path: str, space: str) -> str:
    """The noise ceiling: on the records measured twice (A = the dataset, B = `path`), every model and
    measurement B scored against A — no model can agree with A much better than an independent measurement
    of the same schedules does — and the models scored against the geometric mean of A and B (less noisy
    labels)."""
    paired, t_b = pair_remeasured(records, path, space)
    t_a = np.array([r["time_s"] for r in paired])
    ratio = np.abs(np.log(t_b / t_a))
    against_a = evaluate_all(preds, paired)
    against_a[REMEASURED] = metrics_of(np.log(t_b), paired)
    mean = geomean_of_two(paired, t_b)
    sim = simulated_ceiling(paired, t_a, t_b)
    return (f"\nmeasured twice: {len(paired)} of {len(records)} records; |B / A − 1|: median "
            f"{np.expm1(np.median(ratio)):.1%}, 90th percentile {np.expm1(np.quantile(ratio, 0.9)):.1%}\n\n"
            "against measurement A (the dataset's times), with measurement B as a model (the noise ceiling):\n\n"
            + summary_table(against_a)
            + f"\n\nsimulated (noise resampled per op from the A/B differences, {sim['sims']} draws): a second "
              f"measurement would score ρ {sim['second'][0]:.3f} / pairwise {sim['second'][1]:.3f} / > 5 % "
              f"{sim['second'][2]:.3f}; a noise-free model (the true times) ρ {sim['perfect'][0]:.3f} / pairwise "
              f"{sim['perfect'][1]:.3f} / > 5 % {sim['perfect'][2]:.3f} — about the most any model can "
              "score against one measurement (an estimate)\n\nagainst the geometric mean of A and B (less noisy labels):\n\n"
            + summary_table(evaluate_all(preds, mean)))


def cmd_search(args: argparse.Namespace) -> None:
    cfg, preds = load_all(args.model)
    parts = load_splits(args.data, cfg.space)
    recs = parts[args.split]
    if args.remeasured:
        n = len(recs)
        recs = geomean_of_two(*pair_remeasured(recs, args.remeasured, cfg.space))
        print(f"times: the geometric mean of two measurements ({len(recs)} of {n} records measured again; "
              "the others left out)")
    if not search.pools(recs):
        raise DataError(f"{args.data}: no {args.split} op has both a measured default and candidates")
    scores = {}
    for name, fn in preds.items():
        try:
            scores[name] = fn(recs)
        except ValueError as e:
            print(f"warning: {name}: {e}", file=sys.stderr)
    res = search.curves(recs, scores, args.ks, args.draws, args.seed)
    if args.policy:
        oracle = res.pop("oracle")
        for path in args.policy:
            label = f"PPO policy: {search.policy_name(path)} (measured)"
            label = f"PPO policy: {path} (measured)" if label in res else label   # two policies of one config name
            res[label] = search.policy_curve(recs, path, [k for k in args.ks if k <= args.policy_max_k], seed=args.seed)
        res["oracle"] = oracle
    out = args.out or args.model
    os.makedirs(out, exist_ok=True)
    n_prog = len(search.pools(recs))
    search.plot(os.path.join(out, "search.png"), res, f"{args.split} programs ({n_prog}): geomean speedup vs k")
    md = search.table(res)
    with open(os.path.join(out, "search.md"), "w") as f:
        f.write(md + "\n")
    with open(os.path.join(out, "search.json"), "w") as f:
        json.dump(res, f, indent=1)
    print(f"\n{args.split} programs: {n_prog}; random = mean over {args.draws} draws\n\n{md}\n\nfigure: {out}/search.png")


def _fractions(s: str) -> list[float]:
    try:
        v = [float(x) / 100 for x in s.split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--curve: expected percentages like 10,25,50,100, got {s!r}") from None
    if not v or any(not 0 < x <= 1 for x in v):
        raise argparse.ArgumentTypeError(f"--curve: percentages must be in (0, 100], got {s!r}")
    return v


def _fit_on(s: str) -> tuple[str, ...]:
    v = tuple(dict.fromkeys(x.strip() for x in s.split(",") if x.strip()))
    if "train" not in v or not set(v) <= {"train", "val"}:
        raise argparse.ArgumentTypeError(f"--fit-on: expected train or train,val, got {s!r}")
    return v


def _ks(s: str) -> list[int]:
    try:
        v = [int(x) for x in s.split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--ks: expected integers like 1,2,4,8, got {s!r}") from None
    if not v or min(v) < 1:
        raise argparse.ArgumentTypeError(f"--ks: every k must be ≥ 1, got {s!r}")
    return v


def main(argv: list[str] | None = None) -> None:
    from distilbert_jax.clitools import InputError, need_dir, need_writable

    ap = argparse.ArgumentParser(prog="python -m rl.cost_learned", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    tr = sub.add_parser("train", help="train the cost model and the baselines; learning curve")
    tr.add_argument("--data", required=True, help="records.jsonl or its directory")
    tr.add_argument("--out", default="runs/costnet")
    tr.add_argument("--space", choices=("refine", "scalar"), default="refine")
    tr.add_argument("--steps", type=int, default=1500)
    tr.add_argument("--dim", type=int, default=64)
    tr.add_argument("--layers", type=int, default=2)
    tr.add_argument("--dropout", type=float, default=0.0)
    tr.add_argument("--weight-decay", type=float, default=1e-4)
    tr.add_argument("--fit-on", type=_fit_on, default=("train",), help="splits the models learn from: train "
                    "(default; choose settings on val) or train,val (the final model once settings are chosen)")
    tr.add_argument("--curve", type=_fractions, default=list(CURVE), help="train percentages (default 10,25,50,100)")
    tr.add_argument("--tree-iters", type=int, default=300, help="boosting iterations of the trees baseline")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--quiet", action="store_true", help="no progress bar")
    for name, helptext in (("evaluate", "held-out ranking table"), ("search", "measurements vs speedup")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--model", required=True, help="directory written by `train`")
        p.add_argument("--data", required=True, help="records.jsonl or its directory")
        p.add_argument("--split", choices=("train", "val", "test"), default="test")
        p.add_argument("--remeasured", default=None, metavar="RECORDS", help="a second measurement of the same "
                       "records (`python -m rl.mlir.dataset --remeasure`): " + (
                           "also score measurement B against A (the noise ceiling) and the models against the mean of "
                           "A and B" if name == "evaluate" else "time each schedule by the geometric mean of its two "
                           "measurements (records not measured again are left out)"))
        if name == "search":
            p.add_argument("--ks", type=_ks, default=list(search.KS))
            p.add_argument("--draws", type=int, default=200, help="random-search draws averaged per k")
            p.add_argument("--out", default=None, help="where search.png / .md / .json go (default: --model)")
            p.add_argument("--seed", type=int, default=0)
            p.add_argument("--policy", action="append", default=None, help="also a PPO policy's first k proposals per "
                           "op (a policy directory, e.g. rl/policies/refine_mlp or runs/<config>/policy), measured "
                           "with IREE now (cached); repeatable: one curve per policy")
            p.add_argument("--policy-max-k", type=int, default=8, help="largest k measured for --policy")
    args = ap.parse_args(argv)
    if not os.path.exists(args.data):
        raise InputError(f"--data: {args.data} does not exist (write records with `python -m rl.mlir.dataset`)")
    if args.cmd == "train":
        if args.steps < 1:
            ap.error("--steps must be ≥ 1")
        need_writable(args.out, "--out")
    else:
        need_dir(args.model, "--model", ("config.json",))
        if getattr(args, "out", None):
            need_writable(args.out, "--out")
        for path in getattr(args, "policy", None) or []:
            need_dir(path, "--policy", ("config.json", "params.msgpack"))
    try:
        {"train": cmd_train, "evaluate": cmd_evaluate, "search": cmd_search}[args.cmd](args)
    except (DataError, ValueError, FileNotFoundError) as e:
        raise InputError(str(e)) from None


if __name__ == "__main__":
    from distilbert_jax.clitools import run_cli

    sys.exit(run_cli(main))
