"""Measured latencies of sub-networks on this machine (AutoTinyBERT's latency dataset), the reference
model they are compared against, and the `latency` step: sample archs, measure them, fit the predictor,
report its held-out error beside a FLOPs-only baseline and the measurement noise floor.

What is timed is the arch's **encoder** as deployed for downstream tasks — a standalone
`DistilBertModel` (embeddings + transformer blocks) with the arch's extracted weights, one jitted
forward on `[batch, seq]` token ids (default 1 x 128, the original's). The masked-LM head is *not*
included: fine-tuned models replace it by a task head (a few thousand multiply-adds), while the MLM
projector onto the vocabulary would cost as much as one or two small layers at seq 128 and would
distort the comparison with the reference. Compilation is excluded; every arch is timed in each of
`rounds` rounds, each round visiting all archs in a fresh random order (so drift hits all alike), and
its latency is a quantile over rounds — by default the lower quartile, not the median: on a shared
machine the other processes only ever add time, and the lower quartile of the rounds reproduces about
twice as well between independent passes as the median does (measured: docs/nas.md). `quantile=0.5`
gives the median. The spread is the inter-quartile range over rounds / median.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
import warnings
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import distilbert_jax as dj
from distilbert_jax.hardware import cpu_description

from .candidates import WINDOW, CandidateSet, Constraint, select_candidates, write_candidates
from .predictor import (MIN_TRAIN, FlopsBaseline, LatencyPredictor, MLPSettings, Predictor, encoder_flops,
                        load_predictor, mape, spearman, within)
from .space import Arch, ArchError, SearchSpace, arch_from_dict
from .supernet import SuperNet, arch_config
from .timing import progress_bar, random_params, time_calls
from .timing import spread as timing_spread

REFERENCE = Arch(12, 768, 12, 768, 3072)  # BERT-base's shape: "constraint 7" = 7x faster than this
MIN_ARCHS = 10  # fewer measured archs cannot train and check a predictor
DATASET_FILE, PREDICTOR_DIR, REPORT_FILE, PLOT_FILE = "latencies.jsonl", "predictor", "report.json", "latency.png"
PREDICTORS_DIR = "predictors"  # every fitted predictor, by name; PREDICTOR_DIR holds the chosen one


class LatencyDataError(ValueError):
    """A latency directory or file that is missing or malformed, or a request that cannot be measured;
    the message names the file or the setting."""


def device_info() -> dict[str, str]:
    """The machine a latency belongs to: `device` (CPU model, cores, AVX-512 / BF16 / AMX) and the JAX
    backend; latencies measured elsewhere do not hold here."""
    dev = jax.devices()[0]
    return {"device": f"{cpu_description()}; jax {dev.platform}", "jax": jax.__version__}


@dataclasses.dataclass(frozen=True)
class Latencies:
    """One measurement run: `ms[i]` (the `quantile` over rounds) and `spread[i]` (inter-quartile range / median)
    of `archs[i]`; `rounds_ms` [rounds, n] every round's value; `reference_ms` the reference model's
    latency in the same run (None when not measured); `meta` device, batch, seq, rounds, calls."""

    archs: tuple[Arch, ...]
    ms: np.ndarray
    spread: np.ndarray
    rounds_ms: np.ndarray
    reference_ms: float | None
    reference_spread: float | None
    meta: dict[str, Any]
    extra_rounds_ms: np.ndarray | None = None  # [rounds, m] the `extra_runs` timed in the same rounds


def _forward(model):
    return jax.jit(lambda params, ids, mask: model.apply({"params": params}, ids, mask).last_hidden_state)


def measure_latencies(archs: Sequence[Arch | str | dict], supernet: SuperNet, params: dict | None = None, *,
                      batch: int = 1, seq: int = 128, rounds: int = 10, calls: int = 3, quantile: float = 0.25,
                      reference: Arch | None = REFERENCE, seed: int = 0, progress: bool = True,
                      extra_runs: Sequence[tuple[Any, tuple]] = ()) -> Latencies:  # fmt: skip
    """Latency in ms of each arch's standalone encoder (`DistilBertModel`: embeddings + transformer, no
    MLM head) on [batch, seq] random token ids, jitted, compile excluded. Weights: extracted from
    `params` (the SuperNet's) when given, else from a random-init SuperNet. Each of `rounds` rounds
    visits every arch (and `reference`) in a fresh seeded order: one untimed call, then the mean of
    `calls` timed calls; the latency is the `quantile` over rounds (0.25: lower quartile; 0.5: median). `reference` (default BERT-base's shape,
    12 x 768 x 3072, 12 heads, the SuperNet's vocabulary and positions; None: skip) is built outside the
    space with random weights. `extra_runs` (compiled function, args) are timed in the same rounds, interleaved
    with the archs (`Latencies.extra_rounds_ms`)."""
    archs = [supernet.space.check(a) for a in archs]
    base = supernet.base
    if not (isinstance(batch, int) and isinstance(seq, int) and batch >= 1 and seq >= 1):
        raise LatencyDataError(f"batch and seq must be positive ints, got batch={batch!r} seq={seq!r}")
    if seq > base.max_position_embeddings:
        raise LatencyDataError(f"seq={seq} exceeds the SuperNet's max_position_embeddings={base.max_position_embeddings}")
    if rounds < 1 or calls < 1 or not 0 <= quantile <= 1:
        raise LatencyDataError(f"rounds and calls must be >= 1 and quantile in [0, 1], got rounds={rounds} "
                               f"calls={calls} quantile={quantile}")  # fmt: skip
    params = jax.device_get(params if params is not None else supernet.init(seed))  # numpy: cheap slicing
    rng = np.random.default_rng(seed)
    ids = jnp.asarray(rng.integers(0, base.vocab_size, (batch, seq)), jnp.int32)
    mask = jnp.ones((batch, seq), jnp.int32)

    runs, shared_words = [], {}  # (compiled forward, encoder params); word embeddings shared per hidden size
    with progress_bar(len(archs) + (reference is not None), "compiling archs", progress) as bar:
        for arch in archs:
            model, variables = supernet.extract(params, arch)
            enc = variables["params"]["distilbert"]
            words = enc["embeddings"]["word_embeddings"]
            words["embedding"] = shared_words.setdefault(arch.hidden, words["embedding"])
            runs.append((_forward(dj.build_model(model.config, "base")).lower(enc, ids, mask).compile(), (enc, ids, mask)))
            bar.update()
        if reference is not None:
            model = dj.build_model(arch_config(base, reference), "base")
            ref_params = random_params(model, seed, ids[:, :8], mask[:, :8])
            runs.append((_forward(model).lower(ref_params, ids, mask).compile(), (ref_params, ids, mask)))
            bar.update()

    samples = time_calls(runs + list(extra_runs), rounds, calls, rng, progress)
    extra = samples[:, len(runs):] if extra_runs else None
    samples = samples[:, : len(runs)]
    ms, spread = np.quantile(samples, quantile, axis=0), timing_spread(samples)
    n = len(archs)
    meta = {**device_info(), "batch": batch, "seq": seq, "rounds": rounds, "calls": calls, "quantile": quantile, "seed": seed,
            "reference_arch": reference.to_json() if reference is not None else None}  # fmt: skip
    ref = (float(ms[n]), float(spread[n])) if reference is not None else (None, None)
    return Latencies(tuple(archs), ms[:n], spread[:n], samples[:, :n], *ref, meta, extra)


def sample_archs(space: SearchSpace, n: int, seed: int = 0) -> list[Arch]:
    """`n` distinct archs drawn uniformly from `space` (seeded; a large heterogeneous space: distinct
    `space.sample` draws — layer count uniform, then each layer's sizes)."""
    size = space.size()
    if not 1 <= n <= size:
        raise LatencyDataError(f"cannot sample n={n} distinct archs from a space of {size}")
    if space.heterogeneous and size > 200_000:  # too many to list: distinct draws of `space.sample`
        rng, chosen = np.random.default_rng(seed), {}
        while len(chosen) < n:
            chosen.setdefault(space.sample(rng))
        return list(chosen)
    everything = list(space.archs())
    return [everything[i] for i in np.random.default_rng(seed).choice(size, n, replace=False)]


# ---- the dataset file -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LatencyDataset:
    """The `latency` step's measurements: `archs`, their `ms` and `spread`; `held_out` [n] bool marks the
    archs kept out of the predictor's training, which were measured again in a second independent pass
    (`second_ms`, NaN for the others). `meta`: device, jax, batch, seq, rounds, reference_ms, space, …"""

    archs: tuple[Arch, ...]
    ms: np.ndarray
    spread: np.ndarray
    held_out: np.ndarray
    second_ms: np.ndarray
    meta: dict[str, Any]

    @property
    def reference_ms(self) -> float:
        return float(self.meta["reference_ms"])

    @property
    def space(self) -> SearchSpace:
        return SearchSpace.from_dict(self.meta["space"])

    def split(self, held_out: bool) -> tuple[list[Arch], np.ndarray]:
        """(archs, ms) of the held-out (True) or training (False) archs."""
        idx = np.flatnonzero(self.held_out == held_out)
        return [self.archs[i] for i in idx], self.ms[idx]


def write_dataset(path: str | os.PathLike, data: LatencyDataset) -> None:
    """JSONL: a `{"meta": …}` line, then one line per arch (arch, ms, spread, split, second_ms, flops)."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    batch, seq = data.meta["batch"], data.meta["seq"]
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps({"meta": data.meta}) + "\n")
        for i, arch in enumerate(data.archs):
            row = {"arch": arch.to_json(), "ms": round(float(data.ms[i]), 6), "spread": round(float(data.spread[i]), 4),
                   "split": "held_out" if data.held_out[i] else "train", "flops": encoder_flops(arch, batch, seq)}  # fmt: skip
            if not math.isnan(data.second_ms[i]):
                row["second_ms"] = round(float(data.second_ms[i]), 6)
            f.write(json.dumps(row) + "\n")


def read_dataset(path: str | os.PathLike) -> LatencyDataset:
    """The dataset of a `latencies.jsonl` (or of the latency directory holding it); `LatencyDataError`
    naming the file and line when it is missing or malformed."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, DATASET_FILE)
    if not os.path.isfile(path):
        raise LatencyDataError(f"latency dataset {path} does not exist (measure one with "
                               "`python -m distilbert_jax.nas latency`)")  # fmt: skip
    meta, rows = None, []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if meta is None:
                    head = row["meta"]
                    SearchSpace.from_dict(head["space"]), float(head["reference_ms"]), head["device"]
                    meta = head
                    continue
                rows.append((arch_from_dict(row["arch"]), float(row["ms"]), float(row.get("spread", math.nan)),
                             row["split"] == "held_out", float(row.get("second_ms", math.nan))))  # fmt: skip
            except (json.JSONDecodeError, KeyError, TypeError, ValueError, ArchError) as e:
                what = "the meta line" if meta is None else "an arch line"
                raise LatencyDataError(f"{path}, line {n}: malformed {what} ({type(e).__name__}: {e})") from None
    if meta is None or not rows:
        raise LatencyDataError(f"latency dataset {path} is empty or holds no measured archs")
    archs, ms, spread, held, second = zip(*rows)
    return LatencyDataset(tuple(archs), np.array(ms), np.array(spread), np.array(held), np.array(second), meta)


# ---- the `latency` step: measure, fit, report ---------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LatencyRun:
    """What `run_latency` made: the dataset, the chosen predictor (the best on the held-out archs), every
    fitted predictor by name (`layer_sum`, `mlp`, `flops`) and the report (also written to `out`:
    latencies.jsonl, predictor/, predictors/NAME/, report.json, latency.png)."""

    dataset: LatencyDataset
    predictor: Predictor
    predictors: dict[str, Predictor]
    report: dict[str, Any]
    out: str

    @property
    def baseline(self) -> Predictor:
        return self.predictors["flops"]


PREDICTOR_LABELS = {"layer_sum": "per-layer sum (timed sub-layers)", "mlp": "MLP predictor",
                    "flops": "FLOPs baseline (log-log fit)"}  # fmt: skip


def _scores(predicted: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    return {"mape": mape(predicted, measured), "within_10": within(predicted, measured, 0.1),
            "spearman": spearman(predicted, measured)}


def evaluate_predictor(data: LatencyDataset, predictors: dict[str, Predictor]) -> dict[str, Any]:
    """Held-out MAPE, share within ±10 % and Spearman of each predictor and of the noise floor (the second
    pass against the first), `chosen`: the predictor of lowest held-out MAPE, and its error over the
    floor. `noise_floor` is raw; a change of machine load between the passes scales every latency alike
    (`pass_drift`: the median second / first ratio), so `noise_floor_drift_removed` divides it out first —
    the predictors are scored within the first pass, so that is the floor they are compared with."""
    archs, ms = data.split(held_out=True)
    second = data.second_ms[data.held_out]
    drift = float(np.median(second / ms))
    rows = {name: p.predict(archs) for name, p in predictors.items()}
    rows.update(noise_floor=second, noise_floor_drift_removed=second / drift)
    out: dict[str, Any] = {name: _scores(pred, ms) for name, pred in rows.items()}
    floor = out["noise_floor_drift_removed"]["mape"]
    out["pass_drift"] = drift
    out["chosen"] = min(predictors, key=lambda name: out[name]["mape"])
    out["chosen_over_noise"] = out[out["chosen"]]["mape"] / floor if floor > 0 else math.inf
    if "mlp" in predictors:
        out["mlp_over_noise"] = out["mlp"]["mape"] / floor if floor > 0 else math.inf
    return out


def run_latency(supernet_dir: str | os.PathLike, out: str | os.PathLike, *, n: int = 100, batch: int = 1,
                seq: int = 128, rounds: int = 10, calls: int = 3, quantile: float = 0.25, seed: int = 0, held_out: float = 0.2,
                reference: Arch | None = REFERENCE, settings: MLPSettings = MLPSettings(),
                progress: bool = True) -> LatencyRun:  # fmt: skip
    """The `latency` step: `n` distinct archs drawn uniformly from the SuperNet's space, measured with the
    reference (`measure_latencies`); a `held_out` fraction kept out of the fits and measured again in an
    independent second pass (the noise floor); the space's sub-layers timed (`measure_layer_table`); the
    per-layer-sum predictor, the MLP and the FLOPs baseline fitted on the training archs and scored on the
    held-out ones; the best of them (lowest held-out MAPE) saved as `predictor/`; everything written to
    `out`."""
    t_start = time.perf_counter()
    from .io import SPACE_FILE, find_supernet_dir, load_supernet
    from .layer_latency import LayerSumPredictor, LayerTableRuns

    sn_dir = find_supernet_dir(supernet_dir)
    if sn_dir is None:
        raise LatencyDataError(f"{os.fspath(supernet_dir)} is neither a SuperNet directory (no {SPACE_FILE}) nor a "
                               f"SuperNet training run (no supernet/{SPACE_FILE}); train one with "
                               "`python -m distilbert_jax.nas train`")  # fmt: skip
    if not (isinstance(n, int) and n >= MIN_ARCHS):
        raise LatencyDataError(f"--n {n}: measure at least {MIN_ARCHS} archs (a predictor needs training and "
                               "held-out archs)")  # fmt: skip
    if not 0 < held_out < 1:
        raise LatencyDataError(f"held_out must be a fraction in (0, 1), got {held_out}")
    if reference is None:
        raise LatencyDataError("the latency step needs a reference model (constraints are speedups over it)")
    supernet, params = load_supernet(sn_dir)
    archs = sample_archs(supernet.space, n, seed)
    n_held = min(max(2, round(held_out * n)), n - MIN_TRAIN)
    held = np.zeros(n, bool)
    held[np.random.default_rng(seed).permutation(n)[:n_held]] = True

    t0 = time.perf_counter()
    table_runs = LayerTableRuns(supernet.space, supernet.base, batch=batch, seq=seq, seed=seed, progress=progress)
    t_table = time.perf_counter() - t0  # compiling the sub-layers; they are timed with the archs, interleaved
    t0 = time.perf_counter()
    timing = dict(batch=batch, seq=seq, rounds=rounds, calls=calls, quantile=quantile, progress=progress)
    first = measure_latencies(archs, supernet, params, reference=reference, seed=seed, extra_runs=table_runs.runs,
                              **timing)  # fmt: skip
    table = table_runs.table(first.extra_rounds_ms, quantile)
    second = measure_latencies([a for a, h in zip(archs, held) if h], supernet, params, reference=None,
                               seed=seed + 1, **timing)  # fmt: skip
    second_ms = np.full(n, np.nan)
    second_ms[held] = second.ms
    t_measure = time.perf_counter() - t0
    meta = {**first.meta, "reference_ms": first.reference_ms, "reference_spread": first.reference_spread,
            "space": supernet.space.to_dict(), "supernet": os.path.abspath(sn_dir), "n": n, "held_out": n_held}  # fmt: skip
    data = LatencyDataset(first.archs, first.ms, first.spread, held, second_ms, meta)

    t0 = time.perf_counter()
    train_archs, train_ms = data.split(held_out=False)
    keep = ("device", "jax", "batch", "seq", "rounds", "quantile", "reference_ms", "reference_arch")
    fit_meta = {k: meta[k] for k in keep}
    predictors: dict[str, Predictor] = {
        "layer_sum": LayerSumPredictor.fit(table, train_archs, train_ms, supernet.space, fit_meta),
        "mlp": LatencyPredictor.fit(train_archs, train_ms, supernet.space, seed=seed, settings=settings, meta=fit_meta),
        "flops": FlopsBaseline.fit(train_archs, train_ms, batch, seq, supernet.space, fit_meta),
    }
    t_fit = time.perf_counter() - t0
    # the same MLP on latency / mean latency instead of log latency (the original's choice), for the record
    linear = LatencyPredictor.fit(train_archs, train_ms, supernet.space, seed=seed,
                                  settings=dataclasses.replace(settings, target="linear"))  # fmt: skip
    held_archs, held_ms = data.split(held_out=True)
    evaluation = evaluate_predictor(data, predictors)
    chosen = evaluation["chosen"]
    report = {"n": n, "n_train": n - n_held, "n_held_out": n_held, "device": meta["device"], "batch": batch,
              "seq": seq, "rounds": rounds, "reference_ms": first.reference_ms,
              "reference_spread": first.reference_spread, "median_spread": float(np.median(first.spread)),
              "quantile": quantile, **evaluation,
              "mlp_linear_target": _scores(linear.predict(held_archs), held_ms),
              "layer_table": {"sublayers_timed": int(table.emb_ms.size + table.attn_ms.size + table.ffn_ms.size),
                              "hidden": table.hidden.tolist(), "qkv": table.qkv.tolist(), "ffn": table.ffn.tolist(),
                              "dispatch_ms": table.dispatch_ms, "median_spread": table.spread,
                              **{c: getattr(predictors["layer_sum"], c) for c in ("c0", "c1", "c2")}},
              "mlp_settings": dataclasses.asdict(settings), "flops_fit": predictors["flops"].to_dict(),
              "seconds": {"measure": t_measure, "layer_table": t_table, "fit": t_fit}}  # fmt: skip
    out = os.fspath(out)
    os.makedirs(out, exist_ok=True)
    write_dataset(os.path.join(out, DATASET_FILE), data)
    for name, p in predictors.items():
        p.save(os.path.join(out, PREDICTORS_DIR, name))
    predictors[chosen].save(os.path.join(out, PREDICTOR_DIR))
    plot_predictions(os.path.join(out, PLOT_FILE), data, predictors, evaluation)
    report["seconds"]["total"] = time.perf_counter() - t_start
    with open(os.path.join(out, REPORT_FILE), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    return LatencyRun(data, predictors[chosen], predictors, report, out)


def plot_predictions(path: str, data: LatencyDataset, predictors: dict[str, Predictor], ev: dict[str, Any]) -> None:
    """Predicted (each predictor) and re-measured (second pass) vs measured latency of the held-out archs,
    log axes, the diagonal and the ±10 % band; `ev` is `evaluate_predictor`'s result."""
    import matplotlib.ticker

    from distilbert_jax.train.reporting import pyplot

    plt = pyplot()

    archs, ms = data.split(held_out=True)
    fig, ax = plt.subplots(figsize=(6.5, 6))
    lo, hi = float(ms.min()) / 1.3, float(ms.max()) * 1.3
    grid = np.array([lo, hi])
    ax.plot(grid, grid, "k-", lw=0.8)
    ax.fill_between(grid, grid / 1.1, grid * 1.1, color="0.9", label="±10 %")
    styles = {"noise_floor": dict(marker="x", color="0.5"), "flops": dict(marker="s", color="tab:orange", alpha=0.7),
              "mlp": dict(marker="o", color="tab:blue", alpha=0.8), "layer_sum": dict(marker="^", color="tab:green")}  # fmt: skip
    series = [("noise_floor", data.second_ms[data.held_out])] + [(k, p.predict(archs)) for k, p in predictors.items()]
    for name, pred in series:
        label = PREDICTOR_LABELS.get(name, "second measurement") + (" (chosen)" if name == ev["chosen"] else "")
        err = f"MAPE {100 * ev[name]['mape']:.1f} %, {100 * ev[name]['within_10']:.0f} % in ±10 %"
        if name == "noise_floor":
            err += f" ({100 * ev['noise_floor_drift_removed']['mape']:.1f} % without the {ev['pass_drift']:.3f}x drift)"
        ax.scatter(ms, pred, s=18, label=f"{label}: {err}, ρ {ev[name]['spearman']:.3f}", **styles.get(name, {}))
    ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi), xlabel="measured latency (ms)",
           ylabel="predicted / re-measured latency (ms)",
           title=f"{len(archs)} held-out archs, batch {data.meta['batch']} x seq {data.meta['seq']}\n"
                 f"{data.meta['device']}")  # fmt: skip
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1, 2, 5)))
        axis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        axis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.title.set_fontsize(8)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def latency_summary(report: dict[str, Any]) -> str:
    """The `latency` command's table: held-out MAPE / share within ±10 % / Spearman of each predictor and
    of the noise floor, which predictor was chosen, the reference latency and the time taken."""
    from distilbert_jax.tables import format_table

    labels = {**PREDICTOR_LABELS, "mlp_linear_target": "same MLP on linear latency",
              "noise_floor": "noise floor (2nd measurement)",
              "noise_floor_drift_removed": "noise floor, drift between passes removed"}  # fmt: skip
    rows = [{"held-out error": labels[k] + (" <- chosen" if k == report["chosen"] else ""),
             "MAPE %": f"{100 * report[k]['mape']:.2f}", "within ±10 %": f"{100 * report[k]['within_10']:.0f} %",
             "Spearman": f"{report[k]['spearman']:.4f}"}
            for k in ("layer_sum", "mlp", "flops", "mlp_linear_target", "noise_floor", "noise_floor_drift_removed")
            if k in report]  # fmt: skip
    s, t = report["seconds"], report["layer_table"]
    best_other = min((k for k in PREDICTOR_LABELS if k != "flops" and k in report), key=lambda k: report[k]["mape"])
    verdict = (f"{report['chosen']} (lowest held-out MAPE)" if report["chosen"] != "flops" else
               f"flops: the FLOPs fit beat the {best_other} predictor on the held-out archs, so it is used")  # fmt: skip
    info = [("chosen predictor (predictor/)", verdict),
            ("archs measured", f"{report['n']} ({report['n_train']} train, {report['n_held_out']} held out, "
                               f"batch {report['batch']} x seq {report['seq']}, {report['rounds']} rounds, "
                               f"quantile {report['quantile']:g})"),
            ("sub-layers timed", f"{t['sublayers_timed']} (dispatch {t['dispatch_ms']:.4f} ms; calibrated: "
                                 f"{t['c0']:.4f} + {t['c1']:.3f} x sum + {t['c2']:.4f} x layers ms)"),
            ("reference (BERT-base shape)", f"{report['reference_ms']:.3f} ms (spread {100 * report['reference_spread']:.1f} %)"),
            ("median spread over rounds", f"{100 * report['median_spread']:.1f} %"),
            ("2nd pass / 1st pass (median)", f"{report['pass_drift']:.3f}"),
            ("chosen MAPE / noise floor", f"{report['chosen_over_noise']:.2f}x (drift removed; goal <= 1.5x)"),
            ("device", report["device"]),
            ("time", f"{s['total']:.0f} s (timing {s['measure']:.0f} s, compiling sub-layers {s['layer_table']:.0f} s, "
                     f"fit {s['fit']:.1f} s)")]  # fmt: skip
    return format_table(rows, list(rows[0])) + "\n\n" + format_table([{"": k, "value": v} for k, v in info], ["", "value"])


