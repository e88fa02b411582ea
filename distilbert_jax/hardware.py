"""What machine a measurement was taken on: the CPU model and its vector extensions, and the JAX device
(for benchmark reports and the NAS latency dataset, whose figures only hold on the machine that made them)."""

from __future__ import annotations

import os
import platform

import jax


def device_description() -> str:
    """The JAX device and the host CPU, for benchmark reports."""
    dev = jax.devices()[0]
    return f"{dev.platform}:{dev.device_kind} ({jax.device_count()} device(s)), host {platform.processor() or platform.machine()}"


def cpu_description() -> str:
    """The CPU model (`lscpu`'s model name) and whether it has AVX-512, AVX-512 BF16 and AMX."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    has = [name for name, flag in (("AVX-512", "avx512f"), ("AVX-512 BF16", "avx512_bf16"), ("AMX", "amx_tile")) if flag in flags]
    return f"{model}, {os.cpu_count()} cores" + (f" ({', '.join(has)})" if has else " (no AVX-512)")
