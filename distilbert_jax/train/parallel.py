"""Data parallelism with `jax.sharding`: one 1-D mesh over every device ("data" axis), batches
sharded along it, params and optimizer state replicated. Multi-host through `jax.distributed`."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def initialize_distributed(**kwargs: Any) -> None:
    """`jax.distributed.initialize(**kwargs)` once. Unless given, the coordinator, process count and this
    process's id come from `JAX_COORDINATOR_ADDRESS` (read by jax itself), `JAX_NUM_PROCESSES` and
    `JAX_PROCESS_ID`, else from a cluster jax detects (SLURM, Open MPI, Kubernetes, Cloud TPU)."""
    if jax.distributed.is_initialized():
        return
    import os

    for key, env in (("num_processes", "JAX_NUM_PROCESSES"), ("process_id", "JAX_PROCESS_ID")):
        if kwargs.get(key) is None and os.environ.get(env):
            try:
                kwargs[key] = int(os.environ[env])
            except ValueError:
                raise ValueError(f"{env} must be an integer, got {os.environ[env]!r}") from None
    jax.distributed.initialize(**kwargs)


def data_mesh(devices: list | None = None) -> Mesh:
    """A 1-D mesh named "data" over `devices` (default: every device of every process)."""
    return Mesh(np.asarray(devices if devices is not None else jax.devices()), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over the mesh, the rest whole."""
    return NamedSharding(mesh, P(DATA_AXIS))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Put every leaf of `tree` on every device of `mesh`."""
    return jax.device_put(tree, replicated(mesh))


def check_batch_size(batch_size: int, grad_accum_steps: int, mesh: Mesh) -> None:
    """Raise a clear error unless each micro-batch splits evenly over the devices and processes."""
    devices, processes = mesh.devices.size, jax.process_count()
    if batch_size % grad_accum_steps:
        raise ValueError(f"batch size {batch_size} is not divisible by grad_accum_steps {grad_accum_steps}")
    micro = batch_size // grad_accum_steps
    if micro % devices:
        raise ValueError(
            f"the micro-batch ({batch_size} / grad_accum_steps {grad_accum_steps} = {micro}) is not divisible by "
            f"the {devices} devices of the data-parallel mesh; pick a batch size that is a multiple of "
            f"{devices * grad_accum_steps}"
        )
    if batch_size % processes:
        raise ValueError(f"batch size {batch_size} is not divisible by the {processes} processes")


def global_batch(local: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """This process's rows of a batch ([B / process_count, ...] each) → global arrays sharded over `mesh`."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local.items()}


def enable_compile_cache(directory: str | None = None) -> str:
    """Keep compiled XLA programs on disk (default `$DISTILBERT_JAX_COMPILE_CACHE` or
    `~/.cache/distilbert_jax/xla`) so repeated runs and identical steps skip recompilation. Entries are
    checked first (`xla_cache.check_compile_cache`): a truncated or damaged one is removed with a warning."""
    import os

    directory = directory or os.environ.get("DISTILBERT_JAX_COMPILE_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "distilbert_jax", "xla"
    )
    from .xla_cache import check_compile_cache

    check_compile_cache(directory)  # a torn entry (a kill mid-write) is removed and compiled again, not reread
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    return directory
