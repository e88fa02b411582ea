"""Tiny synthetic schedule records in the dataset's schema (no IREE): real programs of the program tables,
a made-up IREE default config per op, random legal refinements and a smooth made-up time law plus noise."""

from __future__ import annotations

import dataclasses
import json
import math
import os

import numpy as np

from rl.mlir import refine as R
from rl.mlir.emit import program_specs
from rl.mlir.suite import validation_programs
from rl.programs import test_programs, train_programs

PROGRAMS = {"train": ["bert_qkv_b1s128", "bert_ffn1_b1s128", "bert_scores_b1s128", "bert_context_b1s128",
                      "bert_ffn2_b8s128"],
            "val": ["v_mm_256x64x64"], "test": ["bert_qkv_b2s128", "bert_ffn1_b2s128"]}
TABLES = {"train": train_programs, "val": validation_programs, "test": test_programs}


def fake_default(spec) -> R.DefaultConfig:
    bounds, red = R.collapsed_loops(spec)
    par = [j for j, r in enumerate(red) if not r]
    dist = [0 if r else min(b, 32) for b, r in zip(bounds, red)]
    vec = [0] * len(bounds)
    for j in par[-2:]:
        vec[j] = min(8, bounds[j])
    vred = [min(4, b) if r else 0 for b, r in zip(bounds, red)]
    levels = {"distribution": dist, "vector_common_parallel": vec, "vector_reduction": vred}
    return R.DefaultConfig("DoubleTilingExpert", levels, bounds, red, spec.kind in R.DT_KINDS,
                           tuple(R.operand_types(spec)))


def fake_time(d: R.DefaultConfig, r: R.Refinement, rng: np.random.Generator, noise: float) -> float:
    if r.mode == "data-tiling":
        x = -0.3
    else:
        dist = list(r.distribution or d.level("distribution")) if r.mode == "config" else d.level("distribution")
        vec = list(r.vector_common_parallel or d.level("vector_common_parallel")) if r.mode == "config" \
            else d.level("vector_common_parallel")
        x = sum(0.4 * abs(math.log2(max(t, 1) / 64)) for t, rd in zip(dist, d.reduction) if not rd and t)
        x += sum(0.3 * abs(math.log2(max(v, 1) / 16)) for v, rd in zip(vec, d.reduction) if not rd and v)
    return float(np.prod(d.bounds) * 1e-10 * math.exp(x + noise * rng.standard_normal()))


def make_records(per_op: int = 24, seed: int = 0, noise: float = 0.02, programs: dict | None = None) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for split, names in (programs or PROGRAMS).items():
        table = TABLES[split]()
        for name in names:
            specs = program_specs(table, table.names.index(name))
            for k, spec in enumerate(specs):
                d = fake_default(spec)
                rs = [R.Refinement("keep")] + [R.random_refinement(d, rng) for _ in range(per_op - 1)]
                for i, r in enumerate(rs):
                    t = fake_time(d, r, rng, noise)
                    sched = {"mode": r.mode, **{f: getattr(r, f) for f in ("distribution", "vector_common_parallel",
                                                                           "vector_reduction", "cache_reduction")}}
                    out.append({"id": f"{name}|{k}|{i}", "program": name, "split": split, "op_index": k,
                                "op_name": spec.kind, "op_type": spec.kind,
                                "op": {"bounds": list(spec.bounds), "reduction": list(spec.reduction)},
                                "space": "refine", "schedule": sched, "config": None,
                                "default_config": dataclasses.asdict(d), "is_default": i == 0,
                                "cpu": {"model": "synthetic", "flags": [], "cores": 2}, "timing": "cpu",
                                "repeats": 1, "time_s": t, "status": "ok", "message": "",
                                "measured_at": "2026-12-07T18:30:00Z", "seconds": 0.0})
    return out


def write_records(path: str, records: list[dict], partial_tail: bool = False) -> str:
    os.makedirs(path, exist_ok=True)
    f = os.path.join(path, "records.jsonl")
    with open(f, "w") as fh:
        for r in records:
            fh.write(json.dumps(r) + "\n")
        if partial_tail:
            fh.write(json.dumps(records[0])[:40])
    return f
