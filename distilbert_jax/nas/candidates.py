"""Candidates under a latency constraint (AutoTinyBERT's `Candidate` step): every arch of the search
space whose predicted latency falls in a window around the target, and the JSONL file that carries them
from `candidates` to `search`.

The file's first line is `{"meta": {...}}` (constraint, target and window in ms, the reference latency,
the device the latencies were measured on, the search space); every further line is one candidate
`{"arch": {"layers", "hidden", "heads", "qkv", "ffn"}, "predicted_ms": float, "speedup": float}`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from .space import Arch, ArchError, SearchSpace, arch_from_dict

WINDOW = (0.85, 1.1)  # AutoTinyBERT: candidates lie in [0.85, 1.1] x the target latency
Predictor = Callable[[Sequence[Arch]], np.ndarray]  # archs -> predicted latency in ms, [n]


class ConstraintError(ValueError):
    """A latency constraint that is malformed or that no arch of the space meets (the message gives the
    reachable range)."""


class CandidatesFileError(ValueError):
    """A candidates file that is missing, empty or malformed; the message names the file and line."""


@dataclasses.dataclass(frozen=True)
class Constraint:
    """A latency constraint: a speedup over the reference model (`7` = 7x faster than BERT-base, the
    original's meaning) or an absolute latency in milliseconds."""

    speedup: float | None = None
    ms: float | None = None

    def __post_init__(self):
        if (self.speedup is None) == (self.ms is None):
            raise ConstraintError("a constraint is either a speedup (e.g. 7 or 7x) or a latency (e.g. 12ms)")
        value = self.speedup if self.ms is None else self.ms
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ConstraintError(f"constraint must be a positive number, got {value!r}")

    @classmethod
    def parse(cls, text: str | float | int | Constraint) -> Constraint:
        """`7`, `7x` (speedup over the reference) or `12ms` / `12 ms` (milliseconds)."""
        if isinstance(text, Constraint):
            return text
        if isinstance(text, (int, float)):
            return cls(speedup=float(text))
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[-+]?[0-9]+)?)\s*(x|ms)?\s*", str(text), re.IGNORECASE)
        if not m:
            raise ConstraintError(f"constraint {text!r}: expected a speedup like 7 or 7x, or a latency like 12ms")
        value = float(m.group(1))
        return cls(ms=value) if (m.group(2) or "").lower() == "ms" else cls(speedup=value)

    def target_ms(self, reference_ms: float) -> float:
        """The target latency in ms (reference latency / speedup, or the given ms)."""
        return self.ms if self.ms is not None else reference_ms / self.speedup

    def __str__(self) -> str:
        return f"{self.ms:g}ms" if self.ms is not None else f"{self.speedup:g}x"


@dataclasses.dataclass(frozen=True)
class CandidateSet:
    """The candidates of one constraint: `archs[i]` with predicted latency `predicted_ms[i]`; `meta` holds
    constraint, target_ms, window_ms, reference_ms, device and space."""

    archs: tuple[Arch, ...]
    predicted_ms: np.ndarray  # [n] float64
    meta: dict[str, Any]

    def __len__(self) -> int:
        return len(self.archs)

    @property
    def space(self) -> SearchSpace:
        return SearchSpace.from_dict(self.meta["space"])

    @property
    def window_ms(self) -> tuple[float, float]:
        lo, hi = self.meta["window_ms"]
        return float(lo), float(hi)

    def index(self) -> dict[Arch, int]:
        """arch -> its position (membership test for mutations: in the set = latency in the window)."""
        return {a: i for i, a in enumerate(self.archs)}

    def speedup(self, ms: float | np.ndarray) -> float | np.ndarray:
        """Speedup over the reference model of a latency in ms."""
        return self.meta["reference_ms"] / np.asarray(ms)


def predict_in_chunks(predict: Predictor, archs: Sequence[Arch], chunk: int = 65536) -> np.ndarray:
    """`predict` over many archs, `chunk` at a time (the original space holds ~370k MLM archs)."""
    out = [np.asarray(predict(archs[i:i + chunk]), np.float64) for i in range(0, len(archs), chunk)]
    return np.concatenate(out) if out else np.zeros(0)


