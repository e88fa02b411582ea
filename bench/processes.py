"""Time each framework in its own process: torch's and XLA's thread pools in one process spin against
each other on a small machine and inflate both. Each case lives in a persistent worker process
(`python -m bench.processes`, JSON lines on stdin/stdout); the parent asks the workers in turn for a
round of timed calls, so machine drift hits every case alike, and no two cases ever run at once.

A case is a *builder*: `"module:function"` plus JSON keyword arguments, called once in the worker,
returning a zero-argument callable that blocks until its result is ready.
"""

from __future__ import annotations

import importlib
import json
import os
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable


def vm_kib(field: str) -> int:
    """A `/proc/self/status` field in KiB (`VmRSS`, `VmHWM`: the resident high-water mark)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def reset_peak_rss() -> None:
    """Reset `VmHWM` to the current RSS (Linux), so later growth is measured from here."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def call_builder(spec: str, kwargs: dict):
    """Import `module` and return `function(**kwargs)` for a `"module:function"` spec."""
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)(**kwargs)


def _serve() -> None:
    """The worker loop: `setup` a builder, `time` n calls of it, or `run` a function returning a dict."""
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # libraries' prints must not corrupt the protocol
    fn: Callable[[], object] | None = None
    for line in sys.stdin:
        msg = json.loads(line)
        try:
            if msg["op"] == "setup":
                fn = call_builder(msg["builder"], msg["kwargs"])
                for _ in range(msg.get("warmup", 2)):  # compile, allocator
                    fn()
                reply: dict = {"ok": True}
            elif msg["op"] == "time":
                times, cpu = [], []
                for _ in range(msg["n"]):
                    t0, c0 = time.perf_counter(), time.process_time()
                    fn()
                    times.append((time.perf_counter() - t0) * 1e3)
                    cpu.append((time.process_time() - c0) * 1e3)
                reply = {"ms": times, "cpu_ms": cpu}  # cpu_ms: this process's CPU time, all threads
            elif msg["op"] == "run":
                reply = {"result": call_builder(msg["builder"], msg["kwargs"])}
            else:
                reply = {"error": f"unknown op {msg['op']!r}"}
        except Exception:  # reported to the parent, which raises with the worker's traceback
            reply = {"error": traceback.format_exc()}
        protocol.write(json.dumps(reply) + "\n")
        protocol.flush()


class Worker:
    """One worker process with `threads` intra-op threads for torch and XLA alike."""

    def __init__(self, threads: int):
        env = dict(os.environ, BENCH_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.processes"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)  # fmt: skip

    def ask(self, **msg) -> dict:
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"benchmark worker exited (code {self.proc.wait()}) on {msg}")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"benchmark worker failed on {msg}:\n{reply['error']}")
        return reply

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def threads() -> int:
    """The intra-op thread count a worker was started with (all cores by default)."""
    return int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1))


def run_in_fresh_process(builder: str, threads: int, **kwargs) -> dict:
    """`builder(**kwargs)` (returning a JSON-able dict) in a new worker process, e.g. to measure load
    time and peak RSS from a clean start."""
    worker = Worker(threads)
    try:
        return worker.ask(op="run", builder=builder, kwargs=kwargs)["result"]
    finally:
        worker.close()


def alternating(cases: dict[str, tuple[str, dict]], rounds: int, per_round: int, threads: int,
                warmup: int = 2, cpu_ms: dict[str, list[float]] | None = None) -> dict[str, list[float]]:  # fmt: skip
    """{case: all timed ms}: each case built in its own worker process and called `warmup` times, then
    `rounds` rounds in which every case in turn runs `per_round` timed calls. A `cpu_ms` dict is filled with
    each case's process CPU ms per call (steadier than wall time when other jobs load the machine)."""
    workers = {name: Worker(threads) for name in cases}
    try:
        for name, (builder, kwargs) in cases.items():
            workers[name].ask(op="setup", builder=builder, kwargs=kwargs, warmup=warmup)
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(rounds):
            for name, worker in workers.items():
                reply = worker.ask(op="time", n=per_round)
                times[name] += reply["ms"]
                if cpu_ms is not None:
                    cpu_ms.setdefault(name, []).extend(reply["cpu_ms"])
        return times
    finally:
        for worker in workers.values():
            worker.close()


def medians(times: dict[str, list[float]]) -> dict[str, float]:
    return {name: statistics.median(ms) for name, ms in times.items()}


if __name__ == "__main__":
    _serve()
