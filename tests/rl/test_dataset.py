"""`python -m rl.mlir.dataset`: schema records of measured schedules, resumable, splits kept, clear errors."""

import json
import os

import pytest

from distilbert_jax.clitools import run_cli
from rl.mlir import dataset as D
from rl.mlir import refine as R

SCHEMA = {"id", "program", "split", "op_index", "op_name", "op_type", "op", "space", "schedule", "config",
          "default_config", "is_default", "cpu", "timing", "repeats", "time_s", "status", "message", "measured_at",
          "seconds"}
ARGS = ["--n", "2", "--programs", "val", "--program", "v_mm_256x64x64", "--repeats", "1", "--quiet"]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RL_MLIR_CACHE", str(tmp_path / "cache"))


def fake_default() -> R.DefaultConfig:
    """A made-up IREE default config of v_mm_256x64x64 (no IREE)."""
    return R.DefaultConfig("DoubleTilingExpert", {"distribution": [32, 64, 0], "vector_common_parallel": [8, 16, 0],
                                                  "vector_reduction": [0, 0, 16]}, (256, 64, 64), (False, False, True),
                           True)


def _lines(path):
    with open(path, "rb") as f:
        return f.read().splitlines()


def test_tiny_run_writes_schema_records_and_resumes(tmp_path, cache):
    pytest.importorskip("iree.compiler")
    out = str(tmp_path / "ds")
    assert run_cli(D.main, ARGS + ["--out", out]) == 0
    path = os.path.join(out, D.RECORDS)
    recs = [json.loads(x) for x in _lines(path)]
    # refine: keep, data tiling, 2 random configs; scalar: IREE's default, 2 random schedules
    assert len(recs) == 7 and len({r["id"] for r in recs}) == 7
    for r in recs:
        assert SCHEMA <= set(r), SCHEMA - set(r)
        assert r["split"] == "val" and r["program"] == "v_mm_256x64x64" and r["op_type"] == "matmul"
        assert r["op"]["bounds"] == [256, 64, 64] and r["cpu"]["model"] and r["repeats"] == 1
        assert (r["time_s"] is None) == (r["status"] != "ok")
    by = {(r["space"], r["schedule"]["mode"]): r for r in recs}
    keep = by[("refine", "keep")]
    assert keep["is_default"] and keep["status"] == "ok" and keep["time_s"] > 0 and keep["config"]["distribution"]
    assert keep["default_config"]["pipeline"] == "DoubleTilingExpert"
    assert ("refine", "data-tiling") in by and by[("scalar", "keep")]["is_default"]
    assert sum(r["space"] == "refine" and r["schedule"]["mode"] == "config" for r in recs) == 2
    manifest = json.load(open(os.path.join(out, D.MANIFEST)))
    assert manifest["total"] == 7 and manifest["runs"][0]["measured"] == 7 and manifest["versions"]["numpy"]

    before = open(path, "rb").read()                      # rerun: nothing new
    assert run_cli(D.main, ARGS + ["--out", out]) == 0
    assert open(path, "rb").read() == before
    with open(path, "wb") as f:                           # a crash mid-line: the partial line is dropped, re-measured
        f.write(before[:-40])
    assert run_cli(D.main, ARGS + ["--out", out]) == 0
    again = [json.loads(x) for x in _lines(path)]
    assert len(again) == 7 and {r["id"] for r in again} == {r["id"] for r in recs}
    assert json.load(open(os.path.join(out, D.MANIFEST)))["runs"][-1]["measured"] == 1


def test_work_is_round_robin_and_splits_exact():
    ops, tables = D.collect_ops(("train", "val", "test"))
    assert [o.split for o in ops[:1]] == ["train"] and {o.split for o in ops[:7]} == {"train", "val", "test"}
    for o in ops:
        assert o.program in tables[o.split].names
        assert not any(o.program in tables[s].names for s in tables if s != o.split)
    cfg = D.DatasetConfig("unused", n=3, splits=("val",), spaces=("refine",))
    vops, vt = D.collect_ops(("val",))
    d = fake_default()
    jobs = D.plan(cfg, vops, vt, [d] * len(vops))
    assert [j.schedule.mode for j in jobs[:len(vops)]] == ["keep"] * len(vops)       # every op's default first
    assert [j.ref for j in jobs[len(vops):2 * len(vops)]] == vops                    # then data tiling of each
    assert len({j.record_id(1, "cpu") for j in jobs}) == len(jobs)


