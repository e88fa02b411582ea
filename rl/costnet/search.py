"""Measurements vs speedup: search with k measurements per op, evaluated on a pool of measured schedules.

The held-out programs' measured records are the candidate pool of each op (IREE's default excluded: it is
measured anyway, as in the tuner). With k measurements per op:
* random search: k distinct pool schedules drawn uniformly, averaged over `draws` draws;
* model-ranked search: the k schedules a model predicts fastest (measure only those);
* oracle: the pool's fastest (what any search of this pool can reach).
An op's time is the fastest of the measured ones and IREE's default; a program's speedup is Σ default /
Σ chosen over its ops; the figure is the geomean over programs. Because measurements are cached, taking the
model's top k of an already measured pool is exactly "measure only the top k" — the times are the same
measurements a fresh run would read back.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from loaders.schedules import group_key

from ..mlir.tune import geomean, policy_config

KS = (1, 2, 4, 8, 16, 32)


def pools(records: Sequence[dict]) -> dict[str, list[dict]]:
    """{program: [op pool]} where an op pool is {"default": seconds, "idx": [record indexes of candidates]};
    ops without a measured default are left out (nothing to compare with)."""
    ops: dict[tuple, dict] = {}
    for i, r in enumerate(records):
        o = ops.setdefault(group_key(r), {"defaults": [], "idx": []})
        (o["defaults"] if r.get("is_default") else o["idx"]).append(i)
    out: dict[str, list[dict]] = {}
    for key, o in ops.items():
        if o["defaults"] and o["idx"]:
            t = float(np.median([records[i]["time_s"] for i in o["defaults"]]))
            out.setdefault(key[0], []).append({"key": key, "default": t, "idx": np.asarray(o["idx"])})
    return out


def curves(records: Sequence[dict], scores: dict[str, np.ndarray], ks: Sequence[int] = KS, draws: int = 200,
           seed: int = 0) -> dict[str, dict[int, float]]:
    """{method: {k: geomean speedup over IREE default}} for "random", each model in `scores` (predicted
    log time [N] per record, lower = faster; named "ranked: <name>") and "oracle"."""
    times = np.array([r["time_s"] for r in records], float)
    progs = pools(records)
    rng = np.random.default_rng(seed)
    out: dict[str, dict[int, float]] = {"random": {}, **{f"ranked: {n}": {} for n in scores}, "oracle": {}}

    def speedup(prog: list[dict], chosen: list[np.ndarray]) -> float:
        base = sum(o["default"] for o in prog)
        best = sum(min(o["default"], float(times[c].min()) if len(c) else o["default"]) for o, c in zip(prog, chosen))
        return base / best

    for k in ks:
        rand = []
        for prog in progs.values():
            s = [speedup(prog, [rng.choice(o["idx"], min(k, len(o["idx"])), replace=False) for o in prog])
                 for _ in range(draws)]
            rand.append(float(np.mean(s)))
        out["random"][k] = geomean(rand)
        for name, pred in scores.items():
            out[f"ranked: {name}"][k] = geomean([speedup(prog, [o["idx"][np.argsort(pred[o["idx"]], kind="stable")[:k]]
                                                               for o in prog]) for prog in progs.values()])
        out["oracle"][k] = geomean([speedup(prog, [o["idx"] for o in prog]) for prog in progs.values()])
    return out


def policy_curve(records: Sequence[dict], policy: str, ks: Sequence[int], repeats: int = 3, timing: str = "cpu",
                 seed: int = 0) -> dict[int, float]:
    """{k: geomean speedup} of the PPO policy's first k proposals per op (`rl.mlir.tune.proposals`: greedy,
    then distinct samples), *measured* with IREE now (cached; not in the pool), against the pool's defaults."""
    from tqdm import tqdm

    from ..mlir import tune
    from ..mlir.emit import program_specs
    from .baselines import split_table
    from .features import default_from

    progs = pools(records)
    first: dict[tuple, dict] = {}
    for r in records:
        first.setdefault(group_key(r), r)
    flat = [o for prog in progs.values() for o in prog]
    ops = []
    for o in flat:
        r = first[o["key"]]
        t = split_table(r["split"])
        ops.append((program_specs(t, t.names.index(r["program"]))[int(r["op_index"])], default_from(r["default_config"])))
    network, params = tune.load_policy(policy)
    props = tune.proposals(ops, network, params, max(ks), seed)
    jobs = [(s, d, c) for (s, d), cs in zip(ops, props) for c in cs]
    with tqdm(total=len(jobs), desc="measuring the policy's proposals", unit="meas") as bar:
        times = iter(tune.measure_all(jobs, repeats, timing, bar))
    measured = {id(o): [next(times) for _ in cs] for o, cs in zip(flat, props)}
    out = {}
    for k in ks:
        sp = []
        for prog in progs.values():
            best = sum(min([o["default"]] + [t for t in measured[id(o)][:k] if np.isfinite(t)]) for o in prog)
            sp.append(sum(o["default"] for o in prog) / best)
        out[k] = geomean(sp)
    return out


def policy_name(path: str) -> str:
    """A policy directory's name for tables: its PPO config's `name` (else the directory's)."""
    import os

    try:
        return str(policy_config(path)["name"])
    except (OSError, ValueError, KeyError, TypeError):
        return os.path.basename(os.path.normpath(path))


def table(result: dict[str, dict[int, float]]) -> str:
    """Markdown: one row per method, one column per k."""
    from distilbert_jax.tables import markdown_table

    ks = sorted({k for v in result.values() for k in v})
    head = ["method"] + [f"k={k}" for k in ks]
    return markdown_table([{"method": m, **{f"k={k}": f"{v[k]:.3f}×" if k in v else "—" for k in ks}}
                           for m, v in result.items()], head)


def plot(path: str, result: dict[str, dict[int, float]], title: str) -> None:
    """Geomean speedup vs measurements per op (log2 x axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for m, v in result.items():
        ax.plot(list(v), list(v.values()), marker="o", label=m, linestyle="--" if m == "oracle" else "-")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("measurements per op (k)")
    ax.set_ylabel("geomean speedup over IREE default")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


__all__ = ["KS", "curves", "plot", "policy_curve", "policy_name", "pools", "table"]
