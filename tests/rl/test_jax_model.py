"""Tuning a whole JAX model through IREE (rl.mlir.jax_model) on a tiny DistilBERT: export, dispatch groups,
one tuning spec whose configs reach codegen, outputs equal jax.jit's."""

import numpy as np
import pytest

from rl.mlir import jax_model as J
from rl.mlir import refine as R

ROOT_LINE = ('%9 = linalg.batch_matmul indexing_maps = [affine_map<(d0, d1, d2, d3) -> (d0, d1, d3)>, '
             'affine_map<(d0, d1, d2, d3) -> (d0, d2, d3)>, affine_map<(d0, d1, d2, d3) -> (d0, d1, d2)>] '
             '{lowering_config = #iree_cpu.lowering_config<distribution = [1, 64, 64, 0], vector_common_parallel = '
             '[1, 8, 16, 0], vector_reduction = [0, 0, 0, 16]>} ins(%4, %5 : tensor<12x128x64xf32>, '
             'tensor<12x128x64xf32>) outs(%8 : tensor<12x128x128xf32>) -> tensor<12x128x128xf32>\n'
             'pipeline = #iree_cpu.pipeline<DoubleTilingExpert>\n')


def test_parse_root_reads_loops_and_config_of_a_transposed_batch_matmul():
    op, d = J.parse_root(ROOT_LINE)
    assert op == "linalg.batch_matmul" and d.refinable
    assert d.bounds == (12, 128, 128, 64) and d.reduction == (False, False, False, True)
    assert d.levels["distribution"] == [1, 64, 64, 0] and d.pipeline == "DoubleTilingExpert"
    assert d.operand_types == ("tensor<12x128x64xf32>", "tensor<12x128x64xf32>", "tensor<12x128x128xf32>")
    assert d.cache_reduction_ok                      # reduction innermost in both operands
    twin = ROOT_LINE + ROOT_LINE.split("\n")[0].replace("distribution = [1, 64, 64, 0], ", "") + "\n"
    assert not J.parse_root(twin)[1].refinable       # a matcher would configure both ops: left alone


def test_spec_matches_op_name_and_input_count():
    spec = R.tuning_spec([(["tensor<4x8xf32>", "tensor<8x2xf32>", "tensor<4x2xf32>"],
                           {"distribution": [2, 2, 0]}, "DoubleTilingExpert", "linalg.matmul")])
    assert '["linalg.matmul"]' in spec and "num_inputs" in spec and "constant 2 : i64" in spec


def test_model_case_rejects_bad_input():
    with pytest.raises(ValueError, match="size"):
        J.ModelCase("huge")
    with pytest.raises(ValueError, match="batch"):
        J.ModelCase("tiny", batch=0)


@pytest.fixture(scope="module")
def tuned():
    pytest.importorskip("iree.compiler")
    pytest.importorskip("iree.runtime")
    exp = J.export(J.ModelCase("tiny", batch=1))
    return exp, J.tune_model(exp, budget=1, seed=0, progress=False)


def test_tiny_distilbert_tuned_end_to_end(tuned):
    exp, res = tuned
    assert exp.text.startswith("module @module") and "stablehlo.dot_general" in exp.text
    ops = {g.op for g in res.groups}
    assert {"linalg.matmul", "linalg.batch_matmul", "linalg.generic"} <= ops
    # the softmax rows (heads × seq, seq) and LayerNorm rows (seq, dim) are groups of their own
    labels = [g.label for g in res.groups]
    assert any("4x128x128xf32 4x128xf32" in lb for lb in labels) and any("128x32xf32 128xf32" in lb for lb in labels)
    # identical layers share a group: 2 layers × (q, k, v, out) projections, one matcher
    qkv = next(g for g in res.groups if g.label == "matmul 128x32xf32 32x32xf32 128x32xf32")
    assert len(qkv.dispatches) >= 1
    assert all(np.isfinite(g.default_s) and g.default_s > 0 for g in res.groups)
    measured = [t for g in res.groups for _, t in g.candidates]
    assert len(measured) >= len(res.groups) - 2                       # a candidate for (almost) every group
    assert sum(np.isfinite(measured)) >= len(measured) // 2            # their configs reached codegen
    for g in res.groups:                                               # IREE's default is a candidate
        assert g.chosen_s <= g.default_s
    assert not res.dropped


def test_tuned_spec_reaches_codegen_and_keeps_outputs(tuned):
    exp, res = tuned
    # force a non-default config onto every group whose candidate compiled, so the spec is never empty
    forced = []
    for g in res.groups:
        ok = [c for c, t in g.candidates if np.isfinite(t)]
        if ok:
            g.chosen = ok[0]
            forced.append(g)
    assert forced
    assert J.check_model(exp, forced, ()) == (True, "")
    found = J.find_dispatches(exp, (), R.tuning_spec([g.entry for g in forced]))
    for g in forced:
        mine = [d for d in found if d.key == (g.op, tuple(g.default.operand_types))]
        assert mine and all(d.default.levels != g.default.levels for d in mine)
    vmfb = J.compile_model(exp.text, True, (), R.tuning_spec([g.entry for g in forced]))
    out, times = J.run_model(vmfb, exp.inputs, "cpu", 1)
    assert J.max_abs_diff(out, exp.expected) <= J.ATOL and times[0] > 0


def test_a_config_that_breaks_codegen_is_caught(tuned):
    exp, res = tuned
    g = next(g for g in res.groups if g.op == "linalg.matmul")
    bad = R.Refinement("config", distribution=tuple(3 for _ in g.default.bounds))   # not what IREE keeps
    g2 = J.GroupResult(g.op, g.default, g.dispatches, g.default_s, chosen=bad)
    ok, why = J.check_model(exp, [g2], ())
    assert not ok and why
