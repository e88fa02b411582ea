"""`--set` errors name the flag (not the config file), show the JSON error and the quoting to use (issue 21,
item 2)."""

import json

import pytest

from distilbert_jax.nas.cli import main as nas_main
from distilbert_jax.nas.pipeline import PipelineConfig
from distilbert_jax.train.cli import main as train_main
from distilbert_jax.train.config import ConfigError


@pytest.fixture
def pipeline_file(tmp_path):
    path = tmp_path / "pipeline_small.json"
    path.write_text(json.dumps({"constraint": "100"}))
    return str(path)


def test_a_wrongly_typed_set_value_blames_the_flag_and_shows_the_quoting(pipeline_file):
    with pytest.raises(ConfigError) as e:
        PipelineConfig.from_json(pipeline_file, ["constraint=50"])
    msg = str(e.value)
    assert msg.startswith("--set constraint=50: constraint must be str, got int 50"), msg
    assert "pipeline_small.json" not in msg
    assert """--set constraint='"50"'""" in msg
    assert PipelineConfig.from_json(pipeline_file, ['constraint="50"']).constraint == "50"


def test_broken_json_in_a_set_value_shows_the_parse_error(capsys):
    assert train_main(["mlm", "--set", 'optim={"learning_rate": 1e-3']) == 2
    err = capsys.readouterr().err
    assert "--set optim={\"learning_rate\": 1e-3: not valid JSON: Expecting ',' delimiter" in err, err
    assert "must be an object" not in err
    assert """--set 'optim={"learning_rate": 1e-3}'""" in err  # the closed value, quoted for the shell


def test_errors_not_about_a_flag_still_name_the_file(pipeline_file, capsys):
    with open(pipeline_file, "w") as f:
        json.dump({"constraint": 100}, f)
    with pytest.raises(ConfigError, match=r"pipeline_small\.json: constraint must be str"):
        PipelineConfig.from_json(pipeline_file, ["seed=1"])
    with open(pipeline_file, "w") as f:
        json.dump({"constraint": "100"}, f)
    assert nas_main(["pipeline", "--config", pipeline_file, "--set", "latency_n=abc"]) == 2
    assert "--set latency_n=abc: latency_n must be int, got str 'abc'" in capsys.readouterr().err
    assert train_main(["mlm", "--set", "optim.bogus=1"]) == 2
    assert "--set optim.bogus=1: unknown config key(s) in 'optim': ['bogus']" in capsys.readouterr().err
    # plain text that is not JSON is still a string
    assert PipelineConfig.from_json(pipeline_file, ["constraint=50x", "out_dir=runs/x"]).out_dir == "runs/x"
