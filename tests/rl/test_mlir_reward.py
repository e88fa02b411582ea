"""Measured rewards in jitted PPO: io_callback at episode end, still traced once; the real IREE timer runs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rl import ppo, programs as P
from rl.config import PPOConfig
from rl.mlir.reward import measured_env

TINY = dict(env="sched", model_type="mlp", total_timesteps=128, num_envs=4, num_steps=16, num_minibatches=2,
            update_epochs=1, width=16)


def tiny_table():
    return P.stack_programs([("mm", [P.matmul(16, 32, 16)]), ("mm_bias", [P.matmul(8, 16, 32),
                                                                          P.elementwise(8, 16, "bias_add")])])


class FakeTimer:
    """Time = base / (1 + #tiled ops + #vectorised ops); records every schedule it is asked for."""

    def __init__(self):
        self.calls = []

    def __call__(self, table, p, schedules):
        if schedules is not None:
            self.calls.append((p, schedules))
            gain = sum((s.tiles != tuple(table.bounds[p, k, :len(s.tiles)])) + s.vectorize
                       for k, s in enumerate(schedules))
            return 1.0 / (1 + gain)
        return 1.0


def test_measured_reward_is_log10_of_the_measured_speedup():
    timer = FakeTimer()
    _, menv = measured_env(tiny_table(), timer)
    # the reward handed back is log10(measured unscheduled / measured scheduled); 0 where not terminated
    r = menv._host_reward(np.array([True, False]), np.array([0, 1]), np.zeros((2, 3, 6), np.int32),
                          np.zeros((2, 3), bool), np.array([[True, False, False]] * 2),
                          np.tile(np.arange(6), (2, 3, 1)), np.zeros((2, 3), bool))
    assert r[0] == pytest.approx(np.log10(2.0)) and r[1] == 0.0


def test_a_schedule_stopped_at_the_cap_gets_the_capped_time(monkeypatch):
    """Reward clip: a schedule still running at 10 × the unscheduled time is stopped and scored as 10× slower."""
    from types import SimpleNamespace
    from rl.mlir import reward

    deadlines = []

    def fake(specs, scheds, repeats, deadline_s=None):
        deadlines.append(deadline_s)
        if deadline_s is None:
            return SimpleNamespace(ok=True, status="ok", time_s=0.2)
        return SimpleNamespace(ok=False, status="slow", time_s=float("nan"))

    monkeypatch.setattr(reward, "measure_program", fake)
    assert reward.iree_program_time(stop_factor=10.0)(tiny_table(), 0, ["sched"]) == pytest.approx(2.0)
    assert deadlines == [None, pytest.approx(2.0)]


def test_tiny_programs_are_not_stopped_for_first_call_overhead(monkeypatch):
    """A µs program's 10x cap is far below a module's first-call overhead, against which the deadline is
    checked: the deadline never goes below MIN_DEADLINE_S, and a finished run slower than the cap is clipped."""
    from types import SimpleNamespace
    from rl.mlir import reward
    from rl.mlir.timer import MIN_DEADLINE_S

    deadlines = []

    def fake(specs, scheds, repeats, deadline_s=None):
        deadlines.append(deadline_s)
        return SimpleNamespace(ok=True, status="ok", time_s=1e-5 if deadline_s is None else 5e-4)

    monkeypatch.setattr(reward, "measure_program", fake)
    assert reward.iree_program_time(stop_factor=10.0)(tiny_table(), 0, ["sched"]) == pytest.approx(1e-4)
    assert deadlines == [None, MIN_DEADLINE_S]


def test_measured_reward_with_iree(tmp_path, monkeypatch):
    pytest.importorskip("iree.compiler")
    monkeypatch.setenv("RL_MLIR_CACHE", str(tmp_path))
    table = P.stack_programs([("mm", [P.matmul(16, 32, 16)])])
    env, menv = measured_env(table)
    obs, s = menv.reset_to(0)
    a = np.zeros(8, np.int32)
    a[0], a[1:4] = 2, [4, 4, 0]                  # TP: i→8, j→8 (TILE_SIZES index 4 = 8), k untiled
    obs, s, r, term, _ = jax.jit(menv.step_env)(s, jnp.asarray(a))
    assert not bool(term) and float(r) == 0.0
    obs, s, r, term, info = jax.jit(menv.step_env)(s, jnp.asarray(np.eye(8, dtype=np.int32)[0] * 4))   # V
    assert bool(term) and menv.n_measured == 1
    from rl.mlir.emit import program_specs
    from rl.mlir.measure import measure_program
    from rl.mlir.schedule import from_env_state
    m = measure_program(program_specs(table, 0), from_env_state(table, s), 3)     # cached: same measurement
    assert m.ok and float(r) == pytest.approx(np.log10(menv.measured_base[0] / m.time_s), rel=1e-5)


def test_train_cli_measured_evaluation(tmp_path, monkeypatch, capsys):
    """`python -m rl.train --config <..._mlir.json>`: held-out table measured with IREE (tiny programs here)."""
    pytest.importorskip("iree.compiler")
    import json

    from rl import envs, train

    monkeypatch.setenv("RL_MLIR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(envs, "test_programs", lambda: P.stack_programs(
        [("mm_bias", [P.matmul(16, 32, 16), P.elementwise(16, 32, "bias_add")])]))
    cfg = dict(TINY, total_timesteps=64, eval_samples=2, eval_backend="mlir",
               machine="rl/configs/machine_calibrated_zen4_2core.json", out_dir=str(tmp_path / "runs"))
    path = tmp_path / "tiny_mlir.json"
    path.write_text(json.dumps(cfg))
    train.main(["--config", str(path)])
    out = capsys.readouterr().out
    assert "measured with IREE" in out and "IREE default" in out and "policy (greedy)" in out
    res = json.loads((tmp_path / "runs" / "tiny_mlir" / "mlir_eval_seed0.json").read_text())
    assert res["programs"] == ["mm_bias"]
    for method in ("no schedule", "IREE default", "heuristic", "random search (best of 2)", "policy (greedy)"):
        assert np.isfinite(res["times"][method][0]) and res["times"][method][0] > 0
    summary = json.loads((tmp_path / "runs" / "tiny_mlir" / "results.json").read_text())["eval"]["0"]
    assert summary["policy (greedy) ×none"] > 0 and summary["IREE default ×IREE"] == pytest.approx(1.0)


