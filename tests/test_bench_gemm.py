"""`python -m bench.gemm` end to end on tiny shapes (no timing assertions)."""

from __future__ import annotations

import json

from bench.gemm import lowering, main


def test_bench_gemm_runs_and_reports_the_rule(tmp_path, capsys):
    out = tmp_path / "gemm"
    assert main(["--shapes", "32x48x16", "--rounds", "1", "--per-round", "1", "--backends", "xla", "eigen",
                 "--dtypes", "fp32", "bf16", "--out", str(out)]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert "Summary" in text and "CPU:" in text
    result = json.loads((tmp_path / "gemm.json").read_text())
    assert [v["dtype"] for v in result["verdicts"]] == ["fp32", "bf16"]
    assert all(v["rule"] and v["agrees"] for v in result["verdicts"])
    assert set(result["wall"][0]) >= {"xla", "eigen", "torch", "best"}
    low = {row["dtype"]: row for row in result["lowering"]}
    assert low["fp32"]["xla"] == "__ynn_fusion" and low["bf16"]["eigen"] == "dot+f32"  # the flags took effect


def test_lowering_reads_the_compiled_hlo():
    assert lowering('backend_config={"fusion_config":{"kind":"__onednn_fusion"}}') == "__onednn_fusion"
    assert lowering("%c = f32[4,4]{1,0} convert(%p)\n%d = f32[4,4]{1,0} dot(%c, %c)") == "dot+f32"
