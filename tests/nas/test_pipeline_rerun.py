"""The pipeline's rerun rules and closing report with every step faked (seconds, no training): a step
re-runs when its inputs changed (config keys, sub-config contents, upstream outputs), with everything after
it, saying which and why; unchanged steps skip; pipeline_config.json always matches the results (issue 21,
items 1 and 7)."""

import json
import re
import warnings
from pathlib import Path

import pytest

from distilbert_jax.nas import pipeline
from distilbert_jax.nas.pipeline import PipelineConfig, run_pipeline
from distilbert_jax.nas.pipeline_report import COLUMNS

ROOT = Path(__file__).resolve().parents[2]
ARCHS = {"searched": {"layers": 2, "hidden": 224, "heads": 2, "qkv": 128, "ffn": 128},
         "random": {"layers": 2, "hidden": 224, "heads": 1, "qkv": 64, "ffn": 320},
         "distilbert_ratios": {"layers": 2, "hidden": 128, "heads": 2, "qkv": 128, "ffn": 512}}  # fmt: skip
ERR = {"mape": 0.04, "within_10": 0.9, "spearman": 0.98}
REPORT = {"mlp": {"mape": 0.0438, "within_10": 0.9, "spearman": 0.979}, "mlp_linear_target": ERR,
          "flops": {"mape": 0.0831, "within_10": 0.6, "spearman": 0.96},
          "layer_sum": {"mape": 0.05, "within_10": 0.85, "spearman": 0.97}, "chosen": "mlp",
          "noise_floor": {"mape": 0.0759, "within_10": 0.7, "spearman": 0.988},
          "noise_floor_drift_removed": {"mape": 0.0401, "within_10": 0.9, "spearman": 0.988},
          "seconds": {"total": 91, "measure": 80, "layer_table": 5, "fit": 3}, "n": 150, "n_train": 120, "n_held_out": 30,
          "batch": 1, "seq": 128, "rounds": 10, "quantile": 0.25, "reference_ms": 132.1, "reference_spread": 0.02,
          "median_spread": 0.1, "pass_drift": 1.072, "mlp_over_noise": 1.09, "chosen_over_noise": 1.09,
          "layer_table": {"sublayers_timed": 50, "dispatch_ms": 0.01, "c0": 0.0, "c1": 1.0, "c2": 0.0},
          "device": "test CPU"}  # fmt: skip


@pytest.fixture
def fake_steps(monkeypatch):
    """Every step of the pipeline replaced by a fake that records its call (`calls`)."""
    calls = []

    def rec(name, result):
        calls.append(name)
        return result

    def fresh(fn, cfg, *args):
        if fn is pipeline._latency:
            return rec("latency", dict(REPORT, n=cfg.latency_n))
        from distilbert_jax.nas.space import Arch

        ms = {str(Arch(**a)): t for a, t in zip(args[1], (1.359, 1.356, 1.764))}  # the last 74.9x: too slow
        return rec("measure", {"ms": ms, "reference_ms": 132.1, "spread": {}, "device": "test CPU"})

    def candidates(constraint, latency_dir, out):
        target = 132.1 / float(constraint.rstrip("x"))
        return rec("candidates", {"count": 236, "constraint": constraint, "target_ms": target,
                                  "window_ms": [0.85 * target, 1.1 * target], "reference_ms": 132.1, "space_size": 1872})

    def finetune(cfg, init_dir, out, extra=None):
        Path(out).mkdir(parents=True, exist_ok=True)
        warnings.warn(f"{out}/model: 4 sequence_classification head params were not in the checkpoint and are "
                      "freshly initialised: classifier.bias", UserWarning)  # fmt: skip
        return rec(f"finetune:{out}", {"model": out, "final_eval": {"accuracy": 0.8 + cfg.finetune_set.get("x", 0)}})

    from distilbert_jax.nas import candidates as cands_module, fitness

    monkeypatch.setattr(fitness, "load_search_setup", lambda run_dir: None)
    monkeypatch.setattr(cands_module, "read_candidates", lambda path: None)
    monkeypatch.setattr(pipeline, "_train_supernet", lambda cfg, d, teacher, supernet_set: rec("supernet", {
        "run_dir": d, "supernet_dir": d + "/supernet", "final_eval": {"loss": 5.7}, "compilations": 8}))
    monkeypatch.setattr(pipeline, "in_fresh_process", fresh)
    monkeypatch.setattr(pipeline, "_candidates", candidates)
    monkeypatch.setattr(pipeline, "_search", lambda cfg, setup, cands, out: rec("search", {
        "best": {"arch": ARCHS["searched"]}, "evaluations": cfg.search_evaluations, "notes": []}))
    def pick(cfg, searched, setup, cands, lat, models, task_fitness=None):  # the random arm differs between constraints
        archs = {**ARCHS, "random": {**ARCHS["random"], "ffn": 320 if cfg.constraint == "100" else 288}}
        return rec("archs", {n: {"arch": a, "predicted_ms": 1.4, "supernet_loss": 5.77} for n, a in archs.items()})

    monkeypatch.setattr(pipeline, "pick_archs", pick)
    monkeypatch.setattr(pipeline, "_extract", lambda sn, arch, out: rec("extract", {"dir": out, "arch": arch, "params_mb": 5.0}))
    monkeypatch.setattr(pipeline, "_further_mlm", lambda cfg, init, out: rec("further_mlm", {
        "model": out, "final_eval": {"loss": 5.6}}))
    monkeypatch.setattr(pipeline, "_finetune", finetune)
    return calls


