"""rank-check end to end on a tiny space and synthetic data: two SuperNet variants (plain, sandwich) over
the same archs of one window, each arch's one-shot loss, further-trained loss and accuracy from real runs,
Kendall τ computed from them; too few candidates and bad configs are clear errors."""

import dataclasses
import json

import pytest

from distilbert_jax.nas.candidates import ConstraintError
from distilbert_jax.nas.cli import main
from distilbert_jax.nas.latency import PREDICTOR_DIR
from distilbert_jax.nas.predictor import load_predictor
from distilbert_jax.nas.rank_check import RankConfig, kendall, run_rank_check, variant_summary
from distilbert_jax.train.config import ConfigError

from .test_pipeline import tiny_pipeline

VARIANTS = {"plain": {}, "sandwich": {"sandwich": True}}


def rank_config(tmp_path, **changes) -> RankConfig:
    (tmp_path / "pipeline.json").write_text(json.dumps(dataclasses.asdict(tiny_pipeline(tmp_path))))
    base = dict(out_dir=str(tmp_path / "run"), pipeline_config=str(tmp_path / "pipeline.json"), archs=3,
                task="packages", constraint="1e6", variants=VARIANTS)  # fmt: skip
    return RankConfig(**{**base, **changes})


def test_rank_check_runs_every_variant_and_arch(tmp_path):
    with pytest.raises(ConstraintError, match="reachable"):  # the SuperNets and latency ran: pick a wide window
        run_rank_check(rank_config(tmp_path))
    predictor = load_predictor(tmp_path / "run" / "plain" / "latency" / PREDICTOR_DIR)
    ms = sorted(predictor.predict(list(predictor.space.archs())))
    with pytest.raises(ConfigError, match="fewer than archs=10000"):
        run_rank_check(rank_config(tmp_path, constraint=f"{ms[len(ms) // 2]:.6g}ms", archs=10_000))
    cfg = rank_config(tmp_path, constraint=f"{ms[len(ms) // 2]:.6g}ms")
    log = []
    rows, summary = run_rank_check(cfg, log.append)
    assert "[plain/supernet] done before, skipped" in log and "[sandwich/supernet] …" in log  # variant by variant
    assert not (tmp_path / "run" / "sandwich" / "latency").exists()  # one latency dataset for all variants
    assert [r["variant"] for r in rows] == ["plain", "sandwich"]
    state = json.loads((tmp_path / "run" / "pipeline_state.json").read_text())
    archs = state["archs"]
    assert len(archs) == 3
    for v in VARIANTS:
        s = summary["variants"][v]
        recs = s["archs"]
        assert len(recs) == 3
        for r in recs:  # every number is a recorded run's
            assert r["supernet_loss"] == state[f"{v}/fitness"][r["arch"]]
            assert r["mlm_loss"] == state[f"{v}/further_mlm:{r['arch']}"]["final_eval"]["loss"]
            assert r["accuracy"] == state[f"{v}/finetune:{r['arch']}"]["final_eval"]["accuracy"]
        assert s["tau_supernet_mlm"] == kendall([r["supernet_loss"] for r in recs], [r["mlm_loss"] for r in recs])
    # the two variants' SuperNets differ (the sandwich rule trains other archs per step)
    assert summary["variants"]["plain"]["archs"] != summary["variants"]["sandwich"]["archs"]
    assert (tmp_path / "run" / "rank.md").is_file() and (tmp_path / "run" / "rank.json").is_file()


def test_kendall_tau():
    assert kendall([1, 2, 3, 4], [2, 4, 6, 8])["tau"] == pytest.approx(1.0)
    assert kendall([1, 2, 3, 4], [4, 3, 2, 1])["tau"] == pytest.approx(-1.0)


def test_task_fitness_taus_only_when_every_arch_has_one():
    recs = [{"supernet_loss": 5 + i, "mlm_loss": 5 + i, "accuracy": 0.5 - i / 10, "task_error": 0.4 + i / 10,
             "task_loss": 2 - i} for i in range(4)]  # fmt: skip
    s = variant_summary(recs)
    assert s["tau_task_error_accuracy"]["tau"] == pytest.approx(-1.0)  # error rises as accuracy falls
    assert s["tau_task_loss_accuracy"]["tau"] == pytest.approx(1.0)
    assert "tau_task_error_accuracy" not in variant_summary([{k: v for k, v in r.items() if "task" not in k} for r in recs])


@pytest.mark.parametrize("change, key", [("archs=2", "archs"), ("variants={}", "variants"),
                                          ('variants={"a b": {}}', "variant"), ("nope=1", "nope")])  # fmt: skip
def test_bad_config_exits_2_naming_the_key(tmp_path, capsys, change, key):
    path = tmp_path / "rank.json"
    path.write_text(json.dumps({"out_dir": str(tmp_path / "run")}))
    assert main(["rank-check", "--config", str(path), "--set", change]) == 2
    assert key in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_reuse_adopts_a_finished_run_with_the_same_inputs_only(tmp_path):
    from distilbert_jax.nas.pipeline_state import PipelineState
    from distilbert_jax.nas.rank_check import adopt_shared_steps

    other = tmp_path / "other"
    (other / "latency").mkdir(parents=True)
    sn_inputs = {"supernet_config": "sha256:x", "supernet_set": {"total_steps": 3}}
    o = PipelineState(str(other))
    o.data.update({"supernet": {"run_dir": "r"}, "latency": {"n": 2}, "_inputs": {"supernet": sn_inputs}})
    o.data["_inputs"]["latency"] = o.inputs_of("supernet", latency_n=2)
    o._save()
    mine = PipelineState(str(tmp_path / "mine"))
    with pytest.raises(ConfigError, match="other inputs"):
        adopt_shared_steps(mine, "plain/", str(other), {**sn_inputs, "supernet_set": {"total_steps": 4}}, print)
    adopt_shared_steps(mine, "plain/", str(other), sn_inputs, print)
    assert mine.data["plain/supernet"] == {"run_dir": "r"} and mine.data["plain/latency"] == {"n": 2}
    # the adopted latency step's inputs are what this run computes for it: a rerun skips it
    assert mine.data["_inputs"]["plain/latency"] == mine.inputs_of("plain/supernet", latency_n=2)
    assert (tmp_path / "mine" / "plain" / "latency").resolve() == (other / "latency").resolve()
