"""The small SuperNet configs train at the learning rate measured stable (issue 21, item 9).

At a peak learning rate of 1e-3 (the configs' value until then) the pipeline's 600-step SuperNet broke its
3- and 4-head sub-networks of >= 2 layers before step 150 (held-out loss of the largest arch 13.2 at step 150,
the true token ranked ~3,940th of 4,000) while the steps, training mostly other archs, looked normal; the
training-loss spike near step 160 is the first step that sampled one. At 5e-4 no such arch broke and every
evaluation was lower. The measurement is in docs/nas.md ("The SuperNet loss spike"); a CI-sized run cannot
reproduce it (it takes ~150 steps of the small config), so this guards the setting."""

import json
from pathlib import Path

from distilbert_jax.nas.config import load_nas_config
from distilbert_jax.nas.pipeline import PipelineConfig, _overrides

ROOT = Path(__file__).resolve().parents[2]
STABLE_PEAK_LR = 5e-4


def test_small_supernet_configs_use_the_measured_stable_learning_rate(monkeypatch):
    monkeypatch.chdir(ROOT)
    _, cfg = load_nas_config("distilbert_jax/nas/configs/supernet_small.json", [])
    assert cfg.optim.learning_rate <= STABLE_PEAK_LR
    assert cfg.optim.max_grad_norm is not None and cfg.optim.warmup_steps >= 30
    pipe = PipelineConfig.from_json("distilbert_jax/nas/configs/pipeline_small.json")
    _, sn = load_nas_config(pipe.supernet_config, _overrides(pipe.supernet_set))
    assert sn.optim.learning_rate <= STABLE_PEAK_LR
    assert "1e-3" not in json.dumps(pipe.supernet_set)
