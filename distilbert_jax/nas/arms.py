"""`compare-arms`: at several latency constraints, the searched arch against the other arms — a random
candidate of the same window, the arch with DistilBERT's ratios, a 4-layer TinyBERT-like arch scaled to
the window — each extracted from the same SuperNet, further trained (masked LM) with the same budget and
fine-tuned with several seeds; mean accuracy ± standard error per arm. It runs the pipeline's own steps
(`pipeline.shared_steps`, `pipeline.constraint_steps`) in one resumable state file.

Standard error of an arm: sqrt(SE_seeds² + p(1-p)/n) — the spread of the seeds' mean (sample std / √k)
combined with the binomial error of a mean accuracy p on n evaluation examples (the evaluation set is one
sample of the task). A lead of the searched arch counts when it exceeds 2 x sqrt(SE_searched² + SE_other²)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re

import numpy as np

from distilbert_jax.tables import format_table, markdown_table
from distilbert_jax.train.config import ConfigError

from .pipeline import (ExperimentConfig, constraint_steps, finetune_data, module_task_for,
                       shared_steps, warnings_once)
from .pipeline_report import ARMS, results_rows, shown_columns
from .pipeline_state import PipelineState


@dataclasses.dataclass(frozen=True)
class ArmsConfig(ExperimentConfig):
    """A `compare-arms` run (JSON; every key optional): a pipeline config (`pipeline_config`, with
    `pipeline_set` overrides) whose `out_dir` and `task` this config sets."""

    out_dir: str = "runs/nas_arms"
    constraints: tuple[str, ...] | list = ("50", "100")  # (a JSON list becomes a tuple)
    arms: tuple[str, ...] | list = ARMS
    seeds: int = 3  # fine-tuning seeds 0..seeds-1 per arm

    def __post_init__(self):
        object.__setattr__(self, "constraints", tuple(str(c) for c in self.constraints))
        object.__setattr__(self, "arms", tuple(self.arms))
        p = []
        if not self.constraints:
            p.append("constraints must name at least one latency constraint")
        if len(set(self.constraints)) != len(self.constraints):
            p.append(f"constraints repeat one: {list(self.constraints)}")
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown or "searched" not in self.arms or len(self.arms) < 2:
            p.append(f"arms must hold 'searched' and at least one other of {list(ARMS)}, got {list(self.arms)}")
        if not isinstance(self.seeds, int) or self.seeds < 2:
            p.append(f"seeds must be an int >= 2 (a standard error over seeds needs two), got {self.seeds!r}")
        if p:
            raise ConfigError("invalid compare-arms config: " + "; ".join(p))


def constraint_prefix(constraint: str) -> str:
    """The step-name prefix (and sub-directory) of one constraint: "60" -> "c60/", "3ms" -> "c3ms/"."""
    return "c" + re.sub(r"[^0-9A-Za-z.]+", "_", constraint) + "/"


def eval_examples(cfg: PipelineConfig) -> int | None:
    """How many examples the fine-tuning's evaluation counts: the module task's or the default corpus's
    validation split; None for other data (e.g. synthetic)."""
    data = finetune_data(cfg)["data"]
    if cfg.task != "packages" and data.get("eval_source") == module_task_for(cfg.task).path("valid"):
        return module_task_for(cfg.task).counts["valid"]
    if cfg.task == "packages" and data.get("source") == "default":
        import loaders

        return len(loaders.default_corpus().classification("valid"))
    return None


def mean_se(accuracies: list[float], n_eval: int | None) -> tuple[float, float, float, float]:
    """(mean, combined SE, SE over seeds, binomial SE) of one arm's seeds' accuracies (binomial: 0 when n_eval
    is unknown)."""
    a = np.asarray(accuracies, np.float64)
    mean = float(a.mean())
    se_seeds = float(a.std(ddof=1) / math.sqrt(len(a))) if len(a) > 1 else 0.0
    se_binom = math.sqrt(mean * (1 - mean) / n_eval) if n_eval else 0.0
    return mean, math.hypot(se_seeds, se_binom), se_seeds, se_binom


def arm_stats(state: dict, prefix: str, arms: tuple[str, ...], seeds: int, n_eval: int | None) -> dict[str, dict]:
    """Per arm: its seeds' accuracies and `mean_se`."""
    out = {}
    for name in arms:
        accs = [state[f"{prefix}finetune:{name}:seed{s}"]["final_eval"]["accuracy"] for s in range(seeds)]
        mean, se, se_seeds, se_binom = mean_se(accs, n_eval)
        out[name] = {"accuracies": accs, "mean": mean, "se": se, "se_seeds": se_seeds, "se_binomial": se_binom}
    return out


def leads(stats: dict[str, dict]) -> dict[str, dict]:
    """The searched arm's lead over each other arm, in accuracy and in SEs of the difference."""
    s = stats["searched"]
    out = {}
    for name, o in stats.items():
        if name != "searched":
            diff, se = s["mean"] - o["mean"], math.hypot(s["se"], o["se"])
            out[name] = {"lead": diff, "se_diff": se, "z": diff / se if se else math.inf * np.sign(diff),
                         "beyond_2se": bool(diff > 2 * se)}  # fmt: skip
    return out


