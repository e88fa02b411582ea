"""The learned cost model (issue 18 item 2): records → splits → tokens → DistilBERT ranking model; metrics,
baselines, save/load, the CLI and its errors. Tiny synthetic records in the dataset schema (no IREE)."""

import dataclasses
import json
import os

import jax
import numpy as np
import pytest

from loaders.datasets import DataError
from loaders.schedules import (ScheduleSet, by_split, group_ids, read_records, same_group_pairs, subsample,
                               usable)
from rl import cost_learned as CL
from rl import costnet as C
from rl.costnet import baselines, search
from rl.costnet import features as F
from rl.costnet.metrics import group_metrics, group_ranks, ranking_metrics
from rl.costnet.model import init

from .costnet_synth import make_records, write_records

TINY = C.CostNetConfig(dim=16, n_layers=1, n_heads=2, hidden_dim=32, steps=300, groups=4, per_group=8, lr=3e-3)


@pytest.fixture(scope="module")
def records():
    return make_records(per_op=16, seed=0)


@pytest.fixture(scope="module")
def trained(records):
    parts = by_split(usable(records))
    data = ScheduleSet.build(parts["train"], C.encode)
    model, state, stats, hist = C.fit(TINY, data)
    return parts, model, state.params, stats, hist


def test_reader_skips_partial_tail_and_names_bad_lines(tmp_path, records):
    write_records(str(tmp_path), records[:5], partial_tail=True)
    assert len(read_records(str(tmp_path))) == 5                          # the cut-off last line is skipped
    with pytest.raises(DataError, match="do not exist"):
        read_records(str(tmp_path / "nowhere"))
    path = tmp_path / "records.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "{not json", lines[1]]) + "\n")
    with pytest.raises(DataError, match=r"records.jsonl:2: not a JSON record"):
        read_records(str(tmp_path))
    bad = dict(records[0])
    del bad["time_s"]
    path.write_text(json.dumps(bad) + "\n")
    with pytest.raises(DataError, match=r"lacks field\(s\) \['time_s'\]"):
        read_records(str(path))
    path.write_text("")
    with pytest.raises(DataError, match="no records"):
        read_records(str(path))


def test_usable_and_split_never_leak(records):
    bad = [dict(records[0], status="compile_error", time_s=None), dict(records[1], space="scalar")]
    assert len(usable(bad + records[:3])) == 3
    parts = by_split(usable(records))
    progs = {s: {r["program"] for r in parts[s]} for s in parts}
    assert not progs["train"] & progs["test"] and not progs["train"] & progs["val"]
    assert progs["test"] == {"bert_qkv_b2s128", "bert_ffn1_b2s128"}
    with pytest.raises(DataError, match="would leak"):
        by_split([records[0], dict(records[1], split="test")])
    sub = subsample(parts["train"], 0.25)
    assert {r["program"] for r in sub} <= progs["train"] and len(sub) < len(parts["train"])


def test_batches_hold_whole_ops_and_pairs_stay_within_an_op(records):
    data = ScheduleSet.build(by_split(usable(records))["train"], C.encode)
    b = next(data.batches(groups=3, per_group=5, seed=1))
    assert b["ids"].shape == (15, F.n_features("refine") + 2)
    assert all(len(set(b["group"][i * 5:(i + 1) * 5])) == 1 for i in range(3))
    pairs = same_group_pairs(b["group"], b["log_t"])
    i, j = np.nonzero(pairs)
    assert (b["group"][i] == b["group"][j]).all() and (b["log_t"][i] < b["log_t"][j]).all()


def test_tokens_separate_tile_sizes():
    f = np.zeros((2, F.n_features("refine")), np.float32)
    f[0, 5], f[1, 5] = np.log2(17), np.log2(33)                    # tile 16 vs 32 as log2(1 + x)
    ids = F.tokens(f)
    assert ids[0, 6] != ids[1, 6] and (ids[:, 0] == 1).all() and (ids[:, -1] == 2).all()
    assert ids.max() < F.vocab_size("refine")


def test_metrics_on_hand_made_cases():
    true = np.array([1.0, 2.0, 3.0, 4.0])
    m = group_metrics(true * 10, true)
    assert m["spearman"] == pytest.approx(1.0) and m["correct"] == m["pairs"] == 6 and m["top1"] == 1.0
    m = group_metrics(-true, true)
    assert m["spearman"] == pytest.approx(-1.0) and m["correct"] == 0 and m["top1"] == 0 and m["top5"] == 1
    m = group_metrics(np.array([1.0, 3.0, 2.0, 4.0]), true)               # one swapped pair of six
    assert m["correct"] == 5 and m["top1"] == 1
    m = group_metrics(np.zeros(4), true)                                  # can't tell them apart
    assert m["spearman"] == 0.0 and m["correct"] == 3
    group = np.array([0, 0, 0, 0, 1, 1, 1])
    agg = ranking_metrics(np.r_[true, [3.0, 2.0, 1.0]], np.r_[true, [1.0, 2.0, 3.0]], group)
    assert agg["ops"] == 2 and agg["pairwise"] == pytest.approx(6 / 9) and agg["top1"] == 0.5
    assert agg["spearman_median"] == pytest.approx(0.0)


def test_rank_average_ensemble_ranks_within_each_op():
    recs = [{"program": p, "op_index": 0, "space": "refine", "time_s": t} for p in ("a", "b") for t in (3.0, 1.0, 2.0)]
    gid, _ = group_ids(recs)
    np.testing.assert_allclose(group_ranks(np.array([5.0, 1.0, 3.0, 0.2, 0.1, 0.1]), gid), [1, 0, 0.5, 1, 0.25, 0.25])
    truth = lambda rs: np.log([r["time_s"] for r in rs])            # noqa: E731
    scaled = lambda rs: 100 + 7 * truth(rs)                          # noqa: E731  (another scale, same order)
    ens = CL.rank_average(truth, scaled)(recs)
    m = CL.metrics_of(ens, recs)
    assert m["pairwise"] == 1.0 and m["spearman_median"] == pytest.approx(1.0)
    assert CL.metrics_of(CL.rank_average(truth, lambda rs: -truth(rs))(recs), recs)["pairwise"] == 0.5   # ties


def test_training_lowers_the_loss_and_ranks_held_out_programs(trained):
    parts, model, params, stats, hist = trained
    assert hist[-1]["loss"] < 0.7 * hist[0]["loss"]
    pred = C.predict(model, params, C.encode(parts["test"]), stats)
    gid, _ = group_ids(parts["test"])
    m = ranking_metrics(pred, np.log([r["time_s"] for r in parts["test"]]), gid)
    assert m["pairwise"] > 0.7, m


def test_save_load_round_trips(tmp_path, trained):
    parts, model, params, stats, _ = trained
    C.save(str(tmp_path), TINY, params, stats, {"note": 1})
    cfg, model2, params2, stats2, meta = C.load(str(tmp_path))
    ids = C.encode(parts["test"][:7])
    assert cfg == TINY and stats2 == stats and meta["note"] == 1
    np.testing.assert_allclose(C.predict(model2, params2, ids, stats2), C.predict(model, params, ids, stats), rtol=1e-6)
    (tmp_path / "params.msgpack").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="does not fit"):
        C.load(str(tmp_path))
    os.remove(tmp_path / "config.json")
    with pytest.raises(FileNotFoundError, match="missing config.json"):
        C.load(str(tmp_path))


