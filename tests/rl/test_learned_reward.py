"""Issue 18 item 3b: PPO on the refine env with rewards from a learned cost model (`reward_backend: "learned"`).
A tiny cost model trained on synthetic records (no IREE) drives a few PPO updates; every reward equals
log10(t̂_default / t̂) computed directly by the Ranker for the same schedule; bad cost-model dirs are refused."""

import dataclasses
import json
import os

import jax
import numpy as np
import pytest

from loaders.schedules import ScheduleSet, by_split, usable
from rl import costnet as C
from rl import ppo
from rl.config import PPOConfig
from rl.costnet.rank import Ranker
from rl.costnet.reward import LearnedRewards, load_ranker
from rl.envs import Env, log_wrapper
from rl.mlir import refine as R
from rl.mlir.emit import program_specs
from rl.mlir.refine_env import RefineEnv, episode_refinement
from rl.programs import train_programs

from .costnet_synth import PROGRAMS, fake_default, make_records

TINY = C.CostNetConfig(dim=16, n_layers=1, n_heads=2, hidden_dim=32, steps=60, groups=4, per_group=8, lr=3e-3)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    parts = by_split(usable(make_records(per_op=8, seed=0)))
    model, state, stats, _ = C.fit(TINY, ScheduleSet.build(parts["train"], C.encode), progress=False)
    path = str(tmp_path_factory.mktemp("costnet"))
    C.save(path, TINY, state.params, stats)
    return path


def train_ops() -> tuple[list, list[str]]:
    table = train_programs()
    ops, names = [], []
    for name in PROGRAMS["train"][:2]:
        for k, spec in enumerate(program_specs(table, table.names.index(name))):
            ops.append((spec, fake_default(spec)))
            names.append(f"{name}/{k}")
    return ops, names


class Recording(LearnedRewards):
    """Keeps every scored batch so the test can recompute its rewards."""

    calls: list
    n_calls = 0

    def rewards(self, terminated, *args):
        self.n_calls += 1
        return super().rewards(terminated, *args)

    def score(self, op, done_types, choices):
        out = super().score(op, done_types, choices)
        self.calls.append((op.copy(), done_types.copy(), choices.copy(), out.copy()))
        return out


def test_ppo_updates_on_learned_rewards_equal_the_rankers_prediction(model_dir):
    ops, names = train_ops()
    scorer = Recording(ops, names, model_dir)
    scorer.calls = []
    e = RefineEnv(ops, scorer)
    env = log_wrapper(Env(e.reset, e.step, R.N_HEADS, R.A_MAX, R.ACTIVE_HEADS, False))
    cfg = PPOConfig(env="refine", model_type="mlp", reward_backend="learned", cost_model=model_dir, num_envs=8,
                    num_steps=3, num_minibatches=2, total_timesteps=8 * 3 * 2, width=16, eval_backend="none")
    setup = ppo.make_setup(cfg, env=env)
    runner = jax.jit(lambda k: ppo.init_runner(setup, k))(jax.random.PRNGKey(0))
    runner, metrics = jax.jit(lambda r: ppo.run_updates(setup, r, 2))(runner)
    assert np.asarray(runner.update) == 2 and np.isfinite(np.asarray(metrics["policy_loss"])).all()
    assert scorer.calls and sum(len(c[0]) for c in scorer.calls) >= 8    # every rollout step's ended episodes
    assert scorer.n_calls == 2 * 3          # one host call per rollout step for all 8 envs (batched_io_callback)
    ranker = Ranker.load(model_dir)                    # a fresh load: nothing shared with the scorer
    eps = [(ops[i], episode_refinement(ops[i][1], d_t, c), r) for call in scorer.calls for i, d_t, c, r in zip(*call)]
    items = [(spec.kind, d, x) for (spec, d), ref, _ in eps for x in (R.Refinement("keep"), ref)]
    pred = ranker.predict_many(items).reshape(-1, 2)   # one batch: [log t̂_default, log t̂] per episode
    want = np.maximum(np.log10(np.exp(pred[:, 0]) / np.exp(pred[:, 1])), -1.0)
    np.testing.assert_allclose([r for _, _, r in eps], want, atol=1e-4)
    assert all(r == 0 for _, ref, r in eps if ref.mode == "keep")      # the empty schedule scores exactly 0
    assert {ref.mode for _, ref, _ in eps} >= {"config"}
    assert scorer.n_failed == 0


def test_bad_cost_model_dirs_are_refused(model_dir, tmp_path):
    with pytest.raises(ValueError, match="is not a directory"):
        load_ranker(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="needs cost_model"):
        load_ranker(None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no readable config.json"):
        load_ranker(str(tmp_path / "empty"))
    scalar = tmp_path / "scalar"
    scalar.mkdir()
    meta = json.load(open(os.path.join(model_dir, "config.json")))
    meta["costnet"]["space"] = "scalar"
    (scalar / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="trained on the 'scalar' space"):
        load_ranker(str(scalar))


def test_config_checks(model_dir, tmp_path):
    base = dict(env="refine", model_type="mlp", num_envs=8, num_steps=3, num_minibatches=2, total_timesteps=48)
    assert PPOConfig(**base, reward_backend="learned", cost_model=model_dir).cost_model == model_dir
    with pytest.raises(ValueError, match="needs cost_model"):
        PPOConfig(**base, reward_backend="learned")
    with pytest.raises(ValueError, match="not a cost-model directory"):
        PPOConfig(**base, reward_backend="learned", cost_model=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="for env 'refine' only"):
        PPOConfig(**{**base, "env": "sched"}, reward_backend="learned", cost_model=model_dir)
    with pytest.raises(ValueError, match="'mlir' or 'learned'"):
        PPOConfig(**base, reward_backend="model")
    assert dataclasses.replace(PPOConfig(**base, reward_backend="mlir"), eval_backend="none").eval_backend == "none"
    for name in ("refine_mlp_learned.json", "refine_mlp_learned_finetune.json"):  # the shipped configs parse
        d = json.load(open(os.path.join(os.path.dirname(__file__), "..", "..", "rl", "configs", name)))
        d.pop("cost_model", None), d.pop("init_from", None)
        if d["reward_backend"] == "learned":
            d["cost_model"] = model_dir
        PPOConfig.from_dict(d)
