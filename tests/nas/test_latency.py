"""The latency dataset, the latency predictor and the `latency` / `candidates` commands, on tiny SuperNets
(tiny batch x seq, few rounds; no assertion on timings)."""

import json
import warnings

import numpy as np
import pytest

import distilbert_jax as dj
from distilbert_jax.nas import Arch, ArchError, SearchSpace, SuperNet
from distilbert_jax.nas.candidates import ConstraintError, read_candidates
from distilbert_jax.nas.cli import main
from distilbert_jax.nas.io import save_supernet
from distilbert_jax.nas.latency import (DeviceMismatchWarning, LatencyDataError, candidates_from_latency,
                                        device_info, measure_latencies, read_dataset, run_latency, sample_archs)
from distilbert_jax.nas.predictor import (FlopsBaseline, LatencyPredictor, MLPSettings, PredictorError,
                                          PredictorFileError, encoder_flops, load_predictor, mape, spearman)

from .conftest import TINY_KD_SPACE, TINY_SPACE, noisy

SMALL_REF = Arch(2, 64, 4, 64, 128)  # stands in for BERT-base in the tests (same code path, fast to compile)
FAST = MLPSettings(width=32, steps=800)


def test_measure_latencies_times_every_arch_and_the_reference(tiny_supernet):
    sn, params = tiny_supernet
    archs = [sn.space.smallest(), sn.space.largest(), Arch(2, 48, 2, 32, 64)]
    lat = measure_latencies(archs, sn, params, batch=1, seq=8, rounds=2, calls=1, reference=SMALL_REF, progress=False)
    assert lat.archs == tuple(archs) and lat.ms.shape == (3,) and lat.rounds_ms.shape == (2, 3)
    assert np.all(lat.ms > 0) and np.all(np.isfinite(lat.spread)) and lat.reference_ms > 0
    assert lat.meta["device"] == device_info()["device"] and "cores" in lat.meta["device"]
    assert (lat.meta["batch"], lat.meta["seq"], lat.meta["reference_arch"]) == (1, 8, SMALL_REF.to_json())
    no_ref = measure_latencies(archs[:1], sn, params, seq=4, rounds=1, reference=None, progress=False)
    assert no_ref.reference_ms is None and no_ref.ms.shape == (1,)
    with pytest.raises(ArchError, match="hidden"):
        measure_latencies([Arch(1, 40, 1, 16, 32)], sn, params, seq=4, rounds=1, progress=False)
    with pytest.raises(LatencyDataError, match="max_position_embeddings"):
        measure_latencies(archs[:1], sn, params, seq=64, rounds=1, progress=False)


def test_sample_archs_is_seeded_distinct_and_bounded(tiny_supernet):
    space = tiny_supernet[0].space
    a = sample_archs(space, 20, seed=3)
    assert a == sample_archs(space, 20, seed=3) and len(set(a)) == 20 and all(space.check(x) == x for x in a)
    with pytest.raises(LatencyDataError, match=f"space of {space.size()}"):
        sample_archs(space, space.size() + 1)


def _synthetic_ms(archs):
    # a latency-like function: fixed overhead + per-layer cost, non-linear in the widths
    return np.array([0.05 + a.layers * (0.02 + 2e-6 * a.hidden * (a.qkv + a.ffn) + 1e-3 * a.heads) ** 1.2 for a in archs])


def test_predictor_beats_a_constant_and_reloads_exactly(tmp_path):
    space = SearchSpace.from_dict({"layer_num_space": [1, 4], "hidden_size_space": [64, 256], "hidden_step": 16,
                                   "head_num_space": [1, 4], "intermediate_size_space": [64, 512],
                                   "intermediate_step": 32})  # fmt: skip
    archs = sample_archs(space, 120, seed=0)
    ms = _synthetic_ms(archs)
    train, test = slice(0, 90), slice(90, None)
    pred = LatencyPredictor.fit(archs[train], ms[train], space, seed=0, settings=FAST, meta={"reference_ms": 9.0})
    got = pred.predict(archs[test])
    constant = np.full_like(got, np.exp(np.log(ms[train]).mean()))
    assert mape(got, ms[test]) < 0.25 * mape(constant, ms[test]) and spearman(got, ms[test]) > 0.95
    pred.save(tmp_path / "p")
    again = LatencyPredictor.load(tmp_path / "p")
    assert np.array_equal(again.predict(archs), pred.predict(archs))
    assert again.reference_ms == 9.0 and again.space == space and again.meta["n_train"] == 90
    assert pred.predict([]).shape == (0,)
    with pytest.raises(PredictorError, match="at least"):
        LatencyPredictor.fit(archs[:3], ms[:3], space)
    # corrupt / missing files are named
    (tmp_path / "p" / "predictor.json").write_text("{not json")
    with pytest.raises(PredictorFileError, match="predictor.json is malformed"):
        LatencyPredictor.load(tmp_path / "p")
    with pytest.raises(PredictorFileError, match="nowhere.predictor.json does not exist"):
        LatencyPredictor.load(tmp_path / "nowhere")


