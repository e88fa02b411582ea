"""Measured backend (rl/mlir): every op kind compiles with IREE, the requested tiles reach codegen, results
match numpy, rejected / wrong schedules are reported (never raised, never scored), results are cached."""

import logging

import numpy as np
import pytest

pytest.importorskip("iree.compiler")
pytest.importorskip("iree.runtime")

from rl import programs as P  # noqa: E402
from rl.mlir import emit, measure  # noqa: E402
from rl.mlir.schedule import OpSchedule, lowering_config, unscheduled  # noqa: E402


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("RL_MLIR_CACHE", str(tmp_path_factory.getbasetemp() / "rl_mlir_cache"))


def small_table():
    """One small op of every kind the env's programs contain (and their chains)."""
    return P.stack_programs([
        ("mm", [P.matmul(32, 64, 48), P.elementwise(32, 64, "bias_gelu"), P.elementwise(32, 64, "residual_add")]),
        ("bmm", [P.batch_matmul(4, 16, 16, 8, transpose_b=True), P.reduction(64, 16, with_exp=True)]),
        ("conv", [P.conv2d(8, 8, 16, 3, 3, 8, 2), P.elementwise(64, 16, "relu"), P.pooling(4, 4, 16, 3, 2)]),
        ("misc", [P.elementwise(32, 64, "bias_add"), P.reduction(32, 48), P.conv2d(8, 8, 32, 1, 1, 16)]),
        ("ctx", [P.batch_matmul(4, 16, 8, 16)]),
    ])


def all_specs():
    t = small_table()
    return [s for p in range(len(t.names)) for s in emit.program_specs(t, p)]


def test_every_op_kind_is_covered():
    kinds = {s.kind for s in all_specs()}
    assert kinds == {"matmul", "batch_matmul", "conv2d", "pooling", "bias_add", "bias_gelu", "relu",
                     "residual_add", "row_sum", "exp_sum"}
    assert {P.OP_TYPES[i] for i in small_table().op_type[small_table().op_valid]} == set(P.OP_TYPES)


def tiled_schedule(spec, parallel=True, vectorize=True):
    """Tile the outermost env loop to 1 row (or 2), the innermost to ≤ 8: legal on every kind, even merged ones."""
    b = spec.env_bounds
    tiles = tuple(1 if j == 0 else (min(8, n) if j == len(b) - 1 else n) for j, n in enumerate(b))
    if spec.kind in ("conv2d", "pooling") and spec.batch_loop:      # window loops whole, channels ≤ 8
        tiles = (1,) + tuple(b[1:])
    return OpSchedule(tiles, parallel, vectorize)


@pytest.mark.parametrize("spec", all_specs(), ids=lambda s: s.name)
def test_schedule_reaches_codegen_and_matches_numpy(spec):
    sched = tiled_schedule(spec)
    m = measure.measure_op(spec, sched, repeats=2)
    assert m.status == "ok", m.error
    assert m.config == lowering_config(spec, sched)             # read back from the dumped configuration
    assert any(v for k, v in m.config.items() if k != "vector_reduction")
    assert m.max_abs_err <= emit.tolerance(spec, emit.reference(spec, emit.op_inputs(spec)))
    assert m.time_s > 0 and len(m.times) == 2


def test_unscheduled_and_iree_default_run_and_differ():
    spec = emit.op_spec(small_table(), 0, 0)                      # the matmul
    base = measure.measure_op(spec, unscheduled(spec), repeats=2)
    default = measure.measure_op(spec, None, repeats=2)
    assert base.ok and default.ok
    assert base.config["vector_common_parallel"] == [1, 1, 0]      # scalar code, one workgroup
    assert base.config["distribution"] == [0, 0, 0]
    assert default.config != base.config                           # IREE's own choice, read back


def test_rejected_schedule_is_reported_not_raised(caplog):
    spec = emit.op_spec(small_table(), 0, 0)
    bad = OpSchedule((32, 64, 48), False, True)                    # one 32x64x48 vector: IREE refuses
    with caplog.at_level(logging.WARNING, logger="rl.mlir"):
        m = measure.measure_op(spec, bad, repeats=2)
    assert m.status == "rejected" and not m.ok and np.isnan(m.time_s) and "vector" in m.error
    assert spec.name in caplog.text and bad.key() in caplog.text
    relu = emit.op_spec(small_table(), 2, 1)
    m = measure.measure_op(relu, OpSchedule((4, 8), True, False), repeats=2)   # not a chunk of IREE's 1-D op
    assert m.status == "rejected" and "contiguous" in m.error


