"""Timing of jitted calls, shared by the whole-arch latencies (`latency`) and the per-layer table
(`layer_latency`): every round visits every call in a fresh seeded order (drift hits all alike); a
visit is one untimed call then the mean of `calls` timed calls."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def spread(samples: np.ndarray) -> np.ndarray:
    """The inter-quartile range / median over rounds of [rounds, n] samples -> [n]."""
    q25, q50, q75 = np.percentile(samples, [25, 50, 75], axis=0)
    return (q75 - q25) / q50


def random_params(module, seed: int, *example: Any) -> dict:
    """Random weights of `module` for the `example` inputs, without compiling an init (weights do not
    change the timing)."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), *example)
    return jax.tree.map(lambda s: jnp.asarray(0.02 * rng.standard_normal(s.shape, np.float32)), shapes)["params"]


def progress_bar(total: int, desc: str, progress: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not progress, leave=False, dynamic_ncols=True)


def time_calls(runs: Sequence[tuple[Callable, tuple]], rounds: int, calls: int, rng: np.random.Generator,
               progress: bool = True, desc: str = "timing") -> np.ndarray:  # fmt: skip
    """[rounds, len(runs)] ms per call of each `(fn, args)`: each round visits every run in a fresh order
    (`rng`), one untimed call then the mean of `calls` timed ones (`block_until_ready`)."""
    samples = np.empty((rounds, len(runs)))
    with progress_bar(rounds, f"{desc} {len(runs)} models", progress) as bar:
        for r in range(rounds):
            for j in rng.permutation(len(runs)):
                fn, args = runs[j]
                jax.block_until_ready(fn(*args))
                t0 = time.perf_counter()
                for _ in range(calls):
                    jax.block_until_ready(fn(*args))
                samples[r, j] = (time.perf_counter() - t0) * 1e3 / calls
            bar.update()
    return samples
