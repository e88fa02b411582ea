"""Resuming a run with another config is refused, naming each changed key; a longer run (total_steps) is
allowed and named (issue 21, item 1: never silently mix two configs in one run)."""

import json

import pytest

from distilbert_jax.nas.config import nas_config_from_dict
from distilbert_jax.nas.train import train_supernet
from distilbert_jax.train.cli import main
from distilbert_jax.train.config import ConfigError, tiny_config
from distilbert_jax.train.loop import train

from ..nas.conftest import TINY_SPACE


def test_resume_with_another_config_is_refused_or_named(tmp_path, capsys):
    cfg = tiny_config(total_steps=2, out_dir=str(tmp_path / "run"))
    train(cfg)
    changed = cfg.replace(optim={"learning_rate": 5e-4}, seed=1)
    with pytest.raises(ConfigError) as e:
        train(changed)
    msg = str(e.value)
    assert "optim.learning_rate: 0.001 -> 0.0005" in msg and "seed: 0 -> 1" in msg and "--no-resume" in msg
    assert json.loads((tmp_path / "run" / "train_config.json").read_text())["seed"] == 0  # the record is kept
    with pytest.warns(UserWarning, match="total_steps 3 .the saved run had 2."):
        assert int(train(cfg.replace(total_steps=3, log_every=1)).state.step) == 3
    # the command line says so and exits 2
    path = tmp_path / "c.json"
    path.write_text(json.dumps({**changed.replace(resume=True).to_dict(), "seed": 2}))
    assert main(["mlm", "--config", str(path)]) == 2
    assert "seed: 0 -> 2" in capsys.readouterr().err


def test_supernet_resume_with_another_space_is_refused(tmp_path):
    data = {"space": TINY_SPACE, "buckets": 1, "model": {"max_position_embeddings": 32}, "total_steps": 1,
            "log_every": 1, "eval_batches": 1, "progress": False, "out_dir": str(tmp_path / "sn"),
            "data": {"source": "synthetic", "batch_size": 8, "seq_len": 16, "vocab_size": 100}}  # fmt: skip
    train_supernet(*nas_config_from_dict(data))
    with pytest.raises(ConfigError, match=r"space\.hidden_size_space: \[32, 64\] -> \[32, 48\]"):
        train_supernet(*nas_config_from_dict({**data, "space": {**TINY_SPACE, "hidden_size_space": [32, 48]}}))
