"""HF checkpoint conversion both ways: prefixes, tied keys, shards, heads, and every bad-input case."""

import json
import os
import re
import shutil
import warnings

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from safetensors.numpy import save_file

import distilbert_jax as dj
from bench.common import HF_CLASSES, random_inputs


def _torch_out(hf, ids, mask, head):
    with torch.no_grad():
        out = hf(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
    if head == "question_answering":
        return np.stack([out.start_logits.numpy(), out.end_logits.numpy()])
    return out.last_hidden_state.numpy() if head == "base" else out.logits.numpy()


def _our_out(model, variables, ids, mask, head):
    out = model.apply(variables, jnp.asarray(ids), jnp.asarray(mask))
    if head == "question_answering":
        return np.stack([np.asarray(out.start_logits), np.asarray(out.end_logits)])
    return np.asarray(out.last_hidden_state if head == "base" else out.logits)


@pytest.mark.parametrize("head", list(dj.HEADS))
def test_save_then_transformers_loads_same_outputs(hf_dir, tmp_path, head):
    path, _ = hf_dir(head)
    model, variables = dj.from_pretrained(path, head)
    tok_dir = tmp_path / "out"
    dj.save_pretrained(tok_dir, model, variables)
    reloaded = getattr(transformers, HF_CLASSES[head]).from_pretrained(tok_dir, attn_implementation="eager").eval()
    ids, mask = random_inputs(2, 12, 1000, seed=4, choices=3 if head == "multiple_choice" else None)
    np.testing.assert_allclose(_torch_out(reloaded, ids, mask, head), _our_out(model, variables, ids, mask, head),
                               atol=1e-4)  # fmt: skip
    # and the generic Auto class picks the right architecture from config.json
    auto = transformers.AutoConfig.from_pretrained(tok_dir)
    assert auto.architectures == [HF_CLASSES[head]]
    # round trip through our loader is exact
    model2, variables2 = dj.from_pretrained(tok_dir)
    assert type(model2) is type(model)
    np.testing.assert_array_equal(_our_out(model2, variables2, ids, mask, head), _our_out(model, variables, ids, mask, head))


def test_sharded_save_and_load_both_ways(hf_dir, tmp_path):
    path, hf = hf_dir("masked_lm")
    model, variables = dj.from_pretrained(path)
    out = tmp_path / "sharded"
    dj.save_pretrained(out, model, variables, max_shard_size=60_000)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 2 and not (out / "model.safetensors").exists()
    ids, mask = random_inputs(2, 12, 1000, seed=5)
    reloaded = transformers.DistilBertForMaskedLM.from_pretrained(out, attn_implementation="eager").eval()
    np.testing.assert_allclose(_torch_out(reloaded, ids, mask, "masked_lm"),
                               _our_out(model, variables, ids, mask, "masked_lm"), atol=1e-4)  # fmt: skip
    hf_sharded = tmp_path / "hf_sharded"
    hf.save_pretrained(hf_sharded, max_shard_size="50KB")
    assert (hf_sharded / "model.safetensors.index.json").exists()
    model3, variables3 = dj.from_pretrained(hf_sharded)
    np.testing.assert_allclose(_our_out(model3, variables3, ids, mask, "masked_lm"),
                               _our_out(model, variables, ids, mask, "masked_lm"), atol=0)  # fmt: skip


def test_prefix_and_tied_key_variants(hf_dir):
    path, _ = hf_dir("masked_lm")
    state = dj.load_state_dict(path)
    model = dj.build_model(dj.DistilBertConfig.from_json_file(path), "masked_lm")
    reference, _ = dj.hf_to_params(state, model)
    with_tied = dict(state, **{"vocab_projector.weight": state["distilbert.embeddings.word_embeddings.weight"]})
    with_tied["distilbert.embeddings.position_ids"] = np.arange(128)[None]  # a stray buffer is ignored
    variables, report = dj.hf_to_params(with_tied, model)
    assert not report.initialized and not report.notes
    np.testing.assert_array_equal(variables["params"]["vocab_projector"]["bias"], reference["params"]["vocab_projector"]["bias"])
    # bare-model checkpoint (no prefix) into the bare model and into a head model
    bare = {k.removeprefix("distilbert."): v for k, v in state.items() if k.startswith("distilbert.")}
    base = dj.build_model(model.config)
    base_vars, report = dj.hf_to_params(bare, base)
    assert not report.unused
    np.testing.assert_array_equal(base_vars["params"]["embeddings"]["word_embeddings"]["embedding"],
                                  reference["params"]["distilbert"]["embeddings"]["word_embeddings"]["embedding"])  # fmt: skip
    head_vars, report = dj.hf_to_params(bare, model)
    assert report.initialized == ["vocab_layer_norm.bias", "vocab_layer_norm.weight", "vocab_projector.bias",
                                  "vocab_transform.bias", "vocab_transform.weight"]  # fmt: skip
    # a head checkpoint into the bare model: head keys reported unused
    _, report = dj.hf_to_params(state, base)
    assert "vocab_transform.weight" in report.unused


def test_base_checkpoint_into_head_warns_with_keys(hf_dir):
    path, _ = hf_dir("base")
    with pytest.warns(UserWarning, match="classifier.weight.*pre_classifier.weight"):
        model, variables, report = dj.from_pretrained(path, "sequence_classification", num_labels=4,
                                                      return_report=True)  # fmt: skip
    assert model.config.num_labels == 4
    assert variables["params"]["classifier"]["kernel"].shape == (32, 4)
    assert len(report.initialized) == 4


def test_mlm_checkpoint_into_classifier_reports_unused(hf_dir):
    path, _ = hf_dir("masked_lm")
    with pytest.warns(UserWarning, match="not used by this model.*vocab_projector.bias"):
        _, _, report = dj.from_pretrained(path, "token_classification", return_report=True)
    assert "vocab_projector.bias" in report.unused and "classifier.weight" in report.initialized


def test_all_problems_reported_at_once(hf_dir):
    path, _ = hf_dir("sequence_classification")
    state = dj.load_state_dict(path)
    del state["distilbert.transformer.layer.0.attention.q_lin.weight"]
    del state["distilbert.embeddings.LayerNorm.bias"]
    state["distilbert.transformer.layer.0.attention.k_lin.weight"] = np.zeros((5, 5), np.float32)
    state["distilbert.transformer.layer.1.ffn.lin2.bias"] = np.zeros((7,), np.float32)
    state["distilbert.transformer.mystery.weight"] = np.zeros((1,), np.float32)
    model = dj.build_model(dj.DistilBertConfig.from_json_file(path), "sequence_classification")
    with pytest.raises(dj.WeightsError) as err:
        dj.hf_to_params(state, model)
    msg = str(err.value)
    for needle in ["missing keys (2)", "layer.0.attention.q_lin.weight", "embeddings.LayerNorm.bias",
                   "unexpected keys (1)", "transformer.mystery.weight", "mis-shaped keys (2)",
                   "k_lin.weight: checkpoint (5, 5) vs model (32, 32)", "lin2.bias: checkpoint (7,) vs model (32,)"]:  # fmt: skip
        assert needle in msg, needle


def test_config_weights_disagreement(hf_dir, tmp_path):
    path, _ = hf_dir("base")
    bad = tmp_path / "bad"
    shutil.copytree(path, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["n_layers"], cfg["dim"] = 3, 48
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(dj.WeightsError, match=r"does config.json match the weights\?") as err:
        dj.from_pretrained(bad)
    assert "transformer.layer.2.ffn.lin1.weight" in str(err.value) and str(bad) in str(err.value)
    assert "mis-shaped keys (" in str(err.value)


def test_broken_files(hf_dir, tmp_path):
    path, _ = hf_dir("base")
    trunc = tmp_path / "trunc"
    shutil.copytree(path, trunc)
    data = (trunc / "model.safetensors").read_bytes()
    (trunc / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(dj.WeightsError, match="model.safetensors"):
        dj.from_pretrained(trunc)
    junk = tmp_path / "junk"
    shutil.copytree(path, junk)
    (junk / "model.safetensors").write_bytes(b"PK\x03\x04 this is a zip, not safetensors")
    with pytest.raises(dj.WeightsError, match="not a readable safetensors file"):
        dj.from_pretrained(junk)
    (junk / "model.safetensors").unlink()
    (junk / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match="pytorch_model.bin"):
        dj.from_pretrained(junk)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        dj.from_pretrained(tmp_path / "nope")
    no_cfg = tmp_path / "nocfg"
    no_cfg.mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        dj.from_pretrained(no_cfg)
    (no_cfg / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        dj.from_pretrained(no_cfg)
    (no_cfg / "config.json").write_text(json.dumps({"model_type": "albert"}))
    with pytest.raises(ValueError, match="model_type='albert'.*'bert'.*'electra'"):
        dj.from_pretrained(no_cfg)
    with pytest.raises(ValueError, match="unknown head"):
        dj.from_pretrained(path, "translation")


def test_bad_shard_index(hf_dir, tmp_path):
    path, _ = hf_dir("base")
    d = tmp_path / "idx"
    d.mkdir()
    shutil.copy(os.path.join(path, "config.json"), d)
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "model-00001-of-00002.safetensors"}}))
    with pytest.raises(dj.WeightsError, match="shard files that do not exist"):
        dj.from_pretrained(d)


