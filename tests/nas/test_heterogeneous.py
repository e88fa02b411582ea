"""Heterogeneous layers (HAT): per-layer heads / qkv and FFN width, hidden shared, in the SuperNet,
extraction, directories, mutations and the latency features."""

import dataclasses

import jax
import numpy as np
import pytest

import distilbert_jax as dj
from distilbert_jax.nas import Arch, SearchSpace, SuperNet
from distilbert_jax.nas.io import extract_to_dir, save_supernet
from distilbert_jax.nas.predictor import encoder_flops, features
from distilbert_jax.nas.search import mutate
from distilbert_jax.nas.step import ArchEvaluator

from .conftest import TINY_KD_SPACE, TINY_SPACE, noisy
from .test_supernet import _check_extraction, _inputs

HET = {**TINY_SPACE, "heterogeneous": True}


@pytest.fixture(scope="module")
def het_supernet():
    sn = SuperNet(SearchSpace.from_dict(HET), dj.small_config(vocab_size=100, max_position_embeddings=32), 2)
    return sn, noisy(sn.init(0))


def test_extraction_equals_supernet_per_layer(het_supernet):
    sn, params = het_supernet
    rng = np.random.default_rng(3)
    archs = [Arch(3, 48, (1, 4, 2), (16, 64, 32), (128, 32, 64)), Arch(2, 64, (4, 1), (64, 16), (32, 128))]
    archs += [a for a in (sn.space.sample(rng) for _ in range(12)) if not a.uniform][:4]
    _check_extraction(dataclasses.replace(sn, buckets=1), params, archs)
    _check_extraction(sn, params, archs)
    kd = SuperNet(SearchSpace.from_dict({**TINY_KD_SPACE, "heterogeneous": True}),
                  dj.small_config(vocab_size=100, max_position_embeddings=32), 1)  # fmt: skip
    _check_extraction(kd, noisy(kd.init(1), 1), [Arch(2, 48, 4, (16, 48), (64, 32)), Arch(2, 32, 4, (40, 24), 32)])


def test_uniform_archs_are_unchanged_by_a_heterogeneous_space(het_supernet, tiny_supernet):
    sn, params = het_supernet
    uniform_sn, _ = tiny_supernet
    arch = Arch(2, 48, 2, 32, 64)
    assert sn.config(arch) == uniform_sn.config(arch) and not sn.config(arch).heterogeneous
    assert sn.bucket(arch) == uniform_sn.bucket(arch)


def test_bounded_compilations_with_heterogeneous_archs(het_supernet):
    sn, params = het_supernet
    evaluator = ArchEvaluator(sn)
    ids, mask = _inputs()
    labels = np.where(np.asarray(ids) % 4 == 0, np.asarray(ids), -100)
    labels[:, 0] = np.asarray(ids)[:, 0]
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    archs = list(dict.fromkeys(sn.space.arch_at(0, i) for i in range(24)))
    assert sum(not a.uniform for a in archs) >= 10
    losses = [evaluator(params, a, [batch])["loss"] for a in archs]
    assert all(np.isfinite(losses)) and len(set(losses)) > len(archs) // 2
    assert evaluator.compilations() <= len(sn.all_buckets()) == 8 < len(archs)


def test_heterogeneous_arch_saves_reloads_exactly_and_refuses_transformers(het_supernet, tmp_path):
    sn, params = het_supernet
    save_supernet(tmp_path / "sn", sn, params)
    arch, config = extract_to_dir(tmp_path / "sn", "L3_H48_A1-4-2_Q16-64-32_F128-32-64", tmp_path / "sub")
    assert config.heterogeneous and config.layer_hidden_dims == (128, 32, 64) and not config.transformers_compatible
    model, variables = dj.from_pretrained(tmp_path / "sub")
    assert model.config == config
    want_model, want = sn.extract(params, arch)
    ids, mask = _inputs()
    np.testing.assert_array_equal(model.apply(variables, ids, mask).logits, want_model.apply(want, ids, mask).logits)
    shapes = jax.tree.map(np.shape, variables["params"]["distilbert"]["transformer"]["layer"])
    assert [shapes[str(i)]["ffn"]["lin1"]["kernel"] for i in range(3)] == [(48, 128), (48, 32), (48, 64)]
    assert [shapes[str(i)]["attention"]["q_lin"]["kernel"] for i in range(3)] == [(48, 16), (48, 64), (48, 32)]
    with pytest.raises(ValueError, match="one FFN width .* per model, so it cannot load this heterogeneous model"):
        dj.save_pretrained(tmp_path / "hf", model, variables, for_transformers=True)


