"""The IREE-config refinement space: exact masks (jitted env == Python rules), configs IREE takes as asked,
tuning specs that match ops by operand types."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rl.mlir import refine as R
from rl.mlir.emit import program_specs
from rl.mlir.refine_env import RefineEnv
from rl.programs import batch_matmul, elementwise, matmul, reduction, stack_programs

DT = "DoubleTilingExpert"


def _ops():
    """Real op specs with IREE's default configs as IREE 3.13 chose them on x86 (written out: no compile)."""
    table = stack_programs([("mm", [matmul(256, 768, 768), elementwise(256, 768, "bias_add")]),
                            ("bmm", [batch_matmul(24, 128, 128, 64, transpose_b=True), reduction(3072, 128, True)]),
                            ("res", [elementwise(256, 768, "residual_add")])])
    mm, bias = program_specs(table, 0)
    bmm, esum = program_specs(table, 1)
    (res,) = program_specs(table, 2)
    return [
        (mm, R.DefaultConfig(DT, {"distribution": [64, 64, 0], "vector_common_parallel": [8, 16, 0],
                                  "vector_reduction": [0, 0, 16]}, (256, 768, 768), (False, False, True), True)),
        (bias, R.DefaultConfig(DT, {"distribution": [64, 64], "vector_common_parallel": [1, 16]}, (256, 768),
                               (False, False), False)),
        (bmm, R.DefaultConfig(DT, {"distribution": [8, 64, 64, 0], "vector_common_parallel": [1, 8, 16, 0],
                                   "vector_reduction": [0, 0, 0, 16]}, (24, 128, 128, 64),
                              (False, False, False, True), True)),
        (esum, R.DefaultConfig(DT, {"distribution": [32, 0], "vector_common_parallel": [8, 0],
                                    "vector_reduction": [0, 16]}, (3072, 128), (False, True), False)),
        (res, R.DefaultConfig(DT, {"distribution": [4096], "vector_common_parallel": [16]}, (196608,),
                              (False,), False)),
        (mm, R.DefaultConfig("ConvTileAndDecomposeExpert", {"distribution": [0, 2, 14, 64, 0, 0, 0]},
                             (1, 14, 14, 256, 3, 3, 256), (False,) * 4 + (True,) * 3, False)),
    ]


def test_jitted_env_masks_equal_the_python_rules():
    ops = _ops()
    env = RefineEnv(ops)
    step, reset = jax.jit(env.step_env), jax.jit(env.reset_to)
    rng = np.random.default_rng(0)
    n_changed = 0
    for i, (spec, d) in enumerate(ops):
        for _ in range(12):
            obs, s = reset(i)
            ps, done, types = R.initial_state(d), False, []
            while not done:
                want = R.head_masks(d, ps)
                np.testing.assert_array_equal(np.asarray(obs["mask"]), want, err_msg=f"op {i} after {types}")
                assert want.any(-1).all()
                a = np.array([rng.choice(np.flatnonzero(row)) for row in want])
                ps, done = R.apply(d, ps, a)
                obs, s, _, term, _ = step(s, jnp.asarray(a, jnp.int32))
                types.append(int(a[0]))
                assert bool(term) == done
            r = R.to_refinement(d, ps)
            n_changed += r.mode == "config"
            # the env's record of the episode rebuilds the same schedule on the host
            order = [t for t in R.STEP_ORDER if bool(s.done_types[t])]
            assert R.to_refinement(d, R.replay(d, order, np.asarray(s.choices))) == r
    assert n_changed > 20


def test_masks_keep_configs_consistent():
    """Every legal combination divides: register tiles the workgroup tile, tiles the bounds, the
    reduction vector the cache tile; no register tile beyond the budget; the conv pipeline only keeps."""
    rng = np.random.default_rng(1)
    for spec, d in _ops():
        for _ in range(200):
            r = R.random_refinement(d, rng)
            if not d.refinable:
                assert r.mode in ("keep", "data-tiling")
                continue
            if r.mode != "config":
                continue
            lv = R.lowering_levels(d, r)
            for dim, b in enumerate(d.bounds):
                dist, vec = lv["distribution"][dim], lv["vector_common_parallel"][dim]
                if not d.reduction[dim]:
                    assert b % (dist or b) == 0 and vec >= 1 and (dist or b) % vec == 0
            reg = np.prod([max(v, 1) for v in lv["vector_common_parallel"]])
            assert reg <= R.MAX_REGISTER_TILE
            rd = d.red_dim
            assert reg * (lv["vector_reduction"][rd] if rd is not None else 1) <= R.MAX_VECTOR_ELEMS
            if rd is not None:
                vr, cr = lv["vector_reduction"][rd], lv.get("cache_reduction", [0] * len(d.bounds))[rd]
                assert d.bounds[rd] % vr == 0 and (cr == 0 or (d.bounds[rd] % cr == 0 and cr % vr == 0))


