"""bench.processes: cases timed in their own worker processes, in alternating rounds."""

import os

import pytest

from bench.processes import alternating, run_in_fresh_process


def counter(start: int):
    """A builder: a callable that counts its calls in this (worker) process."""
    box = {"n": start}

    def step():
        box["n"] += 1
        return box["n"]

    return step


def worker_facts(label: str) -> dict:
    from bench.processes import threads

    return {"label": label, "pid": os.getpid(), "threads": threads()}


def broken(reason: str):
    raise ValueError(reason)


def test_alternating_rounds_in_separate_processes():
    spec = ("tests.test_bench_processes:counter", {"start": 0})
    times = alternating({"a": spec, "b": spec}, rounds=2, per_round=3, threads=1, warmup=1)
    assert sorted(times) == ["a", "b"] and all(len(ms) == 6 and min(ms) >= 0 for ms in times.values())
    facts = run_in_fresh_process("tests.test_bench_processes:worker_facts", 3, label="x")
    assert facts["label"] == "x" and facts["pid"] != os.getpid() and facts["threads"] == 3


def test_a_failing_builder_reports_the_workers_traceback():
    with pytest.raises(RuntimeError, match="ValueError: no model here"):
        alternating({"bad": ("tests.test_bench_processes:broken", {"reason": "no model here"})}, 1, 1, 1)
