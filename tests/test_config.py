import json

import pytest
import transformers

import distilbert_jax as dj


def test_from_hf_to_hf_round_trip(tmp_path):
    hf = transformers.DistilBertConfig(dim=64, n_layers=3, n_heads=4, hidden_dim=100, sinusoidal_pos_embds=True,
                                       activation="relu", qa_dropout=0.3, seq_classif_dropout=0.25, pad_token_id=1,
                                       id2label={0: "neg", 1: "neu", 2: "pos"})  # fmt: skip
    config = dj.DistilBertConfig.from_hf(hf.to_dict())
    assert (config.dim, config.n_layers, config.hidden_dim, config.activation) == (64, 3, 100, "relu")
    assert config.num_labels == 3 and config.label2id["pos"] == 2 and config.pad_token_id == 1
    hash(config)  # usable as a static jit argument
    config.to_json_file(tmp_path / "config.json")
    back = transformers.AutoConfig.from_pretrained(tmp_path)
    for field in ("dim", "n_layers", "hidden_dim", "sinusoidal_pos_embds", "qa_dropout", "seq_classif_dropout"):
        assert getattr(back, field) == getattr(hf, field), field
    assert back.id2label == {0: "neg", 1: "neu", 2: "pos"}
    assert dj.DistilBertConfig.from_json_file(tmp_path) == config


@pytest.mark.parametrize(
    "kwargs, match",
    [(dict(dim=30, n_heads=4), "must divide"), (dict(activation="swish"), "activation"),
     (dict(dropout=1.5), "dropout"), (dict(n_layers=0), "n_layers"), (dict(pad_token_id=40000), "pad_token_id")],
)
def test_invalid_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        dj.DistilBertConfig(**kwargs)


def test_num_labels_helpers():
    config = dj.small_config().replace(num_labels=4)
    assert config.num_labels == 4 and config.id2label[3] == (3, "LABEL_3")
    assert config.with_labels(["a", "b"]).label2id == {"a": 0, "b": 1}
    assert json.loads(json.dumps(config.to_hf()))["id2label"]["3"] == "LABEL_3"
