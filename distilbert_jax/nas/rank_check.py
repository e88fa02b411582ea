"""`rank-check`: does the one-shot ranking hold? Over `archs` candidates of one latency window, the rank
correlation (Kendall τ) between each arch's SuperNet fitness (one-shot held-out masked-LM loss), its loss
after further masked-LM training as a standalone model, and its downstream accuracy after fine-tuning — per
SuperNet training variant (e.g. plain sampling, the sandwich rule, in-place distillation: `variants` maps a
name to `supernet_set` overrides). It runs the pipeline's own steps (`shared_steps`, `candidates_step`,
`model_steps`) in one resumable state file: one SuperNet per variant, one latency dataset (timed on the
first variant's SuperNet: latency does not depend on the weights) and one set of archs for all variants."""

from __future__ import annotations

import dataclasses
import json
import os
import re

import numpy as np

from distilbert_jax.tables import format_table, markdown_table
from distilbert_jax.train.config import ConfigError
from distilbert_jax.train.config import read_json_object as read_config

from .pipeline import (ExperimentConfig, candidates_step, model_steps, shared_steps,
                       warnings_once)  # fmt: skip
from .pipeline_state import PipelineState, input_changes
from .space import Arch


@dataclasses.dataclass(frozen=True)
class RankConfig(ExperimentConfig):
    """A `rank-check` run (JSON; every key optional): a pipeline config (`pipeline_config` + `pipeline_set`)
    whose `out_dir` and `task` this config sets; each arch is fine-tuned once, with `finetune_set`'s seed."""

    out_dir: str = "runs/nas_rank"
    constraint: str = "100"
    archs: int = 10  # candidates of the window, drawn with the pipeline's seed
    variants: dict = dataclasses.field(default_factory=lambda: {"plain": {}, "sandwich": {"sandwich": True}})
    reuse: str = ""  # a pipeline / compare-arms OUT_DIR whose SuperNet and latency steps ran on the first variant's
    # inputs (same configs): they are adopted, not trained again

    def __post_init__(self):
        object.__setattr__(self, "constraint", str(self.constraint))
        p = []
        if not isinstance(self.archs, int) or self.archs < 3:
            p.append(f"archs must be an int >= 3 (a rank correlation needs several), got {self.archs!r}")
        if not isinstance(self.variants, dict) or not self.variants:
            p.append(f"variants must map a name to supernet_set overrides, got {self.variants!r}")
        else:
            for name, sets in self.variants.items():
                if not re.fullmatch(r"[A-Za-z0-9_-]+", name) or not isinstance(sets, dict):
                    p.append(f"variant {name!r}: a name of letters, digits, _ or - mapping to a dict of "
                             f"supernet_set overrides, got {sets!r}")  # fmt: skip
        if p:
            raise ConfigError("invalid rank-check config: " + "; ".join(p))


def adopt_shared_steps(state: PipelineState, prefix: str, other_dir: str, supernet_inputs: dict, log) -> None:
    """Record the `supernet` and `latency` steps of the run in `other_dir` as this run's `PREFIX` steps (its
    latency directory linked at `PREFIX`latency) when its SuperNet ran on `supernet_inputs`; a clear error
    when it did not or has not finished them."""
    other = PipelineState(other_dir)
    inputs = other.data.get("_inputs", {})
    missing = [s for s in ("supernet", "latency") if s not in other.data]
    if missing:
        raise ConfigError(f"reuse: {other_dir} has not finished step(s) {missing}")
    if inputs.get("supernet") != supernet_inputs:
        raise ConfigError(f"reuse: {other_dir}'s SuperNet ran on other inputs than variant {prefix[:-1]!r}: "
                          + "; ".join(input_changes(inputs.get("supernet", {}), supernet_inputs)))  # fmt: skip
    state.data[prefix + "supernet"] = other.data["supernet"]
    state.data.setdefault("_inputs", {})[prefix + "supernet"] = supernet_inputs
    latency_inputs = {k.replace("output of supernet", f"output of {prefix}supernet"): v for k, v in inputs["latency"].items()}
    state.data[prefix + "latency"] = other.data["latency"]
    state.data["_inputs"][prefix + "latency"] = latency_inputs
    link = os.path.join(os.path.dirname(state.path), prefix, "latency")
    os.makedirs(os.path.dirname(link), exist_ok=True)
    if not os.path.lexists(link):
        os.symlink(os.path.abspath(os.path.join(other_dir, "latency")), link)
    state._save()
    log(f"[{prefix}supernet] [{prefix}latency] adopted from {other_dir} (same inputs)")