def test_tuning_spec_configures_only_the_matching_op(tmp_path, monkeypatch):
    pytest.importorskip("iree.compiler")
    from rl.mlir.measure import compile_dump, parse_config

    monkeypatch.setenv("RL_MLIR_CACHE", str(tmp_path))
    table = stack_programs([("a", [matmul(64, 128, 64)]), ("b", [matmul(64, 64, 128)])])
    a, b = program_specs(table, 0)[0], program_specs(table, 1)[0]
    da = R.default_config(a)
    assert da.refinable and da.pipeline == DT
    r = R.Refinement("config", vector_common_parallel=(4, 32, 0), vector_reduction=(0, 0, 1))
    spec_text = R.tuning_spec([(list(da.operand_types), R.lowering_levels(da, r), da.pipeline)])
    _, text_a, _ = compile_dump(R.default_source(a), spec_text)
    assert parse_config(text_a) == R.lowering_levels(da, r)
    _, text_b, _ = compile_dump(R.default_source(b), spec_text)       # other operand types: untouched
    assert parse_config(text_b) == R.default_config(b).levels


def test_random_refinements_compile_as_asked_and_are_correct(tmp_path, monkeypatch):
    """Sampled schedules of small ops all reach codegen as asked and match numpy (failure rate 0)."""
    pytest.importorskip("iree.compiler")
    monkeypatch.setenv("RL_MLIR_CACHE", str(tmp_path))
    table = stack_programs([("p", [matmul(64, 256, 128), elementwise(64, 256, "bias_gelu")]),
                            ("q", [reduction(256, 64, True)]), ("r", [elementwise(64, 128, "relu")])])
    rng = np.random.default_rng(3)
    statuses = []
    for p in range(3):
        for spec in program_specs(table, p):
            d = R.default_config(spec)
            keep = R.measure_refinement(spec, d, R.Refinement("keep"), repeats=2)
            assert keep.ok and keep.config == d.levels
            for _ in range(3):
                m = R.measure_refinement(spec, d, R.random_refinement(d, rng), repeats=2)
                statuses.append(m.status)
    assert statuses.count("ok") == len(statuses), statuses


def test_tune_cli_on_a_user_program_spec(tmp_path, monkeypatch, capsys):
    """`python -m rl.mlir.tune --spec FILE` with a (random-init) policy: per-op table, a spec file that
    configures the ops as chosen, re-measured in a fresh process, never slower than IREE's default by choice."""
    pytest.importorskip("iree.compiler")
    import json

    from rl import ppo
    from rl.config import PPOConfig
    from rl.envs import Env
    from rl.mlir import tune
    from rl.mlir.refine_env import N_FEATURES

    monkeypatch.setenv("RL_MLIR_CACHE", str(tmp_path / "cache"))
    cfg = PPOConfig.from_json("rl/configs/refine_mlp.json")
    e = RefineEnv([])
    net = ppo.build_network(cfg, Env(e.reset, e.step, R.N_HEADS, R.A_MAX, R.ACTIVE_HEADS, False))
    obs = {"consumer": jnp.zeros((1, N_FEATURES)), "producer": jnp.zeros((1, 0)), "history": jnp.zeros((1, 0)),
           "mask": jnp.ones((1, R.N_HEADS, R.A_MAX), bool)}
    tune.save_policy(str(tmp_path / "pol"), cfg, net.init(jax.random.PRNGKey(0), obs))
    spec = tmp_path / "prog.json"
    spec.write_text(json.dumps([{"name": "mine", "ops": [{"op": "matmul", "args": [64, 128, 64]},
                                                          {"op": "elementwise", "args": [64, 128], "kind": "bias_add"}]}]))
    out = tmp_path / "out"
    tune.main(["--spec", str(spec), "--budget", "2", "--policy", str(tmp_path / "pol"), "--out", str(out),
               "--repeats", "2", "--compare", "--k", "2"])
    text = capsys.readouterr().out
    assert "| mine | 0:matmul_64x128x64 |" in text and "geomean tuned vs IREE default" in text
    assert "| random best of 1 |" in text and "| policy greedy |" in text and "| policy budget 2 |" in text
    res = json.loads((out / "results.json").read_text())
    prog = res["programs"]["mine"]
    assert res["compare"]["mine"]["IREE default"] == 1.0 and res["compare"]["mine"]["policy budget 2"] >= 1.0
    assert prog["tuned_s"] <= prog["default_s"] + 1e-12          # the default is a candidate
    assert prog["remeasured"]["ok"] and len(prog["remeasured"]["tuned_s"]) == 2
    for op in prog["ops"]:
        assert 1 <= len(op["candidates"]) <= 2
    assert (out / "mine.spec.mlir").exists()


