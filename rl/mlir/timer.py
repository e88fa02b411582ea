"""Run and time a compiled IREE module, in-process or in a worker process killed at a deadline.

`run_and_time` is the timing protocol (median of `repeats` after warm-up; one run for slow modules).
`run_with_deadline` runs the same protocol in a persistent worker process (this file run as a script: it
imports only numpy and `iree.runtime`, ~0.3 s to start) and returns None — *censored* — when the first run
takes longer than `deadline_s`: the worker is killed (a scalar schedule of a big op can run 40 s), so a
schedule that cannot win a best-of-k search costs at most the deadline. Messages are length-prefixed pickles
over the worker's stdin / stdout.
"""

from __future__ import annotations

import os
import pickle
import select
import statistics
import struct
import subprocess
import sys
import threading
import time
from typing import Callable

SLOW_S = 0.5    # a module whose first run takes longer is timed by that run alone (keeps evaluation affordable)
GRACE_S = 0.5   # wall-clock slack beyond the deadline before the worker is killed (pipe + scheduling latency)
# the deadline is checked against a module's *first* run, which carries its first-call overhead (~ms): callers
# never stop a schedule sooner than this, or tiny programs (µs) would be stopped for that overhead alone
MIN_DEADLINE_S = 0.05


TIMINGS = {
    # name: (IREE driver, clock, estimator over the timed runs) — "wall": multi-threaded run, wall-clock
    # time, median (what a user sees on a quiet machine); "cpu": one thread (local-sync), that thread's CPU
    # time, minimum (other processes can only inflate a run's CPU time, through caches and clocks): ~±15 %
    # on a loaded 2-core machine where "wall" varies 3-5x, at the price of timing single-threaded code
    "wall": ("local-task", time.perf_counter, statistics.median),
    "cpu": ("local-sync", time.thread_time, min),
}


def run_and_time(vmfb: bytes, inputs: list, warmup: int, repeats: int,
                 report: Callable[..., None] | None = None, timing: str = "wall") -> tuple:
    """Load the module on IREE's CPU driver of `timing` (`TIMINGS`), run `main`, time `repeats` calls
    after `warmup` (the first call counts as one warm-up; when it takes > SLOW_S its time is the only one).
    `report("ready")` is called once the module is loaded, `report("first", seconds)` after the first run."""
    import iree.runtime as rt

    driver, clock, _ = TIMINGS[timing]
    ctx = rt.SystemContext(config=rt.Config(driver))
    ctx.add_vm_module(rt.VmModule.copy_buffer(ctx.instance, vmfb))
    fn = ctx.modules.module["main"]
    dev = [rt.asdevicearray(ctx.config.device, x) for x in inputs]
    if report:
        report("ready")
    t0 = clock()
    out = fn(*dev).to_host()
    first = clock() - t0
    if report:
        report("first", first)
    if first > SLOW_S:
        return out, [first]
    for _ in range(warmup - 1):
        fn(*dev).to_host()
    times = []
    for _ in range(repeats):
        t0 = clock()
        fn(*dev).to_host()
        times.append(clock() - t0)
    return out, times


def _send(f, obj) -> None:
    blob = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    f.write(struct.pack("<Q", len(blob)) + blob)
    f.flush()


def _read_exact(fd: int, n: int) -> bytes:
    chunks = []
    while n:
        b = os.read(fd, min(n, 1 << 20))
        if not b:
            raise EOFError("timing worker exited")
        chunks.append(b)
        n -= len(b)
    return b"".join(chunks)


def _recv(fd: int):
    (n,) = struct.unpack("<Q", _read_exact(fd, 8))
    return pickle.loads(_read_exact(fd, n))


def serve() -> None:
    """Worker loop: read (vmfb, inputs, warmup, repeats), reply ("ready",), ("first", s), ("done", out, times)."""
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr                       # nothing else may write into the message stream
    while True:
        try:
            (n,) = struct.unpack("<Q", inp.read(8))
        except struct.error:
            return
        vmfb, inputs, warmup, repeats, timing = pickle.loads(inp.read(n))
        try:
            res, times = run_and_time(vmfb, inputs, warmup, repeats, report=lambda *m: _send(out, m),
                                      timing=timing)
            _send(out, ("done", res, times))
        except Exception as e:  # noqa: BLE001  (reported to the parent, which raises it)
            _send(out, ("error", f"{type(e).__name__}: {e}"))


_local = threading.local()      # one worker per thread: threads measuring in parallel never share a pipe


def _current() -> subprocess.Popen | None:
    return getattr(_local, "worker", None)


def _get_worker() -> subprocess.Popen:
    w = _current()
    if w is None or w.poll() is not None:
        w = _local.worker = subprocess.Popen([sys.executable, os.path.abspath(__file__)], stdin=subprocess.PIPE,
                                             stdout=subprocess.PIPE, bufsize=0)
    return w


def kill_worker() -> None:
    """Stop this thread's worker (it is restarted on the next call)."""
    w = _current()
    if w is not None:
        w.kill()
        w.wait()
        _local.worker = None


def _expect(w: subprocess.Popen, tag: str, timeout: float | None):
    """Next message of the worker (None when none came within `timeout` seconds)."""
    fd = w.stdout.fileno()
    if timeout is not None and not select.select([fd], [], [], max(timeout, 0.0))[0]:
        return None
    msg = _recv(fd)
    if msg[0] == "error":
        raise RuntimeError(f"timing worker: {msg[1]}")
    if msg[0] != tag:
        raise RuntimeError(f"timing worker: expected {tag!r}, got {msg[0]!r}")
    return msg


def run_with_deadline(vmfb: bytes, inputs: list, warmup: int, repeats: int, deadline_s: float,
                      timing: str = "wall") -> tuple | None:
    """`run_and_time` in the worker; None (censored) when the first run takes longer than `deadline_s`
    (the worker is killed if it has not finished the run `GRACE_S` after the deadline). A worker that dies
    mid-run (killed from outside, crashed) is restarted and the run done again, once."""
    try:
        return _run_in_worker(vmfb, inputs, warmup, repeats, deadline_s, timing)
    except (EOFError, BrokenPipeError) as e:
        code = _current().poll() if _current() is not None else None
        print(f"rl.mlir.timer: the timing worker died mid-run ({e}; exit status {code}); running again in a "
              "fresh worker", file=sys.stderr)  # fmt: skip
        kill_worker()
    try:
        return _run_in_worker(vmfb, inputs, warmup, repeats, deadline_s, timing)
    except (EOFError, BrokenPipeError) as e:
        kill_worker()
        raise RuntimeError(f"the timing worker died twice running the same module ({e})") from None


def _run_in_worker(vmfb: bytes, inputs: list, warmup: int, repeats: int, deadline_s: float,
                   timing: str) -> tuple | None:
    w = _get_worker()
    _send(w.stdin, (vmfb, inputs, warmup, repeats, timing))
    _expect(w, "ready", None)
    first = _expect(w, "first", deadline_s + GRACE_S)
    if first is None:
        kill_worker()
        return None
    _, res, times = _expect(w, "done", None)
    return None if first[1] > deadline_s else (res, times)


if __name__ == "__main__":
    serve()
