"""The BERT-base-scale pipeline config (configs/pipeline_base.json): it parses and its space holds BERT-base's
shape; with tiny sizes and step counts it runs end to end on CPU (teacher training -> distilled SuperNet -> …);
and one data-parallel SuperNet step of its config over 2 forced host devices (subprocess) gives the same
loss and params as on 1 device."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import distilbert_jax as dj
from distilbert_jax.nas.candidates import ConstraintError
from distilbert_jax.nas.config import load_nas_config
from distilbert_jax.nas.latency import PREDICTOR_DIR
from distilbert_jax.nas.pipeline import MODELS, PipelineConfig, run_pipeline
from distilbert_jax.nas.predictor import load_predictor
from distilbert_jax.nas.space import Arch, ArchError
from distilbert_jax.nas.supernet import SuperNet
from distilbert_jax.nas.train import train_supernet
from distilbert_jax.train.config import ConfigError, TrainConfig, read_json_object
from distilbert_jax.train.models import model_config

from .conftest import TINY_SPACE
from .test_pipeline_rerun import config, fake_steps  # noqa: F401  (a fixture)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BASE = os.path.join(ROOT, "distilbert_jax", "nas", "configs", "pipeline_base.json")
BERT_BASE = Arch(layers=12, hidden=768, heads=12, qkv=768, ffn=3072)
DATA = {"source": "synthetic", "batch_size": 8, "seq_len": 16, "vocab_size": 100}
TINY_MODEL = {"dim": 32, "n_layers": 2, "n_heads": 2, "hidden_dim": 64, "max_position_embeddings": 32}
QUIET = {"log_every": 1, "eval_batches": 1, "checkpoint_every": 0, "progress": False, "dtype": "float32"}


def _config_path(name: str) -> str:
    return os.path.join(ROOT, name)


def test_base_config_parses_and_its_space_holds_bert_base(monkeypatch):
    monkeypatch.chdir(ROOT)  # the sub-config paths are relative to the repository root
    cfg = PipelineConfig.from_json(BASE)
    settings, train_cfg = load_nas_config(cfg.supernet_config, [])
    space = settings.space
    assert space.largest() == space.check(BERT_BASE)  # up to 12 layers x 768 hidden x 12 heads x 3072 FFN
    assert space.check("L6_H768_A12_Q768_F3072") and space.check("L4_H320_A5_Q320_F1280")  # DistilBERT, TinyBERT-4-like
    assert space.size() > 500_000 and settings.sandwich
    assert len(SuperNet(space, dj.small_config(vocab_size=100), settings.buckets).all_buckets()) <= 8  # programs
    with pytest.raises(ArchError, match="layers"):
        space.check(Arch(13, 768, 12, 768, 3072))
    # the teacher config trains a BERT-base-shaped masked LM; the other sub-configs parse
    teacher = TrainConfig.from_dict(read_json_object(cfg.teacher_config))
    c = model_config(teacher, 4000)
    assert (c.n_layers, c.dim, c.n_heads, c.hidden_dim) == (12, 768, 12, 3072) and teacher.task == "mlm"
    TrainConfig.from_dict(read_json_object(cfg.further_mlm_config))
    assert not cfg.teacher and train_cfg.data.batch_size % 8 == 0  # splits over 1, 2, 4 or 8 devices
    with pytest.raises(ConfigError, match="either teacher"):
        PipelineConfig(teacher="some/dir", teacher_config=cfg.teacher_config)


def _tiny_sets(tmp_path, constraint: str = "1.45") -> list[str]:
    sets = {
        "out_dir": str(tmp_path / "run"),
        "teacher_set": {**QUIET, "total_steps": 2, "model": TINY_MODEL, "data": DATA},
        "supernet_set": {**QUIET, "total_steps": 2, "space": TINY_SPACE, "buckets": 1, "random_archs": 0, "data": DATA,
                         "model": {"max_position_embeddings": 32}},  # sandwich: the largest + the smallest
        "further_mlm_set": {**QUIET, "total_steps": 2, "data": DATA},
        "finetune_set": {**QUIET, "total_steps": 2, "data": {**DATA, "num_labels": 3}},
        "latency_n": 12, "latency_batch": 1, "latency_seq": 16, "latency_rounds": 2, "search_evaluations": 3,
        "latency_reference": str(Arch(3, 64, 4, 64, 128)), "constraint": constraint,
    }  # fmt: skip
    return [f"{k}={json.dumps(v)}" for k, v in sets.items()]


def test_base_pipeline_runs_end_to_end_with_tiny_sizes(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    log = []
    with pytest.raises(ConstraintError, match="reachable"):  # the steps up to latency ran: pick a reachable window
        run_pipeline(PipelineConfig.from_json(BASE, _tiny_sets(tmp_path, "1e6")), log.append)
    predictor = load_predictor(tmp_path / "run" / "latency" / PREDICTOR_DIR)
    ms = sorted(predictor.predict(list(predictor.space.archs())))  # timed tiny archs: their speedup varies with load
    cfg = PipelineConfig.from_json(BASE, _tiny_sets(tmp_path, f"{ms[len(ms) // 2]:.6g}ms"))
    rows = run_pipeline(cfg, log.append)
    state = json.loads((tmp_path / "run" / "pipeline_state.json").read_text())
    assert "[teacher] …" in log and list(state)[:2] == ["_inputs", "teacher"]
    assert "output of teacher" in state["_inputs"]["supernet"]
    nas = json.loads((tmp_path / "run" / "supernet" / "nas_config.json").read_text())
    assert nas["objective"] == "distill" and nas["teacher"] == state["teacher"]["model"]
    assert nas["sandwich"] is True and nas["optim"]["learning_rate"] == 1e-4  # the base config's, sizes overridden
    assert [r["model"] for r in rows] == list(MODELS)
    for r in rows:
        assert float(r["measured ms"]) > 0 and 0 <= float(r["accuracy"]) <= 1
    log2 = []
    assert run_pipeline(cfg, log2.append) == rows and "[teacher] done before, skipped" in log2


SCRIPT = """
import json, sys
import jax, numpy as np
from distilbert_jax.nas.config import load_nas_config
from distilbert_jax.nas.train import train_supernet
assert jax.device_count() == int(sys.argv[3]), jax.devices()
settings, cfg = load_nas_config(sys.argv[1], json.loads(sys.argv[2]))
result = train_supernet(settings, cfg)
params = [np.asarray(x).ravel().tolist() for x in jax.tree.leaves(jax.device_get(result.state.params))]
devices = sorted({len(x.sharding.device_set) for x in jax.tree.leaves(result.state.params)})
specs = sorted({str(x.sharding.spec) for x in jax.tree.leaves(result.state.params)})
print("RESULT" + json.dumps({"loss": [r["loss"] for r in result.history["train"]], "params": params,
                             "devices": devices, "specs": specs}))