def config(tmp_path, **changes) -> PipelineConfig:
    for name in ("supernet.json", "further.json"):
        if not (tmp_path / name).exists():
            (tmp_path / name).write_text(json.dumps({"total_steps": 3}))
    return PipelineConfig(**{"out_dir": str(tmp_path / "run"), "supernet_config": str(tmp_path / "supernet.json"),
                             "further_mlm_config": str(tmp_path / "further.json"), "constraint": "100", **changes})


def recorded_config(tmp_path) -> dict:
    return json.loads((tmp_path / "run" / "pipeline_config.json").read_text())


def test_changed_inputs_rerun_that_step_and_its_dependents_only(tmp_path, fake_steps):
    log = []
    run_pipeline(config(tmp_path), log.append)
    assert len(fake_steps) == 1 + 1 + 1 + 1 + 1 + 3 * 3 + 1  # every step once
    assert recorded_config(tmp_path)["constraint"] == "100"

    fake_steps.clear()
    log = []
    run_pipeline(config(tmp_path), log.append)
    assert fake_steps == [] and sum("done before, skipped" in line for line in log) == 15

    # the case: another constraint re-runs candidates and everything after it, not SuperNet / latency
    fake_steps.clear()
    log = []
    rows = run_pipeline(config(tmp_path, constraint="50x"), log.append)
    assert "[supernet] done before, skipped" in log and "[latency] done before, skipped" in log
    assert "[candidates] inputs changed: constraint: '100' -> '50x'; re-running it" in log
    assert "[search] inputs changed: output of candidates changed; re-running it" in log
    # the searched and DistilBERT-ratio arms are the same archs as before: their models are kept
    assert fake_steps == ["candidates", "search", "archs", "extract", "further_mlm",
                          f"finetune:{tmp_path}/run/models/random/classify", "measure"]
    assert any(line.startswith("[extract:random] inputs changed: arch: {") for line in log)
    assert "[extract:searched] done before, skipped" in log
    assert recorded_config(tmp_path)["constraint"] == "50x"  # the config of the results now shown
    assert all(r["speedup"].startswith(("97.2x", "97.4x", "74.9x")) for r in rows)

    # a changed fine-tuning setting re-runs only the three fine-tunings, starting afresh
    stale = tmp_path / "run" / "models" / "searched" / "classify" / "checkpoints"
    stale.mkdir(parents=True)
    fake_steps.clear()
    log = []
    rows = run_pipeline(config(tmp_path, constraint="50x", finetune_set={"x": 0.1}), log.append)
    assert [c.split(":")[0] for c in fake_steps] == ["finetune"] * 3 and len(fake_steps) == 3
    assert any(line.startswith("[finetune:random] inputs changed: finetune_set: {} -> {'x': 0.1}") for line in log)
    assert not stale.exists()  # the old run's checkpoints were removed: no stale resume
    assert {r["accuracy"] for r in rows} == {"0.900"}
    assert recorded_config(tmp_path)["finetune_set"] == {"x": 0.1}

    # a sub-config file's content is an input too: editing it re-runs the SuperNet and everything after it
    (tmp_path / "supernet.json").write_text(json.dumps({"total_steps": 4}))
    fake_steps.clear()
    log = []
    run_pipeline(config(tmp_path, constraint="50x", finetune_set={"x": 0.1}), log.append)
    assert len(fake_steps) == 15 and "[supernet] inputs changed: supernet_config: {'total_steps': 3} -> " \
        "{'total_steps': 4}; re-running it" in log


