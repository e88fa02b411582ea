"""What machine a measurement was taken on: the CPU model and its vector extensions, and the JAX device
(for benchmark reports and the NAS latency dataset, whose figures only hold on the machine that made them)."""

from __future__ import annotations

import platform

import jax

from .cpu import read_cpu


def device_description() -> str:
    """The JAX device and the host CPU, for benchmark reports."""
    dev = jax.devices()[0]
    return f"{dev.platform}:{dev.device_kind} ({jax.device_count()} device(s)), host {platform.processor() or platform.machine()}"


def cpu_description() -> str:
    """The CPU model (`lscpu`'s model name) and whether it has AVX-512, AVX-512 BF16 and AMX."""
    return read_cpu().describe()