def test_analytic_baseline_sees_the_workgroup_tile_only(records):
    recs = usable(records)[:16]                            # one op: keep + 15 random refinements
    raw = baselines.Analytic().raw(recs)
    dist = [r["schedule"]["distribution"] if r["schedule"]["mode"] == "config" else None for r in recs]
    assert np.isfinite(raw).all()
    same = [i for i, d in enumerate(dist) if d is None]    # keep / data tiling / only other levels changed
    assert np.ptp(raw[same]) == 0 and len(same) >= 2
    without = [dict(r, op={}) for r in recs]               # rebuilt from the program tables instead
    np.testing.assert_allclose(baselines.Analytic().raw(without), raw)


def test_search_curves_oracle_and_perfect_ranking(records):
    recs = usable(records)
    truth = np.log([r["time_s"] for r in recs])
    res = search.curves(recs, {"perfect": truth, "inverted": -truth}, ks=(1, 4), draws=20)
    assert res["ranked: perfect"][1] == pytest.approx(res["oracle"][1])
    assert res["random"][1] <= res["random"][4] <= res["oracle"][4] + 1e-9
    assert res["ranked: inverted"][1] <= res["random"][1]
    assert set(search.pools(recs)) == {r["program"] for r in recs}


def test_cli_train_evaluate_search(tmp_path, records, capsys):
    from distilbert_jax.clitools import InputError

    data = write_records(str(tmp_path / "data"), records, partial_tail=True)
    out = str(tmp_path / "run")
    CL.main(["train", "--data", data, "--out", out, "--steps", "30", "--dim", "16", "--layers", "1",
             "--curve", "100", "--tree-iters", "20", "--quiet"])
    for f in ("config.json", "params.msgpack", "trees.pkl", "learning_curve.png", "summary.md", "results.json"):
        assert os.path.isfile(os.path.join(out, f)), f
    res = json.load(open(os.path.join(out, "results.json")))
    assert [c["fraction"] for c in res["curve"]] == [1.0] and set(res["final"]) == {*CL.MODEL_NAMES, CL.ENSEMBLE}
    CL.main(["evaluate", "--model", out, "--data", data])
    assert "median Spearman" in capsys.readouterr().out
    CL.main(["search", "--model", out, "--data", data, "--ks", "1,2", "--draws", "5"])
    assert os.path.isfile(os.path.join(out, "search.png"))
    assert "ranked: DistilBERT cost model" in capsys.readouterr().out
    recs = usable(records)                                 # a second measurement: A's times with 30 % noise
    rng = np.random.default_rng(1)
    write_records(str(tmp_path / "again"), [dict(r, time_s=r["time_s"] * float(np.exp(0.3 * rng.standard_normal())))
                                            for r in recs if r["split"] == "test"][:-5])
    CL.main(["evaluate", "--model", out, "--data", data, "--remeasured", str(tmp_path / "again")])
    text = capsys.readouterr().out
    n_test = sum(r["split"] == "test" for r in recs)
    assert f"measured twice: {n_test - 5} of {n_test} records" in text and "geometric mean of A and B" in text
    row = next(ln for ln in text.splitlines() if ln.startswith(f"| {CL.REMEASURED}"))
    assert 0.5 < float(row.split("|")[5]) < 1.0            # noisy B orders A's pairs well but not perfectly
    assert "a noise-free model" in text
    paired, t_b = CL.pair_remeasured([r for r in recs if r["split"] == "test"], str(tmp_path / "again"), "refine")
    t_a = np.array([r["time_s"] for r in paired])
    sim = CL.simulated_ceiling(paired, t_a, t_b, sims=3)
    assert sim["perfect"][1] > sim["second"][1] > 0.5        # the true times beat a second noisy measurement
    exact = CL.simulated_ceiling(paired, t_a, t_a, sims=2)   # no noise: both are perfect
    assert exact["perfect"][1] == exact["second"][1] == 1.0
    with pytest.raises(InputError, match="none of its usable"):
        CL.main(["evaluate", "--model", out, "--data", data, "--remeasured", str(tmp_path / "again"), "--split", "val"])
    CL.main(["search", "--model", out, "--data", data, "--ks", "1,2", "--draws", "5", "--out", str(tmp_path / "s2"),
             "--remeasured", str(tmp_path / "again")])
    assert f"({n_test - 5} of {n_test} records measured again" in capsys.readouterr().out
    mean = CL.geomean_of_two(paired, t_b)
    np.testing.assert_allclose([r["time_s"] for r in mean], np.sqrt(t_a * t_b))
    oracle = json.load(open(tmp_path / "s2" / "search.json"))["oracle"]["1"]
    assert oracle == pytest.approx(search.curves(mean, {}, ks=(1,), draws=1)["oracle"][1])


