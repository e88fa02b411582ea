"""The end-to-end NAS pipeline on a tiny space and synthetic data: every step runs, the results table
has the three models, a rerun resumes (skips finished steps), and a constraint no arch meets stops with
the reachable range."""

import json

import pytest

from distilbert_jax.nas.candidates import ConstraintError, read_candidates
from distilbert_jax.nas.cli import main
from distilbert_jax.nas.latency import PREDICTOR_DIR
from distilbert_jax.nas.predictor import load_predictor
from distilbert_jax.nas.pipeline import MODELS, PipelineConfig, distilbert_ratio_arch, run_pipeline
from distilbert_jax.nas.space import Arch, SearchSpace
from distilbert_jax.train.config import ConfigError

from .conftest import TINY_SPACE

DATA = {"source": "synthetic", "batch_size": 8, "seq_len": 16, "vocab_size": 100}


def tiny_pipeline(tmp_path, **changes) -> PipelineConfig:
    supernet = {"space": TINY_SPACE, "buckets": 1, "model": {"max_position_embeddings": 32}, "total_steps": 3,
                "log_every": 1, "eval_batches": 1, "progress": False, "data": DATA}  # fmt: skip
    further = {"total_steps": 2, "log_every": 1, "eval_batches": 1, "progress": False, "data": DATA}
    (tmp_path / "supernet.json").write_text(json.dumps(supernet))
    (tmp_path / "further.json").write_text(json.dumps(further))
    base = dict(out_dir=str(tmp_path / "run"), supernet_config=str(tmp_path / "supernet.json"),
                further_mlm_config=str(tmp_path / "further.json"), latency_n=12, latency_seq=16, latency_rounds=2,
                search_evaluations=3, constraint="1ms",
                latency_reference='{"layers": 2, "hidden": 128, "heads": 2, "qkv": 128, "ffn": 256}',
                finetune_set={"total_steps": 2, "eval_batches": 1, "progress": False, "checkpoint_every": 0,
                              "data": {**DATA, "num_labels": 3}})  # fmt: skip
    return PipelineConfig(**{**base, **changes})


def test_pipeline_runs_every_step_and_resumes(tmp_path, capsys):
    cfg = tiny_pipeline(tmp_path, constraint="1e6")  # unreachable: the run stops after the latency step
    with pytest.raises(ConstraintError, match="reachable"):
        run_pipeline(cfg)
    state = json.loads((tmp_path / "run" / "pipeline_state.json").read_text())
    assert {"supernet", "latency"} <= set(state) and "candidates" not in state
    # a constraint in the middle of what the predictor says is reachable
    predictor = load_predictor(tmp_path / "run" / "latency" / PREDICTOR_DIR)
    archs = list(predictor.space.archs())
    ms = sorted(predictor.predict(archs))
    cfg = tiny_pipeline(tmp_path, constraint=f"{ms[len(ms) // 2]:.6g}ms")
    log = []
    rows = run_pipeline(cfg, log.append)
    assert "[supernet] done before, skipped" in log and "[latency] done before, skipped" in log
    assert any(line.startswith("[candidates] inputs changed since its unfinished run: constraint: '1e6'") for line in log)
    # the three fine-tunings' expected warnings (a fresh classifier head, the unused MLM head) once per kind
    assert sum("freshly initialised" in line for line in log) == 1, log
    assert sum("not used by this model" in line for line in log) == 1, log
    assert [r["model"] for r in rows] == list(MODELS)
    for r in rows:
        assert float(r["measured ms"]) > 0 and 0 <= float(r["accuracy"]) <= 1 and float(r["MLM loss"]) > 0
        assert str(Arch(**state_arch(tmp_path, r["model"]))) == r["arch"]
    cands = read_candidates(tmp_path / "run" / "candidates.jsonl")
    searched = state_arch(tmp_path, "searched")
    assert Arch(**searched) in cands.index()
    for f in ("results.md", "results.json", "search/pareto.png", "latency/latency.png"):
        assert (tmp_path / "run" / f).is_file(), f
    # everything done: a rerun only prints the table
    log2 = []
    assert run_pipeline(cfg, log2.append) == rows
    assert sum("skipped" in line for line in log2) >= 8


def state_arch(tmp_path, name):
    return json.loads((tmp_path / "run" / "pipeline_state.json").read_text())["archs"][name]["arch"]


def test_distilbert_ratio_arch_prefers_the_ratios():
    space = SearchSpace.from_dict({"layer_num_space": [1, 4], "hidden_size_space": [64, 128], "hidden_step": 64,
                                   "head_num_space": [1, 2], "intermediate_size_space": [128, 512],
                                   "intermediate_step": 128})  # fmt: skip
    from distilbert_jax.nas.candidates import select_candidates

    predict = lambda archs: [a.layers * (a.hidden * a.ffn + a.hidden * a.qkv) / 1e4 for a in archs]  # noqa: E731
    cands = select_candidates(space, predict, "20ms", 100.0)
    arch = distilbert_ratio_arch(space, cands, predict)
    assert arch.ffn == 4 * arch.hidden and arch.qkv == arch.hidden and arch.qkv // arch.heads == 64


def test_pipeline_cli_bad_config(tmp_path, capsys):
    bad = tmp_path / "p.json"
    bad.write_text(json.dumps({"search_method": "greedy"}))
    assert main(["pipeline", "--config", str(bad)]) == 2
    assert "search_method" in capsys.readouterr().err
    bad.write_text(json.dumps({"latency_m": 3}))
    assert main(["pipeline", "--config", str(bad)]) == 2
    assert "latency_m" in capsys.readouterr().err
    with pytest.raises(ConfigError):
        PipelineConfig.from_json(str(bad))
