"""`DistilBertConfig.qkv_dim`: attention width apart from the hidden size."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import distilbert_jax as dj


def test_qkv_dim_defaults_to_dim_and_normalises():
    c = dj.small_config()
    assert c.qkv_dim is None and c.attention_dim == c.dim and c.transformers_compatible
    assert dj.small_config(qkv_dim=32) == c  # qkv_dim == dim is the tied (default) config
    assert "qkv_dim" not in c.to_hf()
    wide = dj.small_config(qkv_dim=48, n_heads=4)
    assert wide.attention_dim == 48 and wide.head_dim == 12 and wide.to_hf()["qkv_dim"] == 48
    assert dj.DistilBertConfig.from_hf(wide.to_hf()) == wide
    assert wide.replace(dim=48).qkv_dim is None  # replace keeps the invariant


@pytest.mark.parametrize("bad, match", [(dict(qkv_dim=30, n_heads=4), r"n_heads \(4\) must divide qkv_dim \(30\)"),
                                        (dict(qkv_dim=-8), "qkv_dim must be a positive int")])  # fmt: skip
def test_bad_qkv_dim(bad, match):
    with pytest.raises(ValueError, match=match):
        dj.small_config(**bad)


def test_qkv_dim_shapes_and_round_trip(tmp_path):
    config = dj.small_config(qkv_dim=48, n_heads=6)
    model = dj.build_model(config, "masked_lm")
    params = dj.init_params(model, 1)
    attn = params["params"]["distilbert"]["transformer"]["layer"]["0"]["attention"]
    assert attn["q_lin"]["kernel"].shape == (32, 48) and attn["out_lin"]["kernel"].shape == (48, 32)
    ids = jnp.asarray(np.random.default_rng(0).integers(0, 1000, (2, 9)), jnp.int32)
    out = model.apply(params, ids, jnp.ones_like(ids), output_attentions=True)
    assert out.attentions[0].shape == (2, 6, 9, 9)
    dj.save_pretrained(tmp_path / "m", model, params)
    model2, params2 = dj.from_pretrained(tmp_path / "m")
    assert model2.config == config
    out2 = model2.apply(params2, ids, jnp.ones_like(ids))
    np.testing.assert_array_equal(np.asarray(out.logits), np.asarray(out2.logits))
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params2)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_export_for_transformers_refused_with_reason(tmp_path):
    model = dj.build_model(dj.small_config(qkv_dim=48), "masked_lm")
    params = dj.init_params(model, 0)
    with pytest.raises(ValueError, match=r"qkv_dim=48 differs from dim=32: transformers' DistilBERT ties"):
        dj.save_pretrained(tmp_path / "m", model, params, for_transformers=True)
    tied = dj.build_model(dj.small_config(), "masked_lm")
    dj.save_pretrained(tmp_path / "t", tied, dj.init_params(tied, 0), for_transformers=True)  # allowed