def test_cli_fit_on_train_and_val(tmp_path, records, capsys):
    """--fit-on train,val: the final model learns from the validation programs too, still scored on test."""
    data = write_records(str(tmp_path / "data"), records)
    out = str(tmp_path / "run")
    CL.main(["train", "--data", data, "--out", out, "--steps", "5", "--dim", "16", "--layers", "1", "--curve", "100",
             "--tree-iters", "5", "--quiet", "--fit-on", "train,val"])
    parts = by_split(usable(records))
    meta = json.load(open(os.path.join(out, "config.json")))
    assert meta["fit_on"] == ["train", "val"] and meta["train_records"] == len(parts["train"]) + len(parts["val"])
    res = json.load(open(os.path.join(out, "results.json")))
    assert res["heldout"] == "test" and res["val"] == {} and res["curve"][0]["train_records"] == meta["train_records"]
    for bad in ("val", "train,test"):
        with pytest.raises(SystemExit):
            CL.main(["train", "--data", data, "--out", out, "--fit-on", bad])
    assert "--fit-on" in capsys.readouterr().err


def test_cli_bad_data_is_a_clear_error(tmp_path, records):
    from distilbert_jax.clitools import InputError

    with pytest.raises(InputError, match="does not exist"):
        CL.main(["train", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "o")])
    only_test = write_records(str(tmp_path / "d"), [r for r in records if r["split"] == "test"])
    with pytest.raises(InputError, match="no usable 'refine' records of training programs"):
        CL.main(["train", "--data", only_test, "--out", str(tmp_path / "o")])


