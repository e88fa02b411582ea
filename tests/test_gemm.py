"""The CPU description and the GEMM back-end rule, on recorded CPU descriptions (no timing)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from distilbert_jax.cpu import CpuInfo, parse_cpuinfo, parse_lscpu, read_cpu
from distilbert_jax.gemm import BACKENDS, ENV_VAR, choose, configure_cpu, gemm_backend, merged_xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Flags as the kernel lists them on our machine types: AMD = this machine's lscpu; the Intel rows add what issue 20 /
# design §5 report (amx_bf16 + avx512_bf16; AVX-512 without BF16) to the common list. Intel model names are illustrative.
_X86 = "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht syscall nx " \
       "pdpe1gb rdtscp lm constant_tsc rep_good nopl xtopology nonstop_tsc cpuid pni pclmulqdq ssse3 fma cx16 pcid sse4_1 " \
       "sse4_2 x2apic movbe popcnt aes xsave avx f16c rdrand hypervisor lahf_lm abm 3dnowprefetch fsgsbase bmi1 avx2 smep " \
       "bmi2 erms invpcid avx512f avx512dq rdseed adx smap avx512ifma clflushopt clwb avx512cd sha_ni avx512bw avx512vl " \
       "xsaveopt xsavec xgetbv1 xsaves avx512vbmi umip avx512_vbmi2 gfni vaes vpclmulqdq avx512_vnni avx512_bitalg " \
       "avx512_vpopcntdq rdpid"  # fmt: skip
ZEN4 = CpuInfo("AuthenticAMD", "AMD EPYC", frozenset((_X86 + " avx512_bf16 clzero xsaveerptr arat fsrm").split()), 2)
XEON_AMX = CpuInfo("GenuineIntel", "Intel(R) Xeon(R) Processor @ 2.70GHz", frozenset(
    (_X86 + " avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8 movdiri movdir64b serialize tsxldtrk").split()), 2)
XEON_AVX512 = CpuInfo("GenuineIntel", "Intel(R) Xeon(R) CPU @ 2.20GHz", frozenset(_X86.split()), 2)  # no BF16, no AMX
OLD = CpuInfo("GenuineIntel", "Intel(R) Xeon(R) CPU E5-2690 v4", frozenset("fpu sse sse2 avx avx2 fma".split()), 2)

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model name\t: AMD EPYC
flags\t\t: fpu avx2 avx512f avx512_bf16
processor\t: 1
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
flags\t\t: fpu avx2 avx512f avx512_bf16
"""
LSCPU = """Architecture:            x86_64
CPU(s):                  2
Vendor ID:               GenuineIntel
Model name:              Intel(R) Xeon(R) Processor @ 2.70GHz
Flags:                   fpu avx512f avx512_bf16 amx_bf16 amx_tile
"""


def test_parse_cpuinfo_and_lscpu():
    amd = parse_cpuinfo(CPUINFO)
    assert (amd.vendor, amd.model, amd.cores) == ("AuthenticAMD", "AMD EPYC", 2)
    assert amd.is_amd and amd.has_avx512 and amd.has_avx512_bf16 and not amd.has_amx
    intel = parse_lscpu(LSCPU)
    assert intel.is_intel and intel.has_amx and intel.cores == 2
    assert intel.describe() == "Intel(R) Xeon(R) Processor @ 2.70GHz, 2 cores (AVX-512, AVX-512 BF16, AMX)"
    assert OLD.describe().endswith("(no AVX-512)")


def test_read_cpu_falls_back_when_cpuinfo_is_missing(tmp_path):
    info = read_cpu(str(tmp_path / "absent"))
    assert info.cores >= 1 and isinstance(info.flags, frozenset)
    assert read_cpu().model  # this machine


