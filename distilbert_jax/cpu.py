"""What the host CPU reports about itself: vendor, model name and ISA flags (from `/proc/cpuinfo`, else
`lscpu`), as a small frozen dataclass. Pure parsing, no JAX: `distilbert_jax.gemm` chooses XLA:CPU's GEMM
back end from it, and the benchmarks print it beside every figure.

    cpu = read_cpu()   # e.g. CpuInfo(vendor="AuthenticAMD", model="AMD EPYC", flags=frozenset({...}), cores=2)
    cpu.has_avx512_bf16, cpu.has_amx   # (True, False) on our Zen 4 machine
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from dataclasses import dataclass

INTEL, AMD = "GenuineIntel", "AuthenticAMD"


@dataclass(frozen=True)
class CpuInfo:
    """vendor: the CPUID vendor string ("GenuineIntel", "AuthenticAMD", "" when unknown); model: the model
    name; flags: the kernel's ISA flag names (`avx512f`, `avx512_bf16`, `amx_tile`, ...); cores: logical CPUs."""

    vendor: str
    model: str
    flags: frozenset[str]
    cores: int

    @property
    def is_intel(self) -> bool:
        return self.vendor == INTEL

    @property
    def is_amd(self) -> bool:
        return self.vendor == AMD

    @property
    def has_avx512(self) -> bool:
        return "avx512f" in self.flags

    @property
    def has_avx512_bf16(self) -> bool:
        return "avx512_bf16" in self.flags

    @property
    def has_amx(self) -> bool:
        """AMX tiles with bf16 (Sapphire Rapids and later): what oneDNN runs bf16 GEMMs on."""
        return {"amx_tile", "amx_bf16"} <= self.flags

    def describe(self) -> str:
        """One line for reports: model, cores, and which of AVX-512 / AVX-512 BF16 / AMX are present."""
        has = [name for name, ok in (("AVX-512", self.has_avx512), ("AVX-512 BF16", self.has_avx512_bf16),
                                     ("AMX", self.has_amx)) if ok]  # fmt: skip
        return f"{self.model}, {self.cores} cores" + (f" ({', '.join(has)})" if has else " (no AVX-512)")


def _fields(text: str, sep: str) -> dict[str, str]:
    """`key<sep> value` lines -> {key: value}, first occurrence (the first processor) wins."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, found, value = line.partition(sep)
        if found:
            out.setdefault(key.strip(), value.strip())
    return out


def parse_cpuinfo(text: str, cores: int | None = None) -> CpuInfo:
    """A `CpuInfo` from the text of `/proc/cpuinfo` (x86 Linux)."""
    f = _fields(text, ":")
    n = cores or sum(1 for line in text.splitlines() if line.split(":")[0].strip() == "processor") or 1
    return CpuInfo(f.get("vendor_id", ""), f.get("model name", ""), frozenset(f.get("flags", "").split()), n)


def parse_lscpu(text: str) -> CpuInfo:
    """A `CpuInfo` from the (English) output of `lscpu`."""
    f = _fields(text, ":")
    return CpuInfo(f.get("Vendor ID", ""), f.get("Model name", ""), frozenset(f.get("Flags", "").split()),
                   int(f.get("CPU(s)", "0") or 0) or 1)  # fmt: skip


def read_cpu(cpuinfo: str = "/proc/cpuinfo") -> CpuInfo:
    """This machine's CPU: `/proc/cpuinfo`, else `lscpu`, else only what `platform` knows (no flags)."""
    cores = os.cpu_count() or 1
    try:
        with open(cpuinfo) as fh:
            info = parse_cpuinfo(fh.read(), cores)
        if info.flags:
            return info
    except OSError:
        pass
    if shutil.which("lscpu"):
        try:
            out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, env=dict(os.environ, LC_ALL="C"))
            info = parse_lscpu(out.stdout)
            if info.flags or info.vendor:
                return CpuInfo(info.vendor, info.model, info.flags, cores)
        except (OSError, subprocess.SubprocessError):
            pass
    return CpuInfo("", platform.processor() or platform.machine(), frozenset(), cores)