def test_ranker_measures_only_the_predicted_top_k(tmp_path, trained):
    from rl.costnet.rank import Ranker
    from rl.mlir import refine as R
    from rl.mlir.emit import program_specs
    from rl.programs import test_programs

    from .costnet_synth import fake_default

    parts, model, params, stats, _ = trained
    C.save(str(tmp_path), TINY, params, stats)
    ranker = Ranker.load(str(tmp_path))
    table = test_programs()
    ops = [(s, fake_default(s)) for s in program_specs(table, table.names.index("bert_qkv_b2s128"))]
    extra = [[R.Refinement("keep")], []]
    top = ranker.top_k(ops, k=3, n_random=20, extra=extra, seed=0)
    assert [len(t) for t in top] == [3, 3]
    for (spec, d), picks in zip(ops, top):
        assert all(p.mode == "config" for p in picks) and len(set(picks)) == 3
        pred = ranker.predict(spec.kind, d, picks)
        assert (np.diff(pred) >= 0).all()                         # best predicted first
        for p in picks:                                           # legal: every level divides as IREE needs
            levels = R.lowering_levels(d, p)
            assert all(b % t == 0 for b, t in zip(d.bounds, levels["distribution"]) if t)
    bad = dataclasses.replace(TINY, space="scalar")
    C.save(str(tmp_path / "s"), bad, init(bad, jax.random.PRNGKey(0))[1], stats)
    with pytest.raises(ValueError, match="scalar"):
        Ranker.load(str(tmp_path / "s"))


def test_policy_curve_measures_the_policys_first_k(monkeypatch, records):
    from rl.mlir import tune

    recs = [r for r in usable(records) if r["split"] == "test"]
    seen = []

    def fake_measure_all(jobs, repeats, timing, bar=None):
        seen.extend(jobs)
        return [1e-12 if i % 2 else float("nan") for i in range(len(jobs))]   # every 2nd proposal is faster

    monkeypatch.setattr(tune, "measure_all", fake_measure_all)
    res = search.policy_curve(recs, tune.DEFAULT_POLICY, ks=(1, 2))
    n_ops = sum(len(p) for p in search.pools(recs).values())
    assert 0 < len(seen) <= 2 * n_ops and res[1] <= res[2] and res[2] > 1.0