def test_fine_tune_on_measured_rewards_from_a_checkpoint_compiles_once(tmp_path, monkeypatch):
    """`reward_backend: mlir` + `init_from`: the CLI training loop fine-tunes a trained policy on measured
    rewards (fake timer here), one jitted chunk traced once for all chunks; bad params are refused."""
    import json

    from rl import checkpoint, train
    from rl.mlir import reward, suite

    base = dict(TINY, total_timesteps=64, out_dir=str(tmp_path / "runs"))
    pre_cfg = PPOConfig(name="pre", **base)                    # a "trained" run: a saved seed-batched runner
    pre_setup = ppo.make_setup(pre_cfg)
    pre = jax.tree.map(lambda x: x[None], jax.jit(lambda k: ppo.init_runner(pre_setup, k))(jax.random.PRNGKey(7)))
    ckpt = str(tmp_path / "pre.msgpack")
    checkpoint.save(ckpt, pre, pre_cfg.to_dict())
    timer = FakeTimer()
    monkeypatch.setattr(reward, "iree_program_time", lambda *a, **k: timer)
    monkeypatch.setattr(suite, "validation_programs", tiny_table)
    traces = []
    run_updates = ppo.run_updates
    monkeypatch.setattr(ppo, "run_updates", lambda *a: (traces.append(1), run_updates(*a))[1])
    cfg = PPOConfig(name="ft", **dict(base, total_timesteps=3 * 64, updates_per_chunk=1, lr=1e-12,
                                      reward_backend="mlir", train_programs="validation", init_from=ckpt))
    setup, ft, hist = train.train(cfg, quiet=True)
    assert len(traces) == 1 and hist["episodes"].shape == (1, 3)              # 3 chunks, one trace
    assert len(timer.calls) == int(hist["episodes"].sum()) > 0                # measured every ended episode
    assert setup.env.step is not None and int(np.asarray(ft.update)[0]) == 3
    for a, b in zip(jax.tree.leaves(pre.train.params), jax.tree.leaves(ft.train.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)   # started from the checkpoint
    from rl.mlir.evaluate import trained_policy        # `python -m rl.mlir.evaluate --run CONFIG` measures it
    (tmp_path / "ft.json").write_text(json.dumps(cfg.to_dict()))
    _, params = trained_policy(str(tmp_path / "ft.json"))
    for a, b in zip(jax.tree.leaves(ft.train.params), jax.tree.leaves(params)):
        np.testing.assert_array_equal(np.asarray(a)[0], np.asarray(b))
    (tmp_path / "other.json").write_text(json.dumps({**cfg.to_dict(), "name": "other"}))
    with pytest.raises(FileNotFoundError, match="train it first"):
        trained_policy(str(tmp_path / "other.json"))
    wrong = jax.tree.map(lambda x: np.asarray(x)[0], ft.train.params)
    wrong["params"]["Dense_0"]["kernel"] = wrong["params"]["Dense_0"]["kernel"][:, :8]   # another width
    with pytest.raises(ValueError, match=r"do not fit the model: \['params'\]\['Dense_0'\]\['kernel'\]"):
        checkpoint.load_params(ckpt, wrong)
    with pytest.raises(ValueError, match="reward_backend"):
        PPOConfig(**dict(base, reward_backend="gpu"))
    assert json.loads(json.dumps(cfg.to_dict()))["init_from"] == ckpt

