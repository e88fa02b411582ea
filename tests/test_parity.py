"""Numerical parity with PyTorch `transformers` (fp32, tol 1e-4) per head and per depth."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import distilbert_jax as dj
from bench import parity
from bench.common import random_inputs

HEADS = list(dj.HEADS)


@pytest.mark.parametrize("head", HEADS)
def test_head_parity_every_depth(hf_dir, head):
    path, hf = hf_dir(head)
    model, variables = dj.from_pretrained(path, head)
    ids, mask = random_inputs(3, 24, 1000, seed=1, choices=3 if head == "multiple_choice" else None)
    results = parity.compare(hf, model, variables, ids, mask, head)
    names = [name for name, _, _ in results]
    assert "hidden[embeddings]" in names and "hidden[layer 2]" in names  # embeddings, each block
    if head != "base":
        assert any("logits" in n for n in names)
    for name, diff, scale in results:
        assert scale > 1e-3, name  # the reference is not trivially zero
        assert diff <= 1e-4, (head, name, diff)


@pytest.mark.parametrize("config_kw", [dict(sinusoidal_pos_embds=True), dict(activation="relu"),
                                       dict(activation="gelu_new", n_heads=2)])
def test_config_variants_parity(hf_dir, config_kw):
    path, hf = hf_dir("masked_lm", **config_kw)
    model, variables = dj.from_pretrained(path)
    ids, mask = random_inputs(2, 16, 1000, seed=2)
    for name, diff, _ in parity.compare(hf, model, variables, ids, mask, "masked_lm"):
        assert diff <= 1e-4, (config_kw, name, diff)


def test_sinusoidal_table_used_when_key_absent(hf_dir):
    path, hf = hf_dir("base", sinusoidal_pos_embds=True)
    state = dj.load_state_dict(path)
    del state["embeddings.position_embeddings.weight"]
    config = dj.DistilBertConfig.from_json_file(path)
    model = dj.build_model(config)
    variables, report = dj.hf_to_params(state, model)
    table = np.asarray(variables["params"]["embeddings"]["position_embeddings"]["embedding"])
    np.testing.assert_allclose(table, hf.embeddings.position_embeddings.weight.detach().numpy(), atol=1e-6)
    assert any("sinusoidal" in n for n in report.notes)


def test_big_parity_cli():
    """The standard 66M-parameter DistilBERT through the parity CLI (one head to keep CI fast)."""
    assert parity.main(["big", "--head", "masked_lm", "--batch", "2", "--seq-len", "32"]) == 0


def test_parity_cli_model_dir(hf_dir, capsys):
    path, _ = hf_dir("question_answering")
    assert parity.main(["--model-dir", path, "--seq-len", "16"]) == 0
    assert "all PASS" in capsys.readouterr().out


def test_bf16_close_to_fp32_and_finite(hf_dir):
    path, _ = hf_dir("masked_lm")
    m32, variables = dj.from_pretrained(path)
    m16, _ = dj.from_pretrained(path, dtype=jnp.bfloat16)
    ids, mask = random_inputs(2, 32, 1000, seed=3)
    a = m32.apply(variables, ids, mask).logits
    b = m16.apply(variables, ids, mask).logits
    assert b.dtype == jnp.float32 and bool(jnp.isfinite(b).all())
    assert float(jnp.abs(a - b).max()) < 0.1 * float(jnp.abs(a).max())
    leaves = jax.tree_util.tree_leaves(variables)
    assert all(leaf.dtype == jnp.float32 for leaf in leaves)  # params stay float32