def test_a_failing_measurement_is_a_record(monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("IREE fell over")

    monkeypatch.setattr(R, "measure_refinement", boom)
    ops, _ = D.collect_ops(("val",), ("v_mm_256x64x64",))
    job = D.Job(ops[0], "refine", R.Refinement("keep"), True)
    rec = D.measure_job(job, None, D.DatasetConfig("unused"))
    assert rec["status"] == "error" and "IREE fell over" in rec["message"] and rec["time_s"] is None


@pytest.mark.parametrize("argv, says", [
    (["--n", "-1"], "--n must be"), (["--n", "1", "--programs", "train,bogus"], "bogus"),
    (["--n", "1", "--spaces", "vector"], "vector"), (["--n", "1", "--workers", "0"], "--workers"),
    (["--n", "1", "--programs", "val", "--program", "no_such_program"], "no_such_program"),
    (["--n", "1", "--deadline", "0"], "--deadline")])
def test_bad_args_are_clear_errors(tmp_path, capsys, argv, says):
    assert run_cli(D.main, argv + ["--out", str(tmp_path / "ds")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and says in err
    assert not os.path.exists(tmp_path / "ds" / D.RECORDS)


def test_out_is_a_file(tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("x")
    assert run_cli(D.main, ["--n", "1", "--out", str(f)]) == 2
    assert "is a file" in capsys.readouterr().err


def test_remeasure_times_the_same_ok_schedules_again(tmp_path, monkeypatch):
    """--remeasure: the ok refine records of a file measured again (fake IREE here): same ids and schedules,
    new times; failed records and other settings are left out or refused with a clear error."""
    from distilbert_jax.clitools import InputError
    from rl.mlir.measure import Measurement

    d = fake_default()
    times = iter(range(1, 1000))
    monkeypatch.setattr(R, "default_config", lambda spec: d)
    monkeypatch.setattr(R, "measure_refinement",
                        lambda *a, **k: Measurement("ok", time_s=float(next(times)), times=[1.0], config={}))
    args = ["--programs", "val", "--program", "v_mm_256x64x64", "--spaces", "refine", "--repeats", "1", "--quiet"]
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert run_cli(D.main, ["--n", "3", "--out", a] + args) == 0
    recs = [json.loads(x) for x in _lines(os.path.join(a, D.RECORDS))]
    recs[1] = dict(recs[1], status="compile_error", time_s=None)          # a failed record is not measured again
    with open(os.path.join(a, D.RECORDS), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in recs)
    assert run_cli(D.main, ["--n", "0", "--out", b, "--remeasure", a] + args) == 0
    again = [json.loads(x) for x in _lines(os.path.join(b, D.RECORDS))]
    ok = {r["id"]: r for r in recs if r["status"] == "ok"}
    assert len(ok) == 4 and {r["id"] for r in again} == set(ok)
    for r in again:
        assert r["schedule"] == ok[r["id"]]["schedule"] and r["time_s"] != ok[r["id"]]["time_s"]
    assert run_cli(D.main, ["--n", "0", "--out", b, "--remeasure", a] + args) == 0       # resumable: nothing new
    assert len(_lines(os.path.join(b, D.RECORDS))) == 4
    bad = [a0 if a0 != "1" else "2" for a0 in args]                                      # other --repeats
    with pytest.raises(InputError, match="measured with other settings"):
        D.main(["--n", "0", "--out", str(tmp_path / "c"), "--remeasure", a] + bad)
    with pytest.raises(InputError, match="only --spaces refine"):
        D.main(["--n", "0", "--out", str(tmp_path / "c"), "--remeasure", a, "--spaces", "refine,scalar",
                "--programs", "val", "--quiet"])
