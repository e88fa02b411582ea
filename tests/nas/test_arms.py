"""compare-arms end to end on a tiny space and synthetic data: every arm of a constraint is extracted,
further trained and fine-tuned once per seed, the table has every (constraint, arm) with mean ± SE from
those runs, the plot and JSON are written, a rerun skips every step; bad configs exit 2 naming the key."""

import dataclasses
import json

import pytest

from distilbert_jax.nas.arms import ArmsConfig, constraint_prefix, mean_se, run_compare_arms
from distilbert_jax.nas.candidates import ConstraintError, read_candidates
from distilbert_jax.nas.cli import main
from distilbert_jax.nas.latency import PREDICTOR_DIR
from distilbert_jax.nas.pipeline import tinybert_like_arch
from distilbert_jax.nas.predictor import load_predictor
from distilbert_jax.nas.space import Arch
from distilbert_jax.train.config import ConfigError

from .test_pipeline import tiny_pipeline


def arms_config(tmp_path, **changes) -> ArmsConfig:
    pipe = dataclasses.asdict(tiny_pipeline(tmp_path))
    (tmp_path / "pipeline.json").write_text(json.dumps(pipe))
    base = dict(out_dir=str(tmp_path / "run"), pipeline_config=str(tmp_path / "pipeline.json"), seeds=2,
                task="packages", constraints=("1e6",))  # fmt: skip
    return ArmsConfig(**{**base, **changes})


def test_compare_arms_runs_every_arm_and_seed(tmp_path):
    with pytest.raises(ConstraintError, match="reachable"):  # the shared steps ran: pick two reachable windows
        run_compare_arms(arms_config(tmp_path))
    predictor = load_predictor(tmp_path / "run" / "latency" / PREDICTOR_DIR)
    ms = sorted(predictor.predict(list(predictor.space.archs())))
    constraints = (f"{ms[len(ms) // 2]:.6g}ms",)  # one (the real run has two): a tiny fine-tuning is compile-bound
    arms = ("searched", "tinybert_like")  # two of the four arms keep the test short; each arm runs the same steps
    cfg = arms_config(tmp_path, constraints=constraints, arms=arms)
    log = []
    rows, summary = run_compare_arms(cfg, log.append)
    assert "[supernet] done before, skipped" in log
    assert [(r["constraint"], r["arm"]) for r in rows] == [(c, a) for c in constraints for a in arms]
    state = json.loads((tmp_path / "run" / "pipeline_state.json").read_text())
    for c in constraints:
        p = constraint_prefix(c)
        s = summary["constraints"][c]
        assert set(s["leads"]) == set(arms) - {"searched"}
        for arm in arms:
            accs = [state[f"{p}finetune:{arm}:seed{k}"]["final_eval"]["accuracy"] for k in range(2)]
            assert s["arms"][arm]["accuracies"] == accs
            assert s["arms"][arm]["mean"] == pytest.approx(sum(accs) / 2)
        # the TinyBERT-like arm: the space's nearest layer count to 4 (3 here), nearest TinyBERT's ratios in the window
        tiny = state[f"{p}archs"]["tinybert_like"]["arch"]
        cands = read_candidates(tmp_path / "run" / p / "candidates.jsonl")
        assert tiny["layers"] == 3 and Arch(**tiny) == tinybert_like_arch(predictor.space, cands, predictor.predict)
    for f in ("arms.md", "arms.json", "arms.png"):
        assert (tmp_path / "run" / f).is_file(), f
    assert "lead" in (tmp_path / "run" / "arms.md").read_text()
    log2 = []
    assert run_compare_arms(cfg, log2.append)[0] == rows
    assert not [line for line in log2 if line.startswith("[") and "skipped" not in line]


def test_mean_se_combines_seeds_and_binomial():
    mean, se, se_seeds, se_binom = mean_se([0.5, 0.6, 0.7], 2500)
    assert mean == pytest.approx(0.6) and se_seeds == pytest.approx(0.1 / 3**0.5)
    assert se_binom == pytest.approx((0.24 / 2500) ** 0.5) and se == pytest.approx((se_seeds**2 + se_binom**2) ** 0.5)


@pytest.mark.parametrize("change, key", [("seeds=1", "seeds"), ('arms=["random", "tinybert_like"]', "arms"),
                                          ('arms=["searched", "bogus"]', "arms"), ("constraints=[]", "constraints"),
                                          ("nope=1", "nope")])  # fmt: skip
def test_bad_config_exits_2_naming_the_key(tmp_path, capsys, change, key):
    path = tmp_path / "arms.json"
    path.write_text(json.dumps({"out_dir": str(tmp_path / "run")}))
    assert main(["compare-arms", "--config", str(path), "--set", change]) == 2
    assert key in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_pipeline_task_must_be_known():
    with pytest.raises(ConfigError, match="modulesN"):
        ArmsConfig(task="bogus").pipeline()