def test_interchange_of_parallel_loops_reaches_codegen():
    spec = emit.op_spec(small_table(), 0, 0)                      # matmul (i, j, k)
    sched = OpSchedule((4, 16, 48), True, False, perm=(1, 0, 2))   # j outer
    assert measure.emitted_perm(spec, sched) == (1, 0, 2)
    assert "affine_map<(d0, d1, d2) -> (d1, d2)>" in measure.sources(spec, sched)[0]   # A[i, k], i = d1
    m = measure.measure_op(spec, sched, repeats=2)
    assert m.ok and m.config["distribution"] == [16, 4, 0]
    # a reduction loop is never moved out: IREE would move it back (measured), so it is kept innermost
    assert measure.emitted_perm(spec, OpSchedule((32, 64, 48), perm=(2, 0, 1))) == (0, 1, 2)


def test_tiled_fusion_is_one_dispatch_with_the_producer_config():
    t = small_table()
    specs = emit.program_specs(t, 0)                               # matmul -> bias_gelu -> residual_add
    prod = OpSchedule((4, 16, 48), True, False)
    m = measure.measure_op(specs[:2], prod, repeats=2)             # verified: one dispatch, root config
    assert m.ok and m.config == lowering_config(specs[0], prod)
    assert "%res_1 = linalg.generic" in measure.sources(specs[:2], prod)[0]
    scheds = [prod, OpSchedule((32, 64), fused=True), tiled_schedule(specs[2])]
    pm = measure.measure_program(specs, scheds, repeats=2)
    assert pm.ok and len(pm.ops) == 2 and pm.ops[0] == m
    # fusing into a producer without a reduction loop (an elementwise op) is not offered
    bad = measure.measure_op(specs[1:], OpSchedule((32, 64)), repeats=2)
    assert bad.status == "rejected" and "reduction" in bad.error


def test_wrong_result_is_reported_not_scored(monkeypatch):
    spec = emit.op_spec(small_table(), 3, 0)
    monkeypatch.setattr(measure, "reference", lambda s, x: emit.reference(s, x) + 1.0)
    m = measure.measure_op(spec, tiled_schedule(spec), repeats=2, use_cache=False)
    assert m.status == "wrong" and np.isnan(m.time_s) and "err" in m.error


def test_cache_hit_skips_compilation(monkeypatch):
    spec = emit.op_spec(small_table(), 3, 1)
    first = measure.measure_op(spec, tiled_schedule(spec), repeats=2)
    monkeypatch.setattr(measure, "compile_op", lambda *a: pytest.fail("compiled again"))
    again = measure.measure_op(spec, tiled_schedule(spec), repeats=2)
    assert again == first


def test_program_measurement_sums_ops():
    t = small_table()
    specs = emit.program_specs(t, 0)
    pm = measure.measure_program(specs, [tiled_schedule(s) for s in specs], repeats=2)
    assert pm.ok and pm.time_s == pytest.approx(sum(m.time_s for m in pm.ops))
    bad = [tiled_schedule(s) for s in specs]
    bad[2] = OpSchedule((4, 8), True, False)
    assert measure.measure_program(specs, bad, repeats=2).status == "rejected"


def test_deadline_stops_a_slow_run_and_the_cache_respects_it(monkeypatch):
    from rl.mlir import timer

    spec = emit.op_spec(small_table(), 0, 0)       # the matmul, scalar (repeats=1: not cached by other tests)
    sched = unscheduled(spec)
    monkeypatch.setattr(timer, "GRACE_S", 0.0)                   # the worker is killed mid-run
    stopped = measure.measure_op(spec, sched, repeats=1, deadline_s=1e-6)
    assert stopped.status == "slow" and not stopped.ok and stopped.lower_bound_s == 1e-6
    assert stopped.config == lowering_config(spec, sched)        # compiled and verified before it ran
    monkeypatch.setattr(measure, "compile_op", lambda *a: pytest.fail("compiled again"))
    again = measure.measure_op(spec, sched, repeats=1, deadline_s=1e-7)          # cached: stops sooner
    assert (again.status, again.lower_bound_s, again.config) == ("slow", 1e-6, stopped.config)
    monkeypatch.undo()
    full = measure.measure_op(spec, sched, repeats=1, deadline_s=60.0)   # a later deadline measures it (new worker)
    assert full.ok and len(full.times) == 1 and full.time_s < 60.0
    pm = measure.measure_program(emit.program_specs(small_table(), 0), [unscheduled(s) for s in
                                 emit.program_specs(small_table(), 0)], repeats=1, deadline_s=full.time_s / 2)
    assert pm.status == "slow" and pm.lower_bound_s == full.time_s / 2 and np.isnan(pm.time_s)
    assert pm.ops[0].ok                               # the matmul (cached) already passes the deadline:
    assert [m.status for m in pm.ops[1:]] == ["slow"]  # the next op is not run, the rest not reached


