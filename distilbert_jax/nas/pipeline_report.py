"""The pipeline's closing report, from its recorded state: the results table (the columns the README and
docs/nas.md show), each arm's measured latency against the constraint's window, and the latency
predictor's held-out error (MLP, FLOPs baseline, noise floor)."""

from __future__ import annotations

from typing import Any

from distilbert_jax.tables import format_table, markdown_table

from .candidates import Constraint
from .space import Arch

MODELS = ("searched", "random", "distilbert_ratios")  # the rows of the results table
ARMS = (*MODELS, "tinybert_like")  # the arms `compare-arms` can compare
COLUMNS = ("model", "arch", "params (MB)", "predicted ms", "measured ms", "speedup", "SuperNet loss", "MLM loss",
           "accuracy")  # fmt: skip


def measured_window(candidates: dict[str, Any], reference_ms: float) -> tuple[float, float, str]:
    """The constraint's latency window in the measurement's terms `(lo_ms, hi_ms, text)`: a speedup
    constraint scales with the reference measured beside the arms (the predictor's reference may have run
    under another load), a constraint in ms does not."""
    c = Constraint.parse(candidates["constraint"])
    lo, hi = (w / candidates["target_ms"] for w in candidates["window_ms"])  # 0.85, 1.1
    target = c.target_ms(reference_ms)
    if c.speedup is not None:
        return lo * target, hi * target, f"{c.speedup / hi:.1f}–{c.speedup / lo:.1f}x"
    return lo * target, hi * target, f"{lo * target:.3g}–{hi * target:.3g} ms"


def results_rows(state: dict[str, Any], prefix: str = "", models: tuple[str, ...] = MODELS) -> list[dict[str, str]]:
    """One row per model of `models` from the recorded pipeline state (steps `PREFIX`name); an arm whose
    measured latency lies outside the constraint's window says so in its speedup cell. The accuracy is that
    of step `finetune:NAME` (blank when the model was fine-tuned once per seed)."""
    measured = state[prefix + "measure"]
    ref = measured["reference_ms"]
    lo, hi, window = measured_window(state[prefix + "candidates"], ref)
    rows = []
    for name in models:
        arch = Arch(**state[prefix + "archs"][name]["arch"])
        ms = measured["ms"][str(arch)]
        side = "slower than" if ms > hi else "faster than" if ms < lo else ""
        rows.append({
            "model": name, "arch": str(arch), "params (MB)": f"{state[prefix + 'extract:' + name]['params_mb']:.2f}",
            "predicted ms": f"{state[prefix + 'archs'][name]['predicted_ms']:.3f}", "measured ms": f"{ms:.3f}",
            "speedup": f"{ref / ms:.1f}x" + (f" ({side} the window {window})" if side else ""),
            "SuperNet loss": f"{state[prefix + 'archs'][name]['supernet_loss']:.3f}",
            "MLM loss": f"{state[f'{prefix}further_mlm:{name}']['final_eval']['loss']:.3f}",
            "accuracy": f"{state[f'{prefix}finetune:{name}']['final_eval']['accuracy']:.3f}"
                        if f"{prefix}finetune:{name}" in state else "",
        })  # fmt: skip
        if "task_fitness" in state[prefix + "archs"][name]:  # a search by task fitness (search_fitness "task")
            rows[-1]["task fitness"] = f"{state[prefix + 'archs'][name]['task_fitness']:.3f}"
    return rows


def shown_columns(rows: list[dict[str, str]], columns: tuple[str, ...] = COLUMNS) -> list[str]:
    """`columns`, with "task fitness" after "SuperNet loss" when a row has one (a search by task fitness)."""
    cols = list(columns)
    if any(r.get("task fitness") for r in rows):
        cols.insert(cols.index("SuperNet loss") + 1, "task fitness")
    return cols


def results_markdown(rows: list[dict[str, str]]) -> str:
    return markdown_table(rows, shown_columns(rows))


def summary(state: dict[str, Any], rows: list[dict[str, str]]) -> str:
    """The console summary: the results table, the window, then the latency predictor's held-out error."""
    from .latency import latency_summary

    cands, ref = state["candidates"], state["measure"]["reference_ms"]
    lo, hi, window = measured_window(cands, ref)
    note = (f"constraint {Constraint.parse(cands['constraint'])}: window {window} (measured: {lo:.3f}–{hi:.3f} ms "
            f"beside the reference's {ref:.1f} ms); {cands['count']} candidates of {cands['space_size']} archs")  # fmt: skip
    return "\n".join([format_table(rows, shown_columns(rows)), note, "", "latency predictor (held-out archs):",
                      latency_summary(state["latency"])])  # fmt: skip