@pytest.mark.parametrize("cpu, mkl, fp32, bf16", [
    (ZEN4, False, "xla", "xla"),  # measured: the default is the best there; nothing changes on AMD
    (ZEN4, True, "xla", "xla"),
    (XEON_AMX, False, "xla", "xla"),  # measured: oneDNN fusions lost the model
    (XEON_AMX, True, "mkl", "xla"),  # measured: MKL's sgemm wins the model; its AMX bf16 GEMMs tie XLA's
    (XEON_AVX512, False, "xla", "xla"),
    (XEON_AVX512, True, "mkl", "xla"),
    (OLD, True, "xla", "xla"),
])  # fmt: skip
def test_rule_on_recorded_cpus(cpu, mkl, fp32, bf16):
    assert gemm_backend(cpu, "fp32", mkl)[0] == fp32
    assert gemm_backend(cpu, "bf16", mkl)[0] == bf16
    assert all(gemm_backend(cpu, d)[0] in BACKENDS for d in ("fp32", "bf16"))
    with pytest.raises(ValueError, match="dtype"):
        gemm_backend(cpu, "fp16")


def test_argument_beats_env_beats_rule(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert choose("fp32", cpu=XEON_AMX).backend in ("xla", "mkl")  # mkl where MKL is installed
    assert choose("fp32", cpu=XEON_AMX).source == "rule"
    monkeypatch.setenv(ENV_VAR, "eigen")
    assert (choose("fp32", cpu=XEON_AMX).backend, choose("fp32", cpu=XEON_AMX).source) == ("eigen", "env")
    assert (choose("fp32", "xla", XEON_AMX).backend, choose("fp32", "xla", XEON_AMX).source) == ("xla", "argument")
    monkeypatch.setenv(ENV_VAR, "auto")
    assert choose("fp32", cpu=ZEN4).source == "rule"
    monkeypatch.setenv(ENV_VAR, "cublas")
    with pytest.raises(ValueError, match=r"unknown GEMM back end 'cublas' in \$DISTILBERT_JAX_GEMM"):
        choose("fp32", cpu=ZEN4)


def test_user_xla_flags_win():
    onednn = BACKENDS["onednn"].flags
    assert merged_xla_flags("", onednn) == " ".join(onednn)
    assert merged_xla_flags("--xla_cpu_use_onednn=false", onednn) == \
        "--xla_cpu_use_onednn=false --xla_cpu_experimental_onednn_fusion_type=dot"  # fmt: skip
    assert merged_xla_flags("--a=1", ()) == "--a=1"


def test_import_changes_nothing_and_configure_sets_flags_before_xla_starts():
    """In a fresh process: importing the package leaves XLA_FLAGS alone; configure_cpu sets the chosen flags
    before XLA starts and only warns after (the flags then not applied)."""
    code = (
        "import os, warnings, distilbert_jax as dj\n"
        "assert os.environ.get('XLA_FLAGS', '') == '--xla_cpu_enable_fast_math=false', os.environ.get('XLA_FLAGS')\n"
        "c = dj.configure_cpu(backend='eigen')\n"
        "assert '--xla_cpu_experimental_ynn_fusion_type=' in os.environ['XLA_FLAGS']\n"
        "c = dj.configure_cpu(backend='onednn')\n"  # replaces the flags the first call added, keeps the user's
        "assert 'ynn_fusion_type' not in os.environ['XLA_FLAGS'] and 'fast_math' in os.environ['XLA_FLAGS']\n"
        "assert c.applied and '--xla_cpu_use_onednn=true' in os.environ['XLA_FLAGS'], os.environ['XLA_FLAGS']\n"
        "import jax.numpy as jnp; jnp.ones(2).block_until_ready()\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    c = dj.configure_cpu(backend='eigen')\n"
        "assert c.applied is False and 'already started' in str(w[0].message)\n"
        "assert dj.configure_cpu(backend='onednn').applied\n"  # already in effect: no warning needed
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    env.update(XLA_FLAGS="--xla_cpu_enable_fast_math=false", JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_train_cli_reports_an_unknown_backend(monkeypatch, capsys, tmp_path):
    from distilbert_jax.train.cli import main

    monkeypatch.setenv(ENV_VAR, "cublas")
    config = os.path.join(ROOT, "distilbert_jax", "train", "configs", "mlm_small.json")
    assert main(["mlm", "--config", config, "--steps", "1", "--out-dir", str(tmp_path), "--compile-cache", "off"]) == 2
    assert "unknown GEMM back end 'cublas'" in capsys.readouterr().err