def draw_archs(candidates_path: str, n: int, seed: int) -> list[dict]:
    """`n` distinct candidates drawn with `seed` (sorted); a clear error when the window holds fewer."""
    from .candidates import read_candidates

    cands = read_candidates(candidates_path)
    if len(cands) < n:
        raise ConfigError(f"archs: the window holds {len(cands)} candidates, fewer than archs={n}; lower archs "
                          "or widen the constraint")  # fmt: skip
    picked = np.random.default_rng(seed).choice(len(cands), n, replace=False)
    return [a.to_json() for a in sorted(cands.archs[int(i)] for i in picked)]


def _fitness(run_dir: str, archs: list[dict]) -> dict:
    from .fitness import load_search_setup

    setup = load_search_setup(run_dir)
    return {str(Arch(**a)): float(setup.fitness(Arch(**a))) for a in archs}


def kendall(x, y) -> dict:
    """Kendall's τ-b and its two-sided p-value (scipy)."""
    from scipy.stats import kendalltau

    r = kendalltau(x, y)
    return {"tau": float(r.statistic), "p": float(r.pvalue)}


def variant_summary(records: list[dict]) -> dict:
    """τ between SuperNet loss, further-trained MLM loss and accuracy over one variant's archs, and the
    spread of each."""
    sn, mlm, acc = (np.asarray([r[k] for r in records], np.float64) for k in ("supernet_loss", "mlm_loss", "accuracy"))
    return {"tau_supernet_mlm": kendall(sn, mlm), "tau_mlm_accuracy": kendall(mlm, acc),
            "tau_supernet_accuracy": kendall(sn, acc), "supernet_loss_spread": float(sn.max() - sn.min()),
            "mlm_loss_spread": float(mlm.max() - mlm.min()), "accuracy_spread": float(acc.max() - acc.min()),
            "mean_supernet_loss": float(sn.mean()), "mean_mlm_loss": float(mlm.mean()), "mean_accuracy": float(acc.mean()),
            "accuracy_se": float(acc.std(ddof=1) / np.sqrt(len(acc))) if len(acc) > 1 else float("nan"),
            **({"tau_task_error_accuracy": kendall([r["task_error"] for r in records], acc),
                "tau_task_loss_accuracy": kendall([r["task_loss"] for r in records], acc)}
               if all("task_error" in r for r in records) else {})}  # fmt: skip


def subnet_passes(supernet_config: str, supernet_set: dict) -> int:
    """SuperNet training compute in sub-network forward/backward passes: steps x archs trained per step (the
    sandwich rule trains the largest + the smallest + `random_archs` each step)."""
    from .config import load_nas_config
    from .pipeline import _overrides

    settings, tcfg = load_nas_config(supernet_config, _overrides(supernet_set))
    return int(tcfg.total_steps) * settings.archs_per_step


TAU_COLUMNS = ("variant", "SuperNet passes", "archs", "mean MLM loss", "mean accuracy ± SE", "τ(SuperNet loss, MLM loss)", "τ(MLM loss, accuracy)", "τ(SuperNet loss, accuracy)",
               "SuperNet loss spread", "MLM loss spread", "accuracy spread", "SuperNet final loss")  # fmt: skip
ARCH_COLUMNS = ("variant", "arch", "SuperNet loss", "MLM loss", "accuracy")
TASK_TAU_COLUMNS = ("τ(task error, accuracy)", "τ(task loss, accuracy)")  # with pipeline_set.search_fitness "task"
TASK_ARCH_COLUMNS = ("task error", "task loss")


