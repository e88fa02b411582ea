"""Issue 21 item 8, NAS: SuperNet training killed with SIGKILL mid-run resumes to the bit-identical SuperNet of an
uninterrupted run; the pipeline killed at each of its steps reruns to completion."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

from .conftest import TINY_SPACE

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = {"source": "synthetic", "batch_size": 8, "seq_len": 16, "vocab_size": 100}
SUPERNET = {"space": TINY_SPACE, "buckets": 1, "model": {"max_position_embeddings": 32}, "total_steps": 4,
            "checkpoint_every": 1, "log_every": 1, "eval_batches": 1, "progress": False, "data": DATA}  # fmt: skip


def _nas_train(tmp_path, out: str, kill_at: str = "") -> int:
    """`python -m distilbert_jax.nas train` of SUPERNET (the runs share one XLA cache)."""
    cfg = tmp_path / "supernet.json"
    cfg.write_text(json.dumps(SUPERNET))
    r = subprocess.run([sys.executable, "-m", "distilbert_jax.nas", "train", "--config", str(cfg), "--out-dir",
                        str(tmp_path / out), "--compile-cache", str(tmp_path / "xla")], cwd=ROOT,
                       env={**os.environ, "DISTILBERT_JAX_KILL_AT": kill_at}, capture_output=True, text=True,
                       timeout=300)  # fmt: skip
    assert r.returncode in (0, -signal.SIGKILL), r.stderr[-2000:]
    return r.returncode


def test_killed_supernet_training_resumes_to_the_uninterrupted_supernet(tmp_path):
    assert _nas_train(tmp_path, "killed", "train_step:3") == -signal.SIGKILL  # after step 3's checkpoint
    assert not (tmp_path / "killed" / "supernet").exists()
    assert _nas_train(tmp_path, "killed") == 0
    assert _nas_train(tmp_path, "whole") == 0
    got = load_file(tmp_path / "killed" / "supernet" / "model.safetensors")
    want = load_file(tmp_path / "whole" / "supernet" / "model.safetensors")
    assert sorted(got) == sorted(want)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


class Killed(BaseException):
    """A kill at a pipeline step's end (BaseException: no `except Exception` of the pipeline catches it)."""


def step_names() -> list[str]:
    from distilbert_jax.nas.pipeline import MODELS

    per_model = [f"{step}:{m}" for m in MODELS for step in ("extract", "further_mlm", "finetune")]
    return ["supernet", "latency", "candidates", "search", "archs", *per_model, "measure"]


@pytest.fixture
def compile_cache(tmp_path):
    """A persistent XLA cache for this test only (each redone step loads its programs instead of compiling)."""
    import jax
    from jax._src import compilation_cache

    from distilbert_jax.train.parallel import enable_compile_cache

    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
             "jax_persistent_cache_min_entry_size_bytes")  # fmt: skip
    old = {n: getattr(jax.config, n) for n in names}
    compilation_cache.reset_cache()
    enable_compile_cache(str(tmp_path / "xla"))
    yield
    for n, v in old.items():
        jax.config.update(n, v)
    compilation_cache.reset_cache()


def test_pipeline_killed_at_every_step_reruns_to_completion(tmp_path, monkeypatch, compile_cache):
    """Every step killed once, just after its work and before it is recorded (so the rerun redoes it over its
    own leftovers); each rerun goes one step further; the last one completes with every step recorded, the
    three models and no temporary or torn file left."""
    from distilbert_jax.nas import pipeline, pipeline_state
    from distilbert_jax.nas.candidates import ConstraintError
    from distilbert_jax.nas.latency import PREDICTOR_DIR
    from distilbert_jax.nas.predictor import load_predictor

    from .test_pipeline import tiny_pipeline

    target = {}

    def kill_point(name):
        if name == f"pipeline:{target.get('name')}":
            raise Killed(target["name"])

    monkeypatch.setattr(pipeline_state, "kill_point", kill_point)
    fewer = dict(latency_rounds=1, search_evaluations=2, supernet_set={"total_steps": 2},
                 further_mlm_set={"total_steps": 1}, finetune_set={"total_steps": 1, "eval_batches": 1, "progress": False,
                                                                   "checkpoint_every": 0, "data": {**DATA, "num_labels": 3}})  # fmt: skip
    cfg = tiny_pipeline(tmp_path, **fewer)
    names = step_names()
    for i, name in enumerate(names):
        target["name"] = name
        if name == "candidates":  # redo (and record) the killed latency step, then take a reachable constraint
            with pytest.raises(ConstraintError):
                pipeline.run_pipeline(tiny_pipeline(tmp_path, constraint="1e6", **fewer), lambda line: None)
            predictor = load_predictor(tmp_path / "run" / "latency" / PREDICTOR_DIR)
            ms = sorted(predictor.predict(list(predictor.space.archs())))
            cfg = tiny_pipeline(tmp_path, constraint=f"{ms[len(ms) // 2]:.6g}ms", **fewer)
        log = []
        try:
            pipeline.run_pipeline(cfg, log.append)
        except Killed as e:
            assert str(e) == name
        else:
            raise AssertionError(f"not killed at {name}")
        state_file = tmp_path / "run" / pipeline.STATE_FILE
        state = json.loads(state_file.read_text()) if state_file.exists() else {}
        assert [n for n in names if n in state] == names[:i], (name, sorted(state))
    target.clear()
    rows = pipeline.run_pipeline(cfg, lambda line: None)
    state = json.loads((tmp_path / "run" / pipeline.STATE_FILE).read_text())
    assert [n for n in names if n in state] == names and [r["model"] for r in rows] == list(pipeline.MODELS)
    left = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path / "run") for f in fs if "tmp" in f.lower()]
    assert left == []