def test_tune_rank_with_a_cost_model_measures_only_its_top_k(tmp_path, monkeypatch, capsys):
    """`--rank-with DIR`: a cost model (here untrained) ranks random candidates; only its top --budget are
    measured per op (no policy), the table names the model's top-1, the default stays a candidate."""
    pytest.importorskip("iree.compiler")
    import json

    from rl import costnet as C
    from rl.costnet.model import init
    from rl.mlir import tune

    monkeypatch.setenv("RL_MLIR_CACHE", str(tmp_path / "cache"))
    cfg = C.CostNetConfig(dim=16, n_layers=1, n_heads=2, hidden_dim=32)
    C.save(str(tmp_path / "cm"), cfg, init(cfg, jax.random.PRNGKey(0))[1], C.Stats(-8.0, 1.0))
    spec = tmp_path / "prog.json"
    spec.write_text(json.dumps([{"name": "mine", "ops": [{"op": "matmul", "args": [64, 128, 64]}]}]))
    out = tmp_path / "out"
    tune.main(["--spec", str(spec), "--budget", "2", "--rank-with", str(tmp_path / "cm"), "--candidates", "16",
               "--out", str(out), "--repeats", "2", "--no-fresh"])
    text = capsys.readouterr().out
    assert "model top-1 (ms)" in text and "ranks 16 random candidates" in text
    op = json.loads((out / "results.json").read_text())["programs"]["mine"]["ops"][0]
    assert len(op["candidates"]) == 2 and all(k.startswith("cfg:") for k, _ in op["candidates"])
    assert op["chosen_s"] <= op["default_s"] + 1e-12


def test_tune_cli_errors(tmp_path, capsys):
    from rl.mlir import tune

    bad = tmp_path / "bad.json"
    bad.write_text('[{"name": "x", "ops": [{"op": "fft", "args": [4]}]}]')
    from distilbert_jax.clitools import run_cli

    assert run_cli(tune.main, ["--spec", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "'op' must be one of" in capsys.readouterr().err
    assert run_cli(tune.main, ["--programs", "test", "--policy", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "missing config.json" in capsys.readouterr().err


def test_evaluate_cli_measures_only_the_named_programs(tmp_path, monkeypatch, capsys):
    """`python -m rl.mlir.evaluate --program NAME` (repeatable) picks programs of the set; a wrong name is
    refused naming the known ones."""
    pytest.importorskip("iree.compiler")
    import json

    from rl.mlir import evaluate

    monkeypatch.setenv("RL_MLIR_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "r.json"
    evaluate.main(["--programs", "test", "--program", "gap_7x7x2048", "--k", "1", "--repeats", "1",
                   "--out", str(out)])
    assert json.loads(out.read_text())["programs"] == ["gap_7x7x2048"]
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--programs", "test", "--program", "nope"])
    assert e.value.code == 2 and "unknown program(s) ['nope']" in capsys.readouterr().err


def test_no_cache_reduction_on_a_batch_matmul_reading_b_k_n():
    """IREE rejects any cache_reduction on the attention-context batch matmul ([b, k, n] second operand):
    masked, while the scores batch matmul ([b, n, k]) keeps it."""
    table = stack_programs([("c", [batch_matmul(12, 128, 64, 256)]),
                            ("s", [batch_matmul(12, 128, 128, 256, transpose_b=True)])])
    for p, allowed in ((0, False), (1, True)):
        spec = program_specs(table, p)[0]
        d = R.DefaultConfig(DT, {"distribution": [4, 64, 64, 0], "vector_common_parallel": [1, 8, 16, 0],
                                 "vector_reduction": [0, 0, 0, 16]}, spec.bounds, spec.reduction, True, (),
                            R._cache_reduction_ok(spec))
        assert R.head_masks(d, R.initial_state(d))[R.H_CRED, 1:].any() == allowed