def test_flops_baseline_and_metrics():
    archs = sample_archs(SearchSpace.from_dict(TINY_SPACE), 30, seed=1)
    ms = 3e-7 * np.array([encoder_flops(a, 2, 16) for a in archs], float) ** 0.9
    base = FlopsBaseline.fit(archs, ms, 2, 16)
    assert base.slope == pytest.approx(0.9) and mape(base.predict(archs), ms) < 1e-9
    assert spearman(np.array([1, 2, 3, 4]), np.array([10, 20, 30, 35])) == pytest.approx(1.0)
    assert spearman(np.array([1, 2, 3]), np.array([3, 2, 1])) == pytest.approx(-1.0)


@pytest.fixture(scope="module")
def supernet_dir(tmp_path_factory, tiny_supernet):
    path = tmp_path_factory.mktemp("latency") / "run"
    save_supernet(path / "supernet", *tiny_supernet)  # a training run directory holding supernet/
    return path


def test_cli_latency_then_candidates(supernet_dir, tmp_path, capsys):
    out = tmp_path / "lat"
    args = ["latency", "--supernet", str(supernet_dir), "--n", "12", "--seq", "8", "--rounds", "2",
            "--reference", json.dumps(SMALL_REF.to_json()), "--out", str(out), "--compile-cache", "off"]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "MLP predictor" in printed and "FLOPs baseline" in printed and "noise floor" in printed
    for f in ("latencies.jsonl", "report.json", "latency.png", "predictor/predictor.json", "predictor/predictor.npz"):
        assert (out / f).is_file(), f
    data = read_dataset(out)
    assert len(data.archs) == 12 and data.held_out.sum() == 2 and np.all(np.isfinite(data.second_ms[data.held_out]))
    assert data.meta["seq"] == 8 and data.meta["reference_ms"] > 0 and data.space == SearchSpace.from_dict(TINY_SPACE)
    report = json.loads((out / "report.json").read_text())
    assert {"layer_sum", "mlp", "flops", "noise_floor", "noise_floor_drift_removed", "pass_drift", "reference_ms",
            "chosen", "layer_table"} <= set(report)  # fmt: skip
    assert report["n_train"] == 10 and 0 <= report["mlp"]["mape"] and -1 <= report["mlp"]["spearman"] <= 1
    for name in ("layer_sum", "mlp", "flops", "noise_floor"):
        assert 0 <= report[name]["within_10"] <= 1
    # the chosen predictor is the best on the held-out archs, saved as predictor/; every one under predictors/
    assert report["chosen"] == min(("layer_sum", "mlp", "flops"), key=lambda k: report[k]["mape"])
    assert load_predictor(out / "predictor").kind == report["chosen"]
    assert {load_predictor(out / "predictors" / k).kind for k in ("layer_sum", "mlp", "flops")} == {"layer_sum", "mlp", "flops"}
    assert "per-layer sum" in printed and "within ±10 %" in printed and "chosen predictor" in printed
    assert not (out / "xla_cache").exists()  # --compile-cache off

    # a constraint in the middle of the reachable range, as a speedup and as ms
    pred = load_predictor(out / "predictor")
    mid = float(np.median(pred.predict(list(pred.space.archs()))))
    for constraint in (f"{pred.reference_ms / mid:.6f}x", f"{mid:.6f}ms"):
        assert main(["candidates", "--latency", str(out), "--constraint", constraint, "--out", str(tmp_path / "c.jsonl")]) == 0
        cands = read_candidates(tmp_path / "c.jsonl")
        lo, hi = cands.window_ms
        assert len(cands) > 0 and np.all((cands.predicted_ms >= lo) & (cands.predicted_ms <= hi))
        assert cands.meta["device"] == device_info()["device"] and cands.meta["reference_ms"] == pred.reference_ms
    assert "candidates / space" in capsys.readouterr().out

    # unreachable: exit 2 with the reachable range; nothing hangs
    assert main(["candidates", "--latency", str(out), "--constraint", "1e6", "--out", str(tmp_path / "x.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "reachable" in err and "speedup" in err and not (tmp_path / "x.jsonl").exists()

    # latencies from another machine: a warning naming both, candidates still written
    config = out / "predictor" / "predictor.json"
    cfg = json.loads(config.read_text())
    cfg["meta"]["device"] = "Some Other CPU, 64 cores"
    config.write_text(json.dumps(cfg))
    assert main(["candidates", "--latency", str(out), "--constraint", f"{mid}ms", "--out", str(tmp_path / "w.jsonl")]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "Some Other CPU" in err and device_info()["device"] in err
    assert (tmp_path / "w.jsonl").is_file()


def test_cli_bad_input(supernet_dir, tmp_path, capsys):
    assert main(["candidates", "--latency", str(tmp_path / "none"), "--constraint", "7", "--out", str(tmp_path / "c")]) == 2
    assert "none does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["candidates", "--latency", str(tmp_path / "empty"), "--constraint", "7", "--out", str(tmp_path / "c")]) == 2
    assert "predictor.json does not exist" in capsys.readouterr().err
    assert main(["latency", "--supernet", str(supernet_dir), "--n", "3", "--out", str(tmp_path / "l"),
                 "--compile-cache", "off"]) == 2  # fmt: skip
    assert "at least 10 archs" in capsys.readouterr().err
    assert main(["latency", "--supernet", str(tmp_path), "--n", "20", "--out", str(tmp_path / "l"), "--compile-cache", "off"]) == 2
    assert "neither a SuperNet directory" in capsys.readouterr().err
    assert main(["candidates", "--latency", str(tmp_path), "--constraint", "fast", "--out", str(tmp_path / "c")]) == 2
    (tmp_path / "latencies.jsonl").write_text('{"meta": {"space": {}}}\n')
    with pytest.raises(LatencyDataError, match="latencies.jsonl, line 1: malformed the meta line"):
        read_dataset(tmp_path)


def test_kd_mode_latency_and_candidates(tmp_path):
    sn = SuperNet(SearchSpace.from_dict(TINY_KD_SPACE), dj.small_config(vocab_size=100, max_position_embeddings=32), 2)
    save_supernet(tmp_path / "sn", sn, noisy(sn.init(1)))
    run = run_latency(tmp_path / "sn", tmp_path / "lat", n=10, seq=4, rounds=1, calls=1, reference=SMALL_REF,
                      settings=FAST, progress=False)  # fmt: skip
    assert run.dataset.space.mode == "kd" and run.report["n_held_out"] == 2
    everything = list(sn.space.archs())
    predicted = run.predictor.predict(everything)
    quickest, fastest = everything[int(np.argmin(predicted))], float(predicted.min())
    with warnings.catch_warnings(record=True) as record:  # no device warning here
        warnings.simplefilter("always")
        cands = candidates_from_latency(tmp_path / "lat", f"{fastest}ms", tmp_path / "c.jsonl", window=(0.85, 1.5))
    assert not [w for w in record if issubclass(w.category, DeviceMismatchWarning)]
    assert quickest in cands.index() and all(a.heads == 4 for a in cands.archs)
    with pytest.raises(ConstraintError, match="reachable"):
        candidates_from_latency(tmp_path / "lat", f"{fastest / 10}ms")


def _linear_table(space):
    # a table whose entries are linear in each width: interpolation between the timed points is exact
    from distilbert_jax.nas.layer_latency import LayerTable, grid_points

    h = np.array(grid_points(space.hidden_values, 3), float)
    att = grid_points(space.attention_choices(), 3)
    q, f = np.array([a[1] for a in att], float), np.array(grid_points(space.ffn_values, 3), float)
    return LayerTable(h, np.array([a[0] for a in att], float), q, f, 0.01 * h, 1e-4 * np.outer(h, q),
                      2e-4 * np.outer(h, f), 0.005, 1, 8)  # fmt: skip


def test_layer_sum_predictor_sums_layers_and_takes_heterogeneous_archs(tmp_path):
    from distilbert_jax.nas.layer_latency import LayerSumPredictor

    space = SearchSpace.from_dict({**TINY_SPACE, "heterogeneous": True})
    table = _linear_table(space)
    expect = lambda a: 0.01 * a.hidden + sum(1e-4 * a.hidden * q + 2e-4 * a.hidden * f  # noqa: E731
                                             for q, f in zip(a.layer_qkv, a.layer_ffn))
    archs = [space.sample(np.random.default_rng(i)) for i in range(30)]
    assert any(not a.uniform for a in archs)
    np.testing.assert_allclose(table.raw(archs), [expect(a) for a in archs], rtol=1e-9)
    ms = 0.2 + 1.5 * np.array([expect(a) for a in archs])  # a dispatch and a fusion factor
    pred = LayerSumPredictor.fit(table, archs, ms, space, {"reference_ms": 3.0, "device": "here"})
    assert (pred.c0, pred.c1, pred.c2) == (pytest.approx(0.2), pytest.approx(1.5), pytest.approx(0.0, abs=1e-9))
    np.testing.assert_allclose(pred.predict(archs), ms, rtol=1e-9)
    pred.save(tmp_path / "p")
    again = load_predictor(tmp_path / "p")
    assert again.kind == "layer_sum" and np.array_equal(again.predict(archs), pred.predict(archs))
    with pytest.raises(PredictorFileError, match="holds a 'layer_sum' predictor, not an MLP"):
        LatencyPredictor.load(tmp_path / "p")


def test_every_predictor_takes_any_arch_format_and_checks_its_space(tmp_path):
    from distilbert_jax.nas.layer_latency import LayerSumPredictor

    space = SearchSpace.from_dict(TINY_SPACE)
    archs = sample_archs(space, 20, seed=0)
    ms = _synthetic_ms(archs)
    predictors = [LatencyPredictor.fit(archs, ms, space, settings=FAST), FlopsBaseline.fit(archs, ms, 1, 8, space),
                  LayerSumPredictor.fit(_linear_table(space), archs, ms, space)]  # fmt: skip
    a = archs[3]
    for p in predictors:
        want = p.predict([a])
        for form in (str(a), a.to_json(), str(a.to_autotinybert()), json.dumps(a.to_json())):
            np.testing.assert_array_equal(p.predict([form]), want)
        with pytest.raises(ArchError, match=r"hidden \(sample_hidden_size\)=40 is not in the search space"):
            p.predict([Arch(1, 40, 1, 16, 32)])
        with pytest.raises(ArchError, match="accepted arch formats"):
            p.predict(["L1_H32"])
        with pytest.raises(ArchError, match="differs between layers"):
            p.predict(["L2_H32_A1_Q16_F32-64"])


def test_cli_latency_help_and_compile_cache_inside_out(supernet_dir, tmp_path, capsys, monkeypatch):
    import distilbert_jax.train.parallel as parallel

    with pytest.raises(SystemExit):
        main(["latency", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "median over them" not in text and "latency = the --quantile of them" in text
    assert "default 0.25" in text and "inside --out" in text and "~/.cache" not in text
    used = []
    monkeypatch.setattr(parallel, "enable_compile_cache", lambda d=None: used.append(d) or d)
    assert main(["latency", "--supernet", str(supernet_dir), "--n", "3", "--out", str(tmp_path / "l")]) == 2
    assert used == [str(tmp_path / "l" / "xla_cache")]


def test_layer_table_times_each_sub_layer_shape(tiny_supernet):
    from distilbert_jax.nas.layer_latency import measure_layer_table

    sn, _ = tiny_supernet
    table = measure_layer_table(sn.space, sn.base, seq=8, rounds=2, calls=1, progress=False)
    assert list(table.hidden) == [32, 48, 64] and list(table.qkv) == [16, 32, 48, 64] and list(table.ffn) == [32, 64, 96, 128]
    assert table.attn_ms.shape == (3, 4) and table.ffn_ms.shape == (3, 4) and table.emb_ms.shape == (3,)
    assert np.all(table.attn_ms > 0) and np.all(table.ffn_ms > 0) and table.dispatch_ms > 0
    small, large = sn.space.smallest(), sn.space.largest()
    raw = table.raw([small, large])
    # an arch is its embeddings + the timed sub-layers of each of its layers (exactly, at the grid's corners;
    # an ordering of the two times would be a timing assertion, which flaked under load)
    assert raw[0] == pytest.approx(table.emb_ms[0] + small.layers * (table.attn_ms[0, 0] + table.ffn_ms[0, 0]))
    assert raw[1] == pytest.approx(table.emb_ms[-1] + large.layers * (table.attn_ms[-1, -1] + table.ffn_ms[-1, -1]))
    assert raw[0] > 0