def select_candidates(space: SearchSpace, predict: Predictor, constraint: Constraint | str | float,
                      reference_ms: float, window: tuple[float, float] = WINDOW,
                      meta: dict[str, Any] | None = None, limit: int = 200_000) -> CandidateSet:  # fmt: skip
    """Every arch of `space` (`SearchSpace.scored_archs(limit)`: a heterogeneous space of more than `limit`
    archs is sampled) whose predicted latency lies in `window` x the constraint's target latency. Raises
    `ConstraintError` with the reachable range when none does."""
    constraint = Constraint.parse(constraint)
    lo_f, hi_f = window
    if not 0 < lo_f <= 1 <= hi_f:
        raise ConstraintError(f"window {window}: expected 0 < low <= 1 <= high (the original's is {WINDOW})")
    target = constraint.target_ms(reference_ms)
    archs = space.scored_archs(limit)
    predicted = predict_in_chunks(predict, archs)
    keep = np.flatnonzero((predicted >= lo_f * target) & (predicted <= hi_f * target))
    if keep.size == 0:
        fast, slow = float(predicted.min()), float(predicted.max())
        raise ConstraintError(
            f"no arch of the search space ({len(archs)} archs, mode {space.mode}) has a predicted latency in "
            f"[{lo_f:g}, {hi_f:g}] x {target:.4g} ms (constraint {constraint}); reachable: {fast:.4g}–{slow:.4g} ms, "
            f"i.e. speedup {reference_ms / slow:.3g}x–{reference_ms / fast:.3g}x over the reference "
            f"({reference_ms:.4g} ms)")  # fmt: skip
    info = {"constraint": str(constraint), "target_ms": target, "window": list(window),
            "window_ms": [lo_f * target, hi_f * target], "reference_ms": reference_ms, "mode": space.mode,
            "space": space.to_dict(), "space_size": space.size(), "scored": len(archs)}  # fmt: skip
    return CandidateSet(tuple(archs[i] for i in keep), predicted[keep], {**(meta or {}), **info})


def write_candidates(path: str | os.PathLike, candidates: CandidateSet) -> None:
    """Write `candidates` as JSONL: a `{"meta": …}` line, then one line per arch."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    ref = candidates.meta.get("reference_ms")
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps({"meta": candidates.meta}) + "\n")
        for arch, ms in zip(candidates.archs, candidates.predicted_ms):
            row = {"arch": arch.to_json(), "predicted_ms": round(float(ms), 6)}
            if ref:
                row["speedup"] = round(ref / float(ms), 4)
            f.write(json.dumps(row) + "\n")


def _rows(path: str) -> Iterable[tuple[int, Any]]:
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield n, json.loads(line)
                except json.JSONDecodeError as e:
                    raise CandidatesFileError(f"{path}, line {n}: not JSON ({e.msg})") from None


def read_candidates(path: str | os.PathLike) -> CandidateSet:
    """The `CandidateSet` of a file written by `write_candidates`; `CandidatesFileError` naming the file
    and line when it is missing, empty, has no meta line or a malformed candidate."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CandidatesFileError(f"candidates file {path} does not exist (write one with "
                                  "`python -m distilbert_jax.nas candidates`)")  # fmt: skip
    rows = iter(_rows(path))
    first = next(rows, None)
    if first is None:
        raise CandidatesFileError(f"candidates file {path} is empty: no constraint and no candidates")
    n, head = first
    if not (isinstance(head, dict) and isinstance(head.get("meta"), dict)):
        raise CandidatesFileError(f"{path}, line {n}: expected the {{\"meta\": {{...}}}} line first")
    meta = head["meta"]
    missing = [k for k in ("space", "window_ms", "reference_ms", "target_ms") if k not in meta]
    if missing:
        raise CandidatesFileError(f"{path}: the meta line lacks {missing}")
    archs, predicted = [], []
    for n, row in rows:
        try:
            arch, ms = arch_from_dict(row["arch"]), float(row["predicted_ms"])
        except (KeyError, TypeError, ValueError, ArchError) as e:
            raise CandidatesFileError(f"{path}, line {n}: expected {{\"arch\": {{...}}, \"predicted_ms\": ms}}, "
                                      f"got {json.dumps(row)[:200]} ({e})") from None  # fmt: skip
        archs.append(arch)
        predicted.append(ms)
    if not archs:
        raise CandidatesFileError(f"candidates file {path} holds no candidates (constraint {meta.get('constraint')}): "
                                  "choose a constraint some arch meets")  # fmt: skip
    return CandidateSet(tuple(archs), np.asarray(predicted, np.float64), meta)
