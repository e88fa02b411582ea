"""Issue 21 item 8, measured backend: a damaged or truncated measurement-cache entry is reported and measured
again (never trusted), two processes sharing one cache leave only whole entries, and a timing worker killed
with SIGKILL mid-run is replaced and the measurement completes."""

import json
import logging
import os
import signal
import subprocess
import sys

import pytest

pytest.importorskip("iree.compiler")
pytest.importorskip("iree.runtime")

from rl import programs as P  # noqa: E402
from rl.mlir import emit, measure, timer  # noqa: E402
from rl.mlir.cache import read_entry  # noqa: E402
from rl.mlir.schedule import unscheduled  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RL_MLIR_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _spec():
    return emit.op_spec(P.stack_programs([("mm", [P.matmul(16, 32, 16)])]), 0, 0)


def _entries(cache):
    return sorted(p for p in cache.rglob("*") if p.is_file())


def test_damaged_cache_entries_are_reported_and_measured_again(cache, caplog, monkeypatch):
    spec = _spec()
    first = measure.measure_op(spec, None, repeats=2)
    assert first.ok
    [path] = _entries(cache)
    good = path.read_text()
    compiled = []
    real_compile = measure.compile_op
    monkeypatch.setattr(measure, "compile_op", lambda *a: compiled.append(1) or real_compile(*a))
    damaged = {"truncated": good[: len(good) // 2],  # what a kill mid-write would leave without atomic writes
               "a changed value": good.replace('"status": "ok"', '"status": "wrong"'),  # valid JSON, bad checksum
               "written before checksums": json.dumps(json.loads(good)["data"]),
               "empty": ""}  # fmt: skip
    for what, text in damaged.items():
        path.write_text(text)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="rl.mlir"):
            again = measure.measure_op(spec, None, repeats=2)
        assert again.ok, what
        assert any(str(path) in r.getMessage() for r in caplog.records), (what, caplog.text)
        assert read_entry(str(path), measure._FIELDS, measure.STATUSES) is not None, f"{what}: not rewritten"
    assert len(compiled) == len(damaged)  # each damaged entry was measured again, none trusted


WRITER = """
import sys
from rl.mlir.cache import write_entry
root, me = sys.argv[1], int(sys.argv[2])
for i in range(300):
    key = i % 10
    write_entry(f"{root}/{key:02d}/{key}.json", {"status": "ok", "writer": me, "payload": "x" * (1000 + 997 * me + i)})
"""


def test_two_processes_share_one_cache_without_corrupting_it(tmp_path):
    root = tmp_path / "cache"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(root), str(k)], cwd=ROOT) for k in (1, 2)]
    for p in procs:
        assert p.wait(timeout=120) == 0
    files = _entries(root)
    assert len(files) == 10, files  # one whole entry per key, no temporary file left
    for f in files:
        data = read_entry(str(f), ["status", "writer", "payload"], ["ok"])
        assert data is not None and data["writer"] in (1, 2), f


def test_killed_timing_worker_is_replaced_and_the_measurement_completes(cache, monkeypatch, capfd):
    spec = _spec()
    sched = unscheduled(spec)
    real_get, killed = timer._get_worker, []

    def get_then_kill():  # the first worker is SIGKILLed before it gets the module: the run must be repeated
        w = real_get()    # (killing it after "ready" raced with a µs-long run finishing first on a quiet machine)
        if not killed:
            os.kill(w.pid, signal.SIGKILL)
            w.wait()
            killed.append(w.pid)
        return w

    monkeypatch.setattr(timer, "_get_worker", get_then_kill)
    m = measure.measure_op(spec, sched, repeats=2, deadline_s=60.0)
    assert killed and m.ok and len(m.times) == 2, m
    assert "timing worker died mid-run" in capfd.readouterr().err
    assert timer._current() is not None and timer._current().pid != killed[0]
    timer.kill_worker()