"""


def _dp_overrides(tmp_path, name: str) -> list[str]:
    teacher = tmp_path / "teacher"
    if not teacher.is_dir():  # a tiny masked-LM teacher on the synthetic vocabulary
        model = dj.build_model(dj.small_config(vocab_size=100, max_position_embeddings=32), "masked_lm")
        dj.save_pretrained(teacher, model, dj.init_params(model, 1))
    sets = {**QUIET, "total_steps": 1, "out_dir": str(tmp_path / name), "space": TINY_SPACE, "dtype": "float32",
            "objective": "distill", "teacher": str(teacher), "data": DATA, "model": {"max_position_embeddings": 32}}
    return [f"{k}={json.dumps(v)}" for k, v in sets.items()]


def _run(tmp_path, devices: int) -> dict:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
    args = [_config_path("distilbert_jax/nas/configs/supernet_base.json"),
            json.dumps(_dp_overrides(tmp_path, f"d{devices}")), str(devices)]  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", SCRIPT, *args], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.split("RESULT", 1)[1])


def test_data_parallel_step_matches_one_device(tmp_path):
    # the base config's step (sandwich, distillation from a teacher, dropout on) at tiny sizes, batch 8
    two = _run(tmp_path, 2)
    assert two["devices"] == [2] and two["specs"] == ["P()"]  # params replicated over both devices
    one = train_supernet(*load_nas_config(_config_path("distilbert_jax/nas/configs/supernet_base.json"),
                                          _dp_overrides(tmp_path, "d1")))  # fmt: skip
    assert jax.device_count() == 1
    np.testing.assert_allclose(two["loss"], [r["loss"] for r in one.history["train"]], rtol=1e-5)
    leaves = jax.tree.leaves(jax.device_get(one.state.params))
    assert len(leaves) == len(two["params"])
    for a, b in zip(two["params"], leaves):
        np.testing.assert_allclose(a, np.asarray(b).ravel(), atol=1e-5)


def test_teacher_changes_rerun_the_teacher_and_supernet(tmp_path, fake_steps, monkeypatch):
    """With every step faked: the teacher step runs first and the SuperNet gets its model; another
    `teacher_set` re-runs both (and what follows); a given `teacher` directory is an input of the SuperNet."""
    from distilbert_jax.nas import pipeline

    teachers = []
    monkeypatch.setattr(pipeline, "_train_teacher", lambda cfg, out: fake_steps.append("teacher") or {
        "model": out + "/model", "final_eval": {"loss": 3.0}})  # fmt: skip
    monkeypatch.setattr(pipeline, "_train_supernet", lambda cfg, d, teacher, supernet_set: teachers.append(teacher) or
                        fake_steps.append("supernet") or {"run_dir": d, "supernet_dir": d + "/supernet",
                                                          "final_eval": {"loss": 5.7}, "compilations": 8})  # fmt: skip
    (tmp_path / "teacher.json").write_text(json.dumps({"total_steps": 3}))
    cfg = config(tmp_path, teacher_config=str(tmp_path / "teacher.json"))
    run_pipeline(cfg, [].append)
    assert fake_steps[:2] == ["teacher", "supernet"] and teachers == [str(tmp_path / "run" / "teacher" / "model")]
    fake_steps.clear()
    run_pipeline(cfg, [].append)
    assert fake_steps == []
    log = []
    run_pipeline(config(tmp_path, teacher_config=cfg.teacher_config, teacher_set={"total_steps": 4}), log.append)
    assert fake_steps[:3] == ["teacher", "supernet", "latency"]
    assert any(line.startswith("[supernet] inputs changed: output of teacher changed") for line in log), log
    fake_steps.clear()
    run_pipeline(config(tmp_path, teacher="some/bert"), log.append)  # a directory instead: no teacher step
    assert fake_steps[:2] == ["supernet", "latency"] and teachers[-1] == "some/bert"