COLUMNS = ("constraint", "arm", "arch", "measured ms", "speedup", "SuperNet loss", "MLM loss", "accuracy (mean ± SE)",
           "seeds", "lead of searched")  # fmt: skip


def arms_table(state: dict, acfg: ArmsConfig, n_eval: int | None) -> tuple[list[dict[str, str]], dict]:
    """The table rows (one per constraint and arm) and the JSON summary."""
    rows, summary = [], {"n_eval": n_eval, "constraints": {}}
    for c in acfg.constraints:
        prefix = constraint_prefix(c)
        stats = arm_stats(state, prefix, acfg.arms, acfg.seeds, n_eval)
        lead = leads(stats)
        base = {r["model"]: r for r in results_rows(state, prefix, acfg.arms)}
        for name in acfg.arms:
            st, b = stats[name], base[name]
            ld = lead.get(name)
            rows.append({"constraint": c, "arm": name, "arch": b["arch"], "measured ms": b["measured ms"],
                         "speedup": b["speedup"], "SuperNet loss": b["SuperNet loss"],
                         "task fitness": b.get("task fitness", ""), "MLM loss": b["MLM loss"],
                         "accuracy (mean ± SE)": f"{st['mean']:.3f} ± {st['se']:.3f}",
                         "seeds": " ".join(f"{a:.3f}" for a in st["accuracies"]),
                         "lead of searched": "" if ld is None else
                         f"{ld['lead']:+.3f} ({ld['z']:+.1f} SE){' > 2 SE' if ld['beyond_2se'] else ''}"})  # fmt: skip
        summary["constraints"][c] = {"arms": stats, "leads": lead, "rows": base,
                                     "searched_leads_all": all(v["beyond_2se"] for v in lead.values())}  # fmt: skip
    return rows, summary


def plot_arms(summary: dict, path: str) -> str:
    """A bar chart: mean accuracy ± SE per arm, grouped by constraint."""
    from distilbert_jax.train.reporting import pyplot

    plt = pyplot()
    cons = list(summary["constraints"])
    arms = list(summary["constraints"][cons[0]]["arms"])
    fig, ax = plt.subplots(figsize=(1.6 + 1.6 * len(cons) * len(arms) / 2, 4))
    width = 0.8 / len(arms)
    for j, arm in enumerate(arms):
        means = [summary["constraints"][c]["arms"][arm]["mean"] for c in cons]
        ses = [summary["constraints"][c]["arms"][arm]["se"] for c in cons]
        ax.bar(np.arange(len(cons)) + (j - (len(arms) - 1) / 2) * width, means, width, yerr=ses, capsize=3, label=arm)
    ax.set_xticks(np.arange(len(cons)), [f"constraint {c}" for c in cons])
    ax.set_ylabel("accuracy (mean ± SE)")
    lo = min(s["mean"] - 3 * s["se"] for c in cons for s in summary["constraints"][c]["arms"].values())
    ax.set_ylim(max(0.0, lo - 0.05), None)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(f"arms compared (n_eval = {summary['n_eval']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run_compare_arms(acfg: ArmsConfig, log=print) -> tuple[list[dict[str, str]], dict]:
    """Run (or resume) every step; write `OUT_DIR/arms.md`, `arms.json`, `arms.png`. → (rows, summary)."""
    cfg = acfg.pipeline()
    os.makedirs(cfg.out_dir, exist_ok=True)
    state = PipelineState(cfg.out_dir)
    seeds = tuple(range(acfg.seeds))
    with warnings_once(log):
        sn = shared_steps(cfg, state, log)
        for c in acfg.constraints:
            constraint_steps(cfg, state, log, sn, c, constraint_prefix(c), acfg.arms, seeds)
    rows, summary = arms_table(state.data, acfg, eval_examples(cfg))
    out = lambda *p: os.path.join(cfg.out_dir, *p)  # noqa: E731
    with open(out("arms.md"), "w", encoding="utf-8") as f:
        f.write(markdown_table(rows, shown_columns(rows, COLUMNS)) + "\n\n" + verdict(summary) + "\n")
    with open(out("arms.json"), "w", encoding="utf-8") as f:
        json.dump({"config": dataclasses.asdict(acfg), "summary": summary, "rows": rows,
                   "seconds": state.data.get("_seconds", {})}, f, indent=2)  # fmt: skip
    plot_arms(summary, out("arms.png"))
    log("\n" + format_table(rows, shown_columns(rows, COLUMNS)) + "\n\n" + verdict(summary))
    return rows, summary


def verdict(summary: dict) -> str:
    """One line per constraint: whether the searched arch leads every other arm by > 2 SE."""
    n = summary["n_eval"]
    lines = [f"SE = sqrt(SE over seeds² + binomial p(1-p)/n), n = {n} evaluation examples" if n else
             "SE = SE over seeds (evaluation size unknown: no binomial term)"]  # fmt: skip
    for c, s in summary["constraints"].items():
        behind = [f"{k} ({v['lead']:+.3f}, {v['z']:+.1f} SE)" for k, v in s["leads"].items() if not v["beyond_2se"]]
        lines.append(f"constraint {c}: the searched arch " + ("leads every other arm by > 2 SE" if not behind else
                     "does NOT lead every other arm by > 2 SE: not beyond 2 SE of " + ", ".join(behind)))  # fmt: skip
    return "\n".join(lines)
