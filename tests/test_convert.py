"""`python -m distilbert_jax.convert`: pytorch_model.bin (single and sharded) -> safetensors, loaded
with weights_only=True; clear errors for what cannot be converted."""

import json
import os
import pickle
import sys

import numpy as np
import pytest
import torch

import distilbert_jax as dj
from distilbert_jax import convert


def test_bin_round_trip_single_and_sharded(hf_dir, tmp_path, capsys):
    path, hf = hf_dir("masked_lm", arch="bert")
    reference, ref_vars = dj.from_pretrained(path)
    ids = np.array([[2, 17, 99, 5]])
    want = np.asarray(reference.apply(ref_vars, ids).logits)
    # single pytorch_model.bin (old-style LayerNorm.gamma/beta keys, as TF-era BERT checkpoints): .bin only
    # -> from_pretrained names the command; after converting, it loads the same model
    single = tmp_path / "single"
    hf.config.save_pretrained(single)
    state = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
             for k, v in hf.state_dict().items()}  # fmt: skip
    torch.save(state, single / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match=f"python -m distilbert_jax.convert {single}"):
        dj.from_pretrained(single)
    assert convert.main([str(single)]) == 0  # what `python -m distilbert_jax.convert DIR` runs
    assert "model.safetensors" in capsys.readouterr().out and (single / "model.safetensors").is_file()
    model, variables = dj.from_pretrained(single)
    np.testing.assert_array_equal(np.asarray(model.apply(variables, ids).logits), want)
    # sharded .bin with its index, as transformers wrote them before safetensors
    sharded = tmp_path / "sharded"
    hf.config.save_pretrained(sharded)
    keys = list(hf.state_dict())
    halves = {"pytorch_model-00001-of-00002.bin": keys[: len(keys) // 2], "pytorch_model-00002-of-00002.bin": keys[len(keys) // 2 :]}
    for name, part in halves.items():
        torch.save({k: hf.state_dict()[k] for k in part}, sharded / name)
    index = {"metadata": {}, "weight_map": {k: name for name, part in halves.items() for k in part}}
    (sharded / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    rows = convert.convert(sharded)
    assert [r["file"] for r in rows] == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                                         "model.safetensors.index.json"]  # fmt: skip
    model, variables = dj.from_pretrained(sharded)
    np.testing.assert_array_equal(np.asarray(model.apply(variables, ids).logits), want)
    with pytest.raises(convert.ConvertError, match="already has"):
        convert.convert(sharded)


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_convert_refuses_what_it_cannot_read(tmp_path, monkeypatch):
    (tmp_path / "pytorch_model.bin").write_bytes(pickle.dumps({"w": _Payload()}))
    with pytest.raises(convert.ConvertError, match="weights-only"):  # never unpickles arbitrary objects
        convert.convert(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(convert.ConvertError, match="no pytorch_model.bin or pytorch_model.bin.index.json"):
        convert.convert(tmp_path / "empty")
    monkeypatch.setitem(sys.modules, "torch", None)  # torch not installed
    with pytest.raises(convert.ConvertError, match="needs PyTorch, which is not installed"):
        convert.convert(tmp_path, overwrite=True)
    assert convert.main([str(tmp_path), "--overwrite"]) == 2


def test_failed_sharded_conversion_leaves_nothing_and_names_the_refused_global(hf_dir, tmp_path):
    """Issue 21 item 5: shard 2 fails -> no model-00001-of-00002.safetensors is left to block the rerun; the
    refusal of a non-tensor pickle names the offending global plainly (no terminal escapes)."""
    _, hf = hf_dir("masked_lm", arch="bert")
    src = tmp_path / "sharded"
    hf.config.save_pretrained(src)
    state = hf.state_dict()
    keys = list(state)
    halves = {"pytorch_model-00001-of-00002.bin": keys[: len(keys) // 2],
              "pytorch_model-00002-of-00002.bin": keys[len(keys) // 2 :]}  # fmt: skip
    torch.save({k: state[k] for k in halves["pytorch_model-00001-of-00002.bin"]}, src / "pytorch_model-00001-of-00002.bin")
    torch.save({"w": _Payload()}, src / "pytorch_model-00002-of-00002.bin")  # torch's message has \x1b[1m
    index = {"metadata": {}, "weight_map": {k: name for name, part in halves.items() for k in part}}
    (src / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    before = sorted(os.listdir(src))
    with pytest.raises(convert.ConvertError) as info:
        convert.convert(src)
    message = str(info.value)
    assert "posix.system" in message and "pytorch_model-00002-of-00002.bin" in message, message
    assert "\x1b" not in message, repr(message)
    assert sorted(os.listdir(src)) == before  # nothing written, no temporary left
    (src / "pytorch_model-00002-of-00002.bin").write_bytes(pickle.dumps({"w": _Payload()}, protocol=4))
    with pytest.raises(convert.ConvertError, match=r"refused: posix\.system"):  # torch only says "operand 149"
        convert.convert(src)
    out = tmp_path / "elsewhere"
    with pytest.raises(convert.ConvertError):
        convert.convert(src, out)
    assert not out.exists()  # the output directory it made is gone again
    torch.save({k: state[k] for k in halves["pytorch_model-00002-of-00002.bin"]}, src / "pytorch_model-00002-of-00002.bin")
    rows = convert.convert(src)  # the rerun needs no --overwrite
    assert [r["file"] for r in rows][-1] == "model.safetensors.index.json"
    assert sorted(os.listdir(src)) == sorted(before + [r["file"] for r in rows])