def test_random_search_stops_only_schedules_slower_than_the_best_so_far(monkeypatch):
    """Best of n stays exact: a stopped schedule always has a faster one before it."""
    from types import SimpleNamespace
    from rl.mlir import evaluate as ev

    times = [[3.0, 1.0, 5.0, float("nan"), 1.2, 0.5]]
    seen = []

    def fake(specs, scheds, repeats, deadline_s=None):
        t = times[0][len(seen)]
        seen.append(deadline_s)
        if np.isnan(t):
            return SimpleNamespace(ok=False, status="rejected", time_s=t)
        if deadline_s is not None and t > deadline_s:
            return SimpleNamespace(ok=False, status="slow", time_s=float("nan"))
        return SimpleNamespace(ok=True, status="ok", time_s=t)

    monkeypatch.setattr(ev, "measure_program", fake)
    monkeypatch.setattr(ev, "program_specs", lambda table, p: [])
    monkeypatch.setattr(ev, "from_env_state", lambda table, s: None)
    states = SimpleNamespace(prog=np.zeros((1, 6), np.int32))
    monkeypatch.setattr(ev, "state_at", lambda st, p, i: None)
    out = ev.random_search_times(None, states, 3, stop_factor=1.5)
    assert seen == [None, 4.5, 1.5, 1.5, 1.5, 1.5]
    assert out[0, :3].tolist() == [3.0, 1.0, float("inf")] and np.isnan(out[0, 3])
    assert out[0, 4:].tolist() == [1.2, 0.5]
    seen.clear()
    ev.random_search_times(None, states, 3, stop_factor=None)
    assert seen == [None] * 6


def test_env_state_maps_to_schedules():
    import jax.numpy as jnp
    from rl.env import NT, SchedulingEnv, T, TF, TP, V, N_HEADS
    from rl.mlir.schedule import from_env_state

    env = SchedulingEnv(small_table())
    _, s = env.reset_to(0)
    a = np.zeros(N_HEADS, np.int32)
    a[0], a[1:4] = TP, [1, 4, 0]          # matmul: tile i→1, j→8, k untiled, parallel
    _, s, *_ = env.step_env(s, jnp.asarray(a))
    _, s, *_ = env.step_env(s, jnp.asarray(np.eye(N_HEADS, dtype=np.int32)[0] * V))
    assert bool(env.observe(s)["mask"][0, TF])                   # cursor on bias_gelu, whose producer is a matmul
    scheds = from_env_state(env.table, s)
    assert scheds[0] == OpSchedule((1, 8, 48), True, True, None)
    assert scheds[1] == OpSchedule((32, 64)) and T == 1
    # TF on the consumer: legal here (matmul -> bias_gelu), the schedule marks it fused
    obs, s2, *_ = env.step_env(s, jnp.asarray(np.eye(N_HEADS, dtype=np.int32)[0] * TF))
    assert bool(obs["mask"][0, NT]) and from_env_state(env.table, s2)[1].fused


def test_measured_table_marks_failed_programs():
    from rl.mlir.evaluate import format_tables, summary_rows

    res = {"programs": ["a", "b"], "times": {"no schedule": np.array([1.0, 2.0]), "IREE default": np.array([0.1, 0.2]),
                                             "heuristic": np.array([1.0, 1.0])},
           "failed": {"heuristic": np.array([True, False])}}
    assert summary_rows(res)[2] == ("heuristic", pytest.approx(2 ** 0.5), pytest.approx(0.1 * 2 ** 0.5), 1)
    rows = format_tables(res).splitlines()
    assert rows[-2] == "| a | 1000.00 | 10.00× | failed |" and rows[-1] == "| b | 2000.00 | 10.00× | 2.00× |"
