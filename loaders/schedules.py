"""Measured schedule records (`python -m rl.mlir.dataset`'s `records.jsonl`) → splits, per-op groups, batches.

    recs = read_records("runs/sched")                    # a directory holding records.jsonl, or the file
    recs = usable(recs, space="refine")                        # status ok, finite positive time, one space
    parts = by_split(recs)                                     # {"train": [...], "val": [...], "test": [...]}
    data = ScheduleSet.build(parts["train"], encode)           # encode(records) -> [N, S] int token ids
    for batch in data.batches(groups=8, per_group=8, seed=0):  # G ops × M schedules of each op
        ...                                                    # batch["ids"] [B,S], ["log_t"] [B], ["group"] [B]

Records follow the schema in docs/rl.md ("Learned cost model"): one JSON object per line; a final partial
line (a crash mid-write) is skipped, any other undecodable line is an error naming the file and line. The
split is the record's own `split` field (the program table it came from), so a held-out program's records
never reach training. A batch holds whole groups — schedules of the same (program, op) — so a ranking loss
can compare every pair of the same op inside it (`same_group_pairs`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from .datasets import DataError

RECORDS_FILE = "records.jsonl"
SPLITS = ("train", "val", "test")
REQUIRED = ("program", "split", "op_index", "op_type", "space", "schedule", "default_config", "status", "time_s")


def records_path(path: str) -> str:
    """`path` itself if it is a file, else `<path>/records.jsonl`; DataError if neither exists."""
    if os.path.isdir(path):
        path = os.path.join(path, RECORDS_FILE)
    if not os.path.isfile(path):
        raise DataError(f"schedule records {path} do not exist (write them with `python -m rl.mlir.dataset`)")
    return path


def read_records(path: str) -> list[dict]:
    """Every record of a records file (or a directory holding `records.jsonl`), in file order.

    A final line without its newline that does not decode is a write cut short and is skipped; any other
    bad line, a record that is not an object or lacks a required field raises DataError naming file and line."""
    path = records_path(path)
    with open(path, "rb") as f:
        raw = f.read()
    lines = raw.split(b"\n")
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            if n == len(lines):          # the last line has no newline after it: a partial write
                break
            raise DataError(f"{path}:{n}: not a JSON record ({e})") from None
        if not isinstance(rec, dict):
            raise DataError(f"{path}:{n}: expected a JSON object, got {type(rec).__name__}")
        missing = [k for k in REQUIRED if k not in rec]
        if missing:
            raise DataError(f"{path}:{n}: record lacks field(s) {missing}")
        if rec["split"] not in SPLITS:
            raise DataError(f"{path}:{n}: split {rec['split']!r} is not one of {SPLITS}")
        out.append(rec)
    if not out:
        raise DataError(f"{path}: no records")
    return out


def usable(records: Sequence[dict], space: str | None = "refine") -> list[dict]:
    """Records with status "ok" and a finite positive time (and, unless `space` is None, of that space)."""
    def ok(r: dict) -> bool:
        t = r.get("time_s")
        return (r["status"] == "ok" and isinstance(t, (int, float)) and math.isfinite(t) and t > 0
                and (space is None or r["space"] == space))

    return [r for r in records if ok(r)]


def by_split(records: Sequence[dict]) -> dict[str, list[dict]]:
    """{split: records}; raises DataError if one program appears in two splits (the split would leak)."""
    out: dict[str, list[dict]] = {s: [] for s in SPLITS}
    seen: dict[str, str] = {}
    for r in records:
        if seen.setdefault(r["program"], r["split"]) != r["split"]:
            raise DataError(f"program {r['program']!r} has records in splits {seen[r['program']]!r} and "
                            f"{r['split']!r}: its split would leak")
        out[r["split"]].append(r)
    return out


def group_key(r: dict) -> tuple[str, int, str]:
    """(program, op index, space): schedules with the same key are schedules of the same op."""
    return (r["program"], int(r["op_index"]), r["space"])


def group_ids(records: Sequence[dict]) -> tuple[np.ndarray, list[tuple]]:
    """Per record its group index [N] and the group keys in first-seen order."""
    keys: dict[tuple, int] = {}
    ids = np.array([keys.setdefault(group_key(r), len(keys)) for r in records], np.int32)
    return ids, list(keys)


def subsample(records: Sequence[dict], fraction: float, seed: int = 0) -> list[dict]:
    """A learning-curve subset: `fraction` of each op's records (at least 2 per op), drawn at random."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    rng = np.random.default_rng(seed)
    gid, keys = group_ids(records)
    keep = []
    for g in range(len(keys)):
        idx = np.flatnonzero(gid == g)
        n = max(min(2, len(idx)), int(round(fraction * len(idx))))
        keep += list(rng.choice(idx, n, replace=False))
    return [records[i] for i in sorted(keep)]


def same_group_pairs(group: np.ndarray, log_t: np.ndarray, min_gap: float = 0.0) -> np.ndarray:
    """[B, B] bool: pair (i, j) of the same group with log_t[i] < log_t[j] − min_gap (i is faster)."""
    same = group[:, None] == group[None, :]
    return same & (log_t[:, None] < log_t[None, :] - min_gap)


@dataclasses.dataclass
class ScheduleSet:
    """Encoded records: ids [N, S] int32, log_t [N] float32 (natural log of seconds), group [N] int32."""

    ids: np.ndarray
    log_t: np.ndarray
    group: np.ndarray
    keys: list

    @classmethod
    def build(cls, records: Sequence[dict], encode: Callable[[Sequence[dict]], np.ndarray]) -> "ScheduleSet":
        """Encode the records at once (`encode(records)` → [N, S] ids) — records must be `usable`."""
        if not records:
            raise DataError("no usable schedule records to build a set from")
        ids = np.asarray(encode(records), np.int32)
        gid, keys = group_ids(records)
        return cls(ids, np.log(np.array([r["time_s"] for r in records], np.float64)).astype(np.float32), gid, keys)

    def __len__(self) -> int:
        return len(self.log_t)

    def batches(self, groups: int, per_group: int, seed: int = 0) -> Iterator[dict[str, np.ndarray]]:
        """Endless batches of `groups` ops × `per_group` schedules each ([groups·per_group] rows), ops drawn
        in proportion to their record counts, schedules without replacement where the op has enough."""
        rng = np.random.default_rng(seed)
        members = [np.flatnonzero(self.group == g) for g in range(len(self.keys))]
        members = [m for m in members if len(m) >= 2]
        if not members:
            raise DataError("no op has two usable schedules: nothing to rank")
        weight = np.array([len(m) for m in members], float)
        weight /= weight.sum()
        while True:
            rows = []
            for g in rng.choice(len(members), groups, p=weight):
                m = members[g]
                rows.append(rng.choice(m, per_group, replace=len(m) < per_group))
            idx = np.concatenate(rows)
            yield {"ids": self.ids[idx], "log_t": self.log_t[idx], "group": self.group[idx]}


__all__ = ["RECORDS_FILE", "SPLITS", "ScheduleSet", "by_split", "group_ids", "group_key", "read_records",
           "records_path", "same_group_pairs", "subsample", "usable"]