def _columns(rows: list[dict], columns: tuple[str, ...], extra: tuple[str, ...]) -> list[str]:
    return list(columns) + [c for c in extra if any(c in r for r in rows)]


def _tau(t: dict) -> str:
    return f"{t['tau']:+.2f} (p={t['p']:.2g})"


def run_rank_check(rcfg: RankConfig, log=print) -> tuple[list[dict[str, str]], dict]:
    """Run (or resume) every step; write `OUT_DIR/rank.md` and `rank.json`. → (τ rows, summary)."""
    cfg = rcfg.pipeline()
    os.makedirs(cfg.out_dir, exist_ok=True)
    state = PipelineState(cfg.out_dir)
    names = list(rcfg.variants)
    summary, tau_rows, arch_rows = {"constraint": rcfg.constraint, "variants": {}}, [], []
    with warnings_once(log):
        first = f"{names[0]}/"
        if rcfg.reuse and first + "supernet" not in state.data:
            sets = {**cfg.supernet_set, **rcfg.variants[names[0]]}
            adopt_shared_steps(state, first, rcfg.reuse, state.inputs_of(
                supernet_config=read_config(cfg.supernet_config), supernet_set=sets), log)  # fmt: skip
        archs: list[dict] = []
        for i, v in enumerate(names):  # variant by variant: each one's τ is written as soon as it is done
            sn = shared_steps(cfg, state, log, f"{v}/", {**cfg.supernet_set, **rcfg.variants[v]}, latency=i == 0)
            if i == 0:
                candidates_step(cfg, state, log, rcfg.constraint, latency_prefix=first)
                cands_path = os.path.join(cfg.out_dir, "candidates.jsonl")
                archs = state.run("archs", lambda: draw_archs(cands_path, rcfg.archs, cfg.seed), log, [],
                                  state.inputs_of("candidates", archs=rcfg.archs, seed=cfg.seed))  # fmt: skip
            fit = state.run(f"{v}/fitness", lambda: _fitness(sn["run_dir"], archs), log, [],
                            state.inputs_of(f"{v}/supernet", "archs"))  # fmt: skip
            task = _task_metrics(cfg, state, log, v, sn, cands_path, archs) if cfg.search_fitness == "task" else {}
            records = []
            for a in archs:
                name = str(Arch(**a))
                res = model_steps(cfg, state, log, sn, name, a, f"{v}/", supernet_step=f"{v}/supernet")
                (ft,) = res["finetune"].values()
                records.append({"arch": name, "supernet_loss": fit[name], "mlm_loss": res["further_mlm"]["final_eval"]["loss"],
                                "accuracy": ft["final_eval"]["accuracy"], **task.get(name, {})})  # fmt: skip
            sets = {**cfg.supernet_set, **rcfg.variants[v]}
            s = {**variant_summary(records), "archs": records, "supernet_final_eval": sn["final_eval"],
                 "supernet_set": rcfg.variants[v], "supernet_passes": subnet_passes(cfg.supernet_config, sets)}  # fmt: skip
            summary["variants"][v] = s
            tau_rows.append({"variant": v, "SuperNet passes": str(s["supernet_passes"]), "archs": str(len(records)),
                             "mean MLM loss": f"{s['mean_mlm_loss']:.3f}",
                             "mean accuracy ± SE": f"{s['mean_accuracy']:.3f} ± {s['accuracy_se']:.3f}",
                             "τ(SuperNet loss, MLM loss)": _tau(s["tau_supernet_mlm"]),
                             "τ(MLM loss, accuracy)": _tau(s["tau_mlm_accuracy"]),
                             "τ(SuperNet loss, accuracy)": _tau(s["tau_supernet_accuracy"]),
                             "SuperNet loss spread": f"{s['supernet_loss_spread']:.3f}",
                             "MLM loss spread": f"{s['mlm_loss_spread']:.3f}", "accuracy spread": f"{s['accuracy_spread']:.3f}",
                             "SuperNet final loss": _final_loss(sn["final_eval"]),
                             **({"τ(task error, accuracy)": _tau(s["tau_task_error_accuracy"]),
                                 "τ(task loss, accuracy)": _tau(s["tau_task_loss_accuracy"])} if task else {})})  # fmt: skip
            arch_rows += [{"variant": v, "arch": r["arch"], "SuperNet loss": f"{r['supernet_loss']:.3f}",
                           "MLM loss": f"{r['mlm_loss']:.3f}", "accuracy": f"{r['accuracy']:.3f}",
                           **({"task error": f"{r['task_error']:.3f}", "task loss": f"{r['task_loss']:.3f}"}
                              if "task_error" in r else {})} for r in records]  # fmt: skip
            _write(cfg.out_dir, rcfg, summary, tau_rows, arch_rows, state)
    log("\n" + format_table(arch_rows, _columns(arch_rows, ARCH_COLUMNS, TASK_ARCH_COLUMNS)) + "\n\n"
        + format_table(tau_rows, _columns(tau_rows, TAU_COLUMNS, TASK_TAU_COLUMNS)) + "\n" + _note(rcfg))  # fmt: skip
    return tau_rows, summary