@pytest.mark.parametrize("shard", ["../elsewhere/x.safetensors", "/tmp/x.safetensors", "sub/x.safetensors", "..",
                                   "a\\..\\x.safetensors"])  # fmt: skip
def test_shard_paths_must_stay_inside_the_directory(hf_dir, tmp_path, shard):
    """An index naming `../elsewhere/x.safetensors` was followed and loaded; now refused, naming it."""
    path, _ = hf_dir("base")
    d = tmp_path / "ckpt"
    (tmp_path / "elsewhere").mkdir()
    shutil.copy(os.path.join(path, "model.safetensors"), tmp_path / "elsewhere" / "x.safetensors")
    shutil.copytree(path, d)
    os.remove(d / "model.safetensors")
    keys = list(dj.load_state_dict(path))
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": dict.fromkeys(keys, shard)}))
    with pytest.raises(dj.WeightsError, match=r"outside the checkpoint directory.*" + re.escape(repr(shard))):
        dj.from_pretrained(d)
    with pytest.raises(dj.WeightsError, match="outside the checkpoint directory"):
        dj.load_state_dict(d)


def test_nonfinite_weights_are_reported_and_warned(hf_dir, tmp_path):
    path, _ = hf_dir("base")
    state = dj.load_state_dict(path)
    state["transformer.layer.1.ffn.lin1.weight"][0, :3] = [np.nan, np.inf, -np.inf]
    state["embeddings.LayerNorm.bias"][2] = np.nan
    d = tmp_path / "nan"
    shutil.copytree(path, d)
    save_file(state, str(d / "model.safetensors"), metadata={"format": "pt"})
    with pytest.warns(UserWarning, match=r"2 checkpoint tensors hold NaN / Inf.*embeddings.LayerNorm.bias \(1 NaN, 0 Inf"):
        _, _, report = dj.from_pretrained(d, return_report=True)
    assert report.nonfinite == ["embeddings.LayerNorm.bias (1 NaN, 0 Inf of 32)",
                                f"transformer.layer.1.ffn.lin1.weight (1 NaN, 2 Inf of {state['transformer.layer.1.ffn.lin1.weight'].size})"]  # fmt: skip
    assert any("non-finite" in n for n in report.notes)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean checkpoint loads without warnings
        dj.from_pretrained(path)