def test_a_failed_rerun_leaves_the_recorded_config_matching_the_results(tmp_path, fake_steps, monkeypatch):
    run_pipeline(config(tmp_path), lambda s: None)

    def fail(*args):
        raise RuntimeError("search failed")

    monkeypatch.setattr(pipeline, "_search", fail)
    with pytest.raises(RuntimeError):
        run_pipeline(config(tmp_path, constraint="50x"), lambda s: None)
    assert recorded_config(tmp_path)["constraint"] == "100"  # results.md is still the 100x run's
    state = json.loads((tmp_path / "run" / "pipeline_state.json").read_text())
    assert "search" not in state and state["_inputs"]["search"] != state["_inputs"]["archs"]


def test_closing_report_matches_the_docs(tmp_path, fake_steps):
    log = []
    rows = run_pipeline(config(tmp_path), log.append)
    # the table has the README's / docs' columns
    assert list(rows[0]) == list(COLUMNS)
    for doc in ("README.md", "docs/nas.md"):
        text = (ROOT / doc).read_text()
        headers = [h for h in re.findall(r"^\| model \|.*\|$", text, re.M) if "arch |" in h]
        assert headers, doc
        for h in headers:
            assert [c.strip() for c in h.strip("|").split("|")] == list(COLUMNS), (doc, h)
    # an arm outside the latency window says so; those inside do not
    speed = {r["model"]: r["speedup"] for r in rows}
    assert speed["distilbert_ratios"] == "74.9x (slower than the window 90.9–117.6x)"
    assert speed["searched"] == "97.2x"
    text = "\n".join(log)
    # the latency predictor's held-out figures are in the summary
    assert "MLP predictor" in text and "4.38" in text and "8.31" in text and "4.01" in text
    # an expected warning of every fine-tuning is shown once, not once per model
    assert sum("freshly initialised" in line for line in log) == 1


def test_search_by_task_fitness_adds_its_step_and_reruns_the_search(tmp_path, fake_steps, monkeypatch):
    from distilbert_jax.nas import task_fitness

    scorers = []

    class FakeTaskFitness:
        def __init__(self, path):
            self.path = path

        def fitness(self, arch):
            return 0.3

    def search(cfg, scorer, cands, out):
        scorers.append(scorer)
        return {"best": {"arch": ARCHS["searched"]}, "evaluations": cfg.search_evaluations, "notes": []}

    monkeypatch.setattr(pipeline, "_train_task_fitness", lambda cfg, sn_dir, cands, out, log: fake_steps.append(
        "task_fitness") or {"dir": out, "best_step": 600})
    monkeypatch.setattr(task_fitness, "TaskFitness", FakeTaskFitness)
    monkeypatch.setattr(pipeline, "_search", search)
    run_pipeline(config(tmp_path, task="modules16"), lambda *_: None)
    assert "task_fitness" not in fake_steps and scorers == [None]  # masked-LM fitness: the search setup (None here)
    log = []
    run_pipeline(config(tmp_path, task="modules16", search_fitness="task", task_fitness_set={"steps": 300}), log.append)
    assert fake_steps.count("task_fitness") == 1 and isinstance(scorers[-1], FakeTaskFitness)
    assert scorers[-1].path == str(tmp_path / "run" / "task_fitness")
    assert any(line.startswith("[search] inputs changed") and "search_fitness: '<absent>' -> 'task'" in line for line in log)
    assert "[supernet] done before, skipped" in log and "[candidates] done before, skipped" in log
