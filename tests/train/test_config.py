"""Training configs: JSON loading, clear errors on unknown keys and bad values, CLI overrides."""

import glob
import json
import os

import pytest

from distilbert_jax.train import ConfigError, TrainConfig
from distilbert_jax.train.cli import load_config, main
from distilbert_jax.train.config import tiny_config
from distilbert_jax.train.models import model_config

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "distilbert_jax", "train", "configs")


def test_shipped_configs_load():
    paths = glob.glob(os.path.join(CONFIG_DIR, "*.json"))
    assert paths
    for path in paths:
        cfg = TrainConfig.from_json(path)
        assert TrainConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    "data, message",
    [
        ({"total_step": 3}, "unknown config key(s): ['total_step']"),
        ({"optim": {"lr": 1e-3}}, "in 'optim': ['lr']"),
        ({"total_steps": "ten"}, "total_steps must be int"),
        ({"total_steps": 0}, "total_steps must be >= 1"),
        ({"task": "translate"}, "task must be one of"),
        ({"dtype": "float16"}, "dtype must be one of"),
        ({"optim": {"learning_rate": -1.0}}, "optim.learning_rate must be > 0"),
        ({"optim": {"grad_accum_steps": 3}, "data": {"batch_size": 8}}, "divisible by optim.grad_accum_steps"),
        ({"task": "distill"}, "needs a 'distill' section"),
        ({"task": "distill", "distill": {"teacher": "t", "alpha": 2.0}}, "distill.alpha must be in [0, 1]"),
        ({"data": {"mask_prob": 1.5}}, "data.mask_prob"),
        ({"data": []}, "data must be an object"),
    ],
)
def test_bad_configs_raise_clear_errors(data, message):
    with pytest.raises(ConfigError) as e:
        TrainConfig.from_dict(data)
    assert message in str(e.value)


def test_model_section_is_checked():
    with pytest.raises(ConfigError, match="unknown key.*'model'.*'hiden_dim'"):
        model_config(tiny_config(model={"hiden_dim": 3}), None)
    with pytest.raises(ConfigError, match="n_heads"):
        model_config(tiny_config(model={"dim": 30, "n_heads": 4}), None)
    with pytest.raises(ConfigError, match="smaller than the tokenizer"):
        model_config(tiny_config(model={"vocab_size": 100}), 200)
    with pytest.raises(ConfigError, match="max_position_embeddings"):
        model_config(tiny_config(data={"seq_len": 100}), None)
    assert model_config(tiny_config("classify"), None).num_labels == 3
    assert model_config(tiny_config("qa"), None).num_labels == 2


def test_cli_overrides_and_errors(tmp_path, capsys):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"task": "mlm", "total_steps": 5}))
    cfg = load_config("mlm", str(path), ["optim.learning_rate=0.01", "data.source=synthetic", "out_dir=x"])
    assert (cfg.total_steps, cfg.optim.learning_rate, cfg.data.source, cfg.out_dir) == (5, 0.01, "synthetic", "x")
    with pytest.raises(ConfigError, match="says 'mlm'"):
        load_config("classify", str(path), [])
    assert main(["mlm", "--config", str(path), "--set", "optim.bogus=1"]) == 2
    assert "unknown config key(s) in 'optim': ['bogus']" in capsys.readouterr().err
    assert main(["mlm", "--config", str(tmp_path / "missing.json")]) == 2