class DeviceMismatchWarning(UserWarning):
    """Latencies measured on another machine than this one."""


def device_mismatch(measured_on: str) -> str | None:
    """A warning message when `measured_on` (a `device_info()["device"]`) is not this machine, else None."""
    here = device_info()["device"]
    if measured_on == here:
        return None
    return (f"the latencies were measured on '{measured_on}' but this is '{here}': predicted latencies and "
            "speedups hold for the measuring machine only (re-run `latency` here to use this one)")  # fmt: skip


def candidates_from_latency(latency_dir: str | os.PathLike, constraint: Constraint | str | float,
                            out: str | os.PathLike | None = None, window: tuple[float, float] = WINDOW) -> CandidateSet:  # fmt: skip
    """The `candidates` step: every arch of the latency directory's space whose latency, as its predictor
    predicts, lies in `window` x the constraint's target (a speedup over its reference or ms); written to
    `out` when given. Warns (`DeviceMismatchWarning`) when the latencies come from another machine;
    raises `ConstraintError` with the reachable range when no arch meets the constraint."""
    latency_dir = os.fspath(latency_dir)
    if not os.path.isdir(latency_dir):
        raise LatencyDataError(f"latency directory {latency_dir} does not exist (make one with "
                               "`python -m distilbert_jax.nas latency`)")  # fmt: skip
    predictor = load_predictor(os.path.join(latency_dir, PREDICTOR_DIR))
    if "reference_ms" not in predictor.meta:
        raise LatencyDataError(f"{os.path.join(latency_dir, PREDICTOR_DIR)}: the predictor records no reference_ms")
    message = device_mismatch(predictor.device)
    if message:
        warnings.warn(message, DeviceMismatchWarning, stacklevel=2)
    meta = {"device": predictor.device, "latency_dir": os.path.abspath(latency_dir), "batch": predictor.meta.get("batch"),
            "seq": predictor.meta.get("seq")}  # fmt: skip
    cands = select_candidates(predictor.space, predictor.predict, constraint, predictor.reference_ms, window, meta)
    if out is not None:
        write_candidates(out, cands)
    return cands


def candidates_summary(cands: CandidateSet) -> str:
    """The `candidates` command's table."""
    from distilbert_jax.tables import format_table

    m, lo, hi = cands.meta, *cands.window_ms
    fast, slow = int(np.argmin(cands.predicted_ms)), int(np.argmax(cands.predicted_ms))
    rows = [("constraint", f"{m['constraint']} (reference {m['reference_ms']:.3f} ms)"),
            ("target latency", f"{m['target_ms']:.3f} ms"),
            ("window", f"{lo:.3f}–{hi:.3f} ms ({m['window'][0]:g}–{m['window'][1]:g} x target)"),
            ("candidates / space", f"{len(cands)} / {m['space_size']} ({m['mode']} mode)"),
            ("fastest predicted", f"{cands.archs[fast]}: {cands.predicted_ms[fast]:.3f} ms"),
            ("slowest predicted", f"{cands.archs[slow]}: {cands.predicted_ms[slow]:.3f} ms"),
            ("measured on", m["device"])]  # fmt: skip
    return format_table([{"": k, "value": v} for k, v in rows], ["", "value"])