def test_half_precision_checkpoint_is_cast(hf_dir, tmp_path):
    path, _ = hf_dir("base")
    state = {k: v.astype(np.float16) for k, v in dj.load_state_dict(path).items()}
    d = tmp_path / "fp16"
    shutil.copytree(path, d)
    save_file(state, str(d / "model.safetensors"), metadata={"format": "pt"})
    _, variables = dj.from_pretrained(d)
    assert variables["params"]["embeddings"]["LayerNorm"]["scale"].dtype == jnp.float32
    _, variables = dj.from_pretrained(d, param_dtype=jnp.bfloat16)
    assert variables["params"]["embeddings"]["LayerNorm"]["scale"].dtype == jnp.bfloat16


def test_params_to_hf_rejects_wrong_tree(hf_dir):
    path, _ = hf_dir("base")
    model, variables = dj.from_pretrained(path)
    bad = {"params": dict(variables["params"], extra={"kernel": jnp.zeros(3)})}
    with pytest.raises(dj.WeightsError, match="extra/kernel: not a param"):
        dj.params_to_hf(bad, model)


def test_each_tensor_read_once_and_lazily(hf_dir, tmp_path, monkeypatch):
    from collections import Counter

    from distilbert_jax import pretrained

    path, hf = hf_dir("masked_lm")
    out = tmp_path / "shards"
    hf.save_pretrained(out, max_shard_size="50KB")
    reads, opened = Counter(), Counter()
    real_get, real_open = pretrained.LazyState.__getitem__, pretrained._open_safetensors
    monkeypatch.setattr(pretrained.LazyState, "__getitem__", lambda self, k: reads.update([k]) or real_get(self, k))
    monkeypatch.setattr(pretrained, "_open_safetensors", lambda p: opened.update([p]) or real_open(p))
    dj.from_pretrained(out)
    assert reads and max(reads.values()) == 1  # no tensor read twice
    shards = list(out.glob("*.safetensors"))
    assert len(shards) > 2 and all(opened[str(s)] == 1 for s in shards)  # each shard opened once


def test_mismatched_head_sizes(hf_dir):
    path, _ = hf_dir("sequence_classification")  # 3 labels
    with pytest.raises(dj.WeightsError, match=r"head params only: ignore_mismatched_sizes=True") as err:
        dj.from_pretrained(path, "multiple_choice")
    assert "classifier.weight: checkpoint (32, 3) vs model (32, 1)" in str(err.value)
    with pytest.warns(UserWarning, match="classifier.bias, classifier.weight"):
        model, variables, report = dj.from_pretrained(path, "multiple_choice", ignore_mismatched_sizes=True,
                                                      return_report=True)  # fmt: skip
    assert variables["params"]["classifier"]["kernel"].shape == (32, 1)
    assert any("re-initialised" in n for n in report.notes)
    state = dj.load_state_dict(path)  # the encoder and pre_classifier still come from the checkpoint
    np.testing.assert_array_equal(variables["params"]["pre_classifier"]["kernel"], state["pre_classifier.weight"].T)
    bad = dict(state, **{"distilbert.embeddings.LayerNorm.weight": np.ones(5, np.float32)})
    with pytest.raises(dj.WeightsError, match=r"mis-shaped keys \(1\): "):  # the encoder is never re-initialised
        dj.hf_to_params(bad, model, ignore_mismatched_sizes=True)