def test_config_per_layer_fields():
    c = dj.small_config(n_layers=2, layer_n_heads=[2, 4], layer_qkv_dims=[16, 32], layer_hidden_dims=[40, 80])
    assert c.heterogeneous and (c.n_heads, c.hidden_dim) == (4, 80) and c.layer(1).hidden_dim == 80
    assert c.layer(0) == dj.small_config(n_heads=2, qkv_dim=16, hidden_dim=40)
    assert dj.DistilBertConfig.from_hf(c.to_hf()) == c
    uniform = dj.small_config(layer_hidden_dims=[74, 74])  # all alike: the uniform config, same spelling
    assert uniform == dj.small_config() and uniform.layer(1) is uniform and "layer_hidden_dims" not in uniform.to_hf()
    with pytest.raises(ValueError, match="layer_n_heads has 3 values but n_layers is 2"):
        dj.small_config(layer_n_heads=[4, 4, 4])
    with pytest.raises(ValueError, match=r"layer 0: n_heads \(3\) must divide its attention width \(32\)"):
        dj.small_config(layer_n_heads=[3, 4])


def test_mutations_move_each_layer_and_stay_in_the_space():
    space = SearchSpace.from_dict(HET)
    rng = np.random.default_rng(0)
    parent = Arch(2, 48, (1, 4), (16, 64), (32, 128))
    children = [mutate(parent, space, rng) for _ in range(200)]
    assert all(space.check(c) == c for c in children)
    assert any(c.layer_ffn[0] != 32 and c.layer_ffn[1] == 128 for c in children if c.layers == 2)  # one layer moved
    assert any(c.layers == 3 and c.layer_ffn[2] in space.ffn_values for c in children)
    uniform = SearchSpace.from_dict(TINY_SPACE)  # a uniform space keeps every child uniform
    assert all(mutate(Arch(2, 48, 2, 32, 64), uniform, rng).uniform for _ in range(50))


def test_latency_features_are_per_layer():
    space = SearchSpace.from_dict(HET)
    a, b = Arch(2, 48, (1, 4), (16, 64), (32, 128)), Arch(2, 48, (4, 1), (64, 16), (128, 32))
    assert encoder_flops(a) == encoder_flops(b) == (encoder_flops(Arch(1, 48, 1, 16, 32)) + encoder_flops(Arch(1, 48, 4, 64, 128)))
    np.testing.assert_allclose(features([a], space)[0], np.array([2, 48, 2.5, 40, 80]) / [3, 64, 4, 64, 128], rtol=1e-6)


def test_evolved_search_admits_per_layer_mutants_by_predicted_latency():
    from distilbert_jax.nas.candidates import select_candidates
    from distilbert_jax.nas.search import search

    space = SearchSpace.from_dict({**TINY_SPACE, "heterogeneous": True, "layer_num_space": [1, 4]})

    def predict(archs):
        return np.array([sum(a.hidden * (q + f) for q, f in zip(a.layer_qkv, a.layer_ffn)) for a in archs], float) / 1e3

    # candidates are scored on a sample (uniform archs + random per-layer ones) of the 209712 archs
    cands = select_candidates(space, predict, "30ms", 100.0, meta={"device": "synthetic"}, limit=3000)
    assert cands.meta["scored"] == 3000 < cands.meta["space_size"] == 209712
    target = Arch(4, 64, (4, 1, 2, 1), (64, 16, 32, 16), (32, 128, 64, 96))
    loss = lambda a: float(sum(abs(x - y) for x, y in zip(a.layer_ffn + a.layer_qkv, target.layer_ffn + target.layer_qkv)))  # noqa: E731
    result = search("evolved", cands, loss, budget=75, seed=0, space=space, predict=predict, progress=False)
    index = cands.index()
    admitted = [e for e in result.evaluations if e.arch not in index]
    lo, hi = cands.window_ms
    assert admitted and all(lo <= e.predicted_ms <= hi and space.check(e.arch) == e.arch for e in admitted)
    assert len({e.arch for e in result.evaluations}) == len(result.evaluations) == 75


def test_latency_step_and_candidates_on_a_heterogeneous_space(het_supernet, tmp_path):
    from distilbert_jax.nas.latency import candidates_from_latency, run_latency
    from distilbert_jax.nas.predictor import MLPSettings, load_predictor

    save_supernet(tmp_path / "sn", *het_supernet)
    run = run_latency(tmp_path / "sn", tmp_path / "lat", n=10, seq=4, rounds=1, calls=1, reference=Arch(2, 64, 4, 64, 128),
                      settings=MLPSettings(width=16, steps=50), progress=False)  # fmt: skip
    assert any(not a.uniform for a in run.dataset.archs) and run.report["chosen"] in ("layer_sum", "mlp", "flops")
    predictor = load_predictor(tmp_path / "lat" / "predictor")
    het = "L3_H48_A1-4-2_Q16-64-32_F128-32-64"
    ms = float(predictor.predict([het])[0])
    cands = candidates_from_latency(tmp_path / "lat", f"{ms}ms", window=(0.5, 2.0))
    assert cands.meta["scored"] == cands.meta["space_size"] == het_supernet[0].space.size()
    assert any(not a.uniform for a in cands.archs)