def _task_metrics(cfg, state: PipelineState, log, v: str, sn: dict, cands_path: str, archs: list[dict]) -> dict:
    """Step `V/task_fitness`: the task SuperNet of variant V over the window's candidates (as the search by task
    fitness trains it) → {arch: {"task_error", "task_loss"}} of the drawn archs on the search-validation split."""
    from .candidates import read_candidates
    from .pipeline import task_fitness_step

    fit = task_fitness_step(cfg, state, log, f"{v}/task_fitness", os.path.join(cfg.out_dir, v, "task_fitness"), sn,
                            lambda: read_candidates(cands_path), supernet_step=f"{v}/supernet")()  # fmt: skip
    metrics = {str(Arch(**a)): fit.metrics(Arch(**a)) for a in archs}
    return {k: {"task_error": 1.0 - m["accuracy"], "task_loss": m["loss"]} for k, m in metrics.items()}


def _note(rcfg: RankConfig) -> str:
    return (f"constraint {rcfg.constraint}: {rcfg.archs} candidates of its window; τ is Kendall's τ-b (p: two-sided). "
            "Lower loss is better, so a ranking that holds shows τ(SuperNet, MLM) > 0 and τ(loss, accuracy) < 0. "
            "SuperNet passes: training steps x sub-networks trained per step (equal passes = equal compute); "
            "mean ± SE over the same archs, each further trained and fine-tuned alike.")  # fmt: skip


def _write(out_dir: str, rcfg: RankConfig, summary: dict, tau_rows: list, arch_rows: list, state: PipelineState) -> None:
    with open(os.path.join(out_dir, "rank.md"), "w", encoding="utf-8") as f:
        f.write(markdown_table(tau_rows, _columns(tau_rows, TAU_COLUMNS, TASK_TAU_COLUMNS)) + "\n\n" + _note(rcfg)
                + "\n\n" + markdown_table(arch_rows, _columns(arch_rows, ARCH_COLUMNS, TASK_ARCH_COLUMNS)) + "\n")  # fmt: skip
    with open(os.path.join(out_dir, "rank.json"), "w", encoding="utf-8") as f:
        json.dump({"config": dataclasses.asdict(rcfg), "summary": summary, "seconds": state.data.get("_seconds", {})},
                  f, indent=2)  # fmt: skip


def _final_loss(final_eval: dict) -> str:
    """The SuperNet's last held-out losses (one per evaluated arch, e.g. smallest / largest)."""
    vals = {k: v for k, v in final_eval.items() if "loss" in k and isinstance(v, (int, float))}
    return ", ".join(f"{k} {v:.3f}" for k, v in sorted(vals.items())) or "-"
