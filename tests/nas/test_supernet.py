"""The SuperNet: exact extraction, bounded compilations, skipped layers, directories."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import distilbert_jax as dj
from distilbert_jax.nas import Arch, ArchArrays, SearchSpace, SuperNet
from distilbert_jax.nas.io import SuperNetDirError, extract_to_dir, load_supernet, save_supernet
from distilbert_jax.nas.step import ArchEvaluator

from .conftest import TINY_KD_SPACE, noisy


def _inputs(vocab=100, batch=3, seq=9, seed=0):
    rng = np.random.default_rng(seed)
    ids = jnp.asarray(rng.integers(5, vocab, (batch, seq)), jnp.int32)
    mask = jnp.asarray(np.arange(seq)[None, :] < np.array([seq, 5, 2])[:batch, None], jnp.int32)
    return ids, mask


def _check_extraction(sn, params, archs):
    apply = jax.jit(sn.apply, static_argnums=2, static_argnames="output_attention")
    ids, mask = _inputs(sn.base.vocab_size)
    for arch in archs:
        out = apply(params, ArchArrays.of(arch), sn.bucket(arch), ids, mask, output_attention=True)
        model, variables = sn.extract(params, arch)
        assert model.config.n_layers == arch.layers
        assert [model.config.layer(i).attention_dim for i in range(arch.layers)] == list(arch.layer_qkv)
        ref = model.apply(variables, ids, mask, output_attentions=True)
        np.testing.assert_allclose(out.logits, ref.logits, atol=1e-5, rtol=0, err_msg=str(arch))
        np.testing.assert_allclose(out.last_hidden_state[..., : arch.hidden], ref.last_hidden_state, atol=1e-5, rtol=0)
        assert not np.any(out.last_hidden_state[..., arch.hidden:])  # inactive units stay zero
        np.testing.assert_allclose(out.attention[:, : arch.layer_heads[-1]], ref.attentions[-1], atol=1e-5, rtol=0)


def test_extraction_equals_supernet_on_random_archs_and_extremes(tiny_supernet):
    sn, params = tiny_supernet
    rng = np.random.default_rng(1)
    archs = [sn.space.smallest(), sn.space.largest()] + [sn.space.sample(rng) for _ in range(8)]
    _check_extraction(dataclasses.replace(sn, buckets=1), params, archs)  # one program: every arch masked in it
    _check_extraction(sn, params, archs[:1] + archs[-2:])  # and across bucket edges


def test_extraction_kd_mode_head_sizes_vary():
    sn = SuperNet(SearchSpace.from_dict(TINY_KD_SPACE), dj.small_config(vocab_size=100, max_position_embeddings=32), 1)
    archs = [sn.space.smallest(), sn.space.largest(), Arch(2, 32, 4, 40, 64), Arch(1, 48, 4, 24, 32)]
    _check_extraction(sn, noisy(sn.init(1), 1), archs)  # head sizes 4, 12, 10, 6


def test_bounded_compilations_for_many_archs(tiny_supernet):
    sn, params = tiny_supernet
    evaluator = ArchEvaluator(sn)
    ids, mask = _inputs()
    labels = jnp.where(ids % 4 == 0, ids, -100).at[:, 0].set(ids[:, 0])
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    archs = list(dict.fromkeys(sn.space.arch_at(0, i) for i in range(24)))
    assert len(archs) >= 20
    losses = [evaluator(params, a, [batch])["loss"] for a in archs]
    assert all(np.isfinite(losses)) and len(set(losses)) > len(archs) // 2
    assert evaluator.compilations() <= len(sn.all_buckets()) == 8 < len(archs)


def test_skipped_layers_are_conditional_not_masked(tiny_supernet):
    sn, params = tiny_supernet
    arch = sn.space.largest()
    ids, mask = _inputs()
    jaxpr = jax.make_jaxpr(lambda p, a: sn.encode(p, a, sn.bucket(arch), ids, mask).last_hidden_state)(
        params, ArchArrays.of(arch))
    conds = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "cond"]
    assert len(conds) == sn.space.layer_values[-1] - 1  # every layer after the first behind a lax.cond


def test_supernet_dir_round_trip_extract_and_transformers(tiny_supernet, tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    sn, params = tiny_supernet
    save_supernet(tmp_path / "sn", sn, params)
    sn2, params2 = load_supernet(tmp_path / "sn")
    assert sn2.space == sn.space and sn2.buckets == sn.buckets
    ids, mask = _inputs()
    # qkv == hidden: a standard HF DistilBERT that transformers loads with the same outputs
    arch, config = extract_to_dir(tmp_path / "sn", "{'sample_layer_num': 2, 'sample_num_attention_heads': [4, 4], "
                                  "'sample_qkv_sizes': [64, 64], 'sample_hidden_size': 64, "
                                  "'sample_intermediate_sizes': [96, 96]}", tmp_path / "sub")  # fmt: skip
    assert config.transformers_compatible
    out = jax.jit(sn.apply, static_argnums=2)(params, ArchArrays.of(arch), sn.bucket(arch), ids, mask)
    hf = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "sub", attn_implementation="eager").eval()
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(np.asarray(ids), dtype=torch.long),
                 attention_mask=torch.tensor(np.asarray(mask))).logits.numpy()  # fmt: skip
    keep = np.asarray(mask, bool)
    np.testing.assert_allclose(np.asarray(out.logits)[keep], ref[keep], atol=1e-4, rtol=0)
    assert json.loads((tmp_path / "sub" / "arch.json").read_text())["arch"] == arch.to_json()
    # qkv != hidden: reloads exactly through distilbert_jax
    arch2, config2 = extract_to_dir(tmp_path / "sn", '{"layers": 3, "hidden": 48, "heads": 2, "qkv": 32, "ffn": 64}',
                                    tmp_path / "sub2")  # fmt: skip
    assert not config2.transformers_compatible
    model, variables = dj.from_pretrained(tmp_path / "sub2")
    out2 = jax.jit(sn.apply, static_argnums=2)(params, ArchArrays.of(arch2), sn.bucket(arch2), ids, mask)
    np.testing.assert_allclose(model.apply(variables, ids, mask).logits, out2.logits, atol=1e-5, rtol=0)


def test_supernet_dir_that_does_not_match_its_config(tiny_supernet, tmp_path):
    sn, params = tiny_supernet
    save_supernet(tmp_path / "sn", sn, params)
    path = tmp_path / "sn" / "search_space.json"
    data = json.loads(path.read_text())
    data["space"]["hidden_size_space"] = [32, 80]
    path.write_text(json.dumps(data))
    with pytest.raises(SuperNetDirError, match=r"config.json is not the largest arch .* dim: config.json 64 vs search space 80"):
        load_supernet(tmp_path / "sn")
    with pytest.raises(FileNotFoundError, match="not a SuperNet directory: no search_space.json"):
        load_supernet(tmp_path)


def test_cli_extract_takes_the_short_form_the_tables_print(tiny_supernet, tmp_path, capsys):
    from distilbert_jax.nas.cli import main

    sn, params = tiny_supernet
    save_supernet(tmp_path / "sn", sn, params)
    assert main(["extract", "--supernet", str(tmp_path / "sn"), "--arch", "L2_H48_A2_Q32_F64", "--out", str(tmp_path / "sub")]) == 0
    assert json.loads((tmp_path / "sub" / "arch.json").read_text())["arch"] == Arch(2, 48, 2, 32, 64).to_json()
    assert "extracted L2_H48_A2_Q32_F64" in capsys.readouterr().out
    assert main(["extract", "--supernet", str(tmp_path / "sn"), "--arch", "L2_H48_A2_Q32", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "accepted arch formats" in err and "L4_H256_A4_Q256_F512" in err and "ast." not in err
