"""Deterministic crash points for the fault tests: `kill_point(name)` marks a place in a long job (after a
training step, a token-cache chunk, a PPO chunk, a pipeline step …). With the environment variable
`DISTILBERT_JAX_KILL_AT="name:N"` (several comma-separated), the process SIGKILLs itself — exactly a
`kill -9`, no cleanup, no `finally` — on its N-th arrival at that point (counted per process). Unset, a
point costs one dict lookup."""

from __future__ import annotations

import os
import signal

ENV = "DISTILBERT_JAX_KILL_AT"
_counts: dict[str, int] = {}


def _targets() -> dict[str, int]:
    spec = os.environ.get(ENV, "")
    out = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, n = item.rpartition(":")
        if not name or not n.isdigit() or int(n) < 1:
            raise ValueError(f"{ENV}={spec!r}: expected name:N with N >= 1, got {item!r}")
        out[name] = int(n)
    return out


def kill_point(name: str) -> None:
    """SIGKILL this process if `DISTILBERT_JAX_KILL_AT` names `name` and this is the N-th arrival."""
    if ENV not in os.environ:
        return
    want = _targets().get(name)
    if want is None:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] == want:
        os.kill(os.getpid(), signal.SIGKILL)
