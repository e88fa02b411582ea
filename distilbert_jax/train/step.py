"""The jitted training step `(state, batch) -> (state, metrics)` and the evaluation step, shared by
every task. Gradient accumulation scans over micro-batches inside the step; the loss of each
micro-batch is divided by the whole batch's denominators, so k micro-batches give the same update as
one big batch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from .parallel import DATA_AXIS
from ..modeling import COMPUTE
from .state import TrainState, refreshed_compute
from .tasks import Batch, Sums, Task

Metrics = dict[str, jax.Array]


def mlm_positions(labels: jax.Array, m: int) -> tuple[jax.Array, jax.Array]:
    """labels [B, T] (-100 = no target) -> positions [B, m] of the labelled tokens (in order, then
    unlabelled filler) and their labels [B, m] (filler gets -100)."""
    positions = jnp.argsort(labels == -100, axis=1, stable=True)[:, :m]
    return positions, jnp.take_along_axis(labels, positions, axis=1)


def _sums(model: nn.Module, task: Task, teacher_model: nn.Module | None, params: Any, teacher: Any,
          batch: Batch, rng: jax.Array | None, compute: Any = None) -> Sums:  # fmt: skip
    # batch: input_ids / attention_mask [B, T] (+ labels) -> additive sums for `task`; compute: the
    # low-precision weight copies (TrainState.compute) or None
    deterministic = rng is None
    variables = {"params": params} if compute is None else {"params": params, COMPUTE: compute}

    def run(positions: jax.Array | None, labels: jax.Array | None) -> Sums:
        extra = {} if positions is None else {"masked_positions": positions}
        out = model.apply(variables, batch["input_ids"], batch["attention_mask"],
                          deterministic=deterministic, rngs=None if deterministic else {"dropout": rng}, **extra)  # fmt: skip
        teacher_out = None
        if teacher_model is not None:
            teacher_out = teacher_model.apply(teacher, batch["input_ids"], batch["attention_mask"], **extra)
            teacher_out = jax.lax.stop_gradient(teacher_out)
        return task.sums(out, batch if labels is None else dict(batch, labels=labels), teacher_out)

    if task.max_predictions is None:
        return run(None, None)
    # MLM: project to the vocabulary only at the (at most max_predictions per row) masked positions;
    # a batch with a row holding more takes the full projection, so the loss is always exact.
    labels = batch["labels"]
    positions, picked = mlm_positions(labels, task.max_predictions)
    overflow = jnp.any(jnp.sum(labels != -100, axis=1) > task.max_predictions)
    return jax.lax.cond(overflow, lambda: run(None, None), lambda: run(positions, picked))


def split_microbatches(batch: Batch, k: int, mesh: Mesh | None = None) -> Batch:
    """Each leaf [k·b, ...] → [k, b, ...]; micro-batch j takes rows j, k + j, 2k + j, … so every
    micro-batch stays spread over the data-parallel devices."""

    def split(x):
        x = jnp.swapaxes(x.reshape((x.shape[0] // k, k) + x.shape[1:]), 0, 1)
        if mesh is not None:
            x = jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P(None, DATA_AXIS)))
        return x

    return jax.tree.map(split, batch)


def make_train_step(
    model: nn.Module,
    task: Task,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule | None = None,
    *,
    grad_accum_steps: int = 1,
    teacher_model: nn.Module | None = None,
    mesh: Mesh | None = None,
) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
    """The pure (un-jitted) step. batch: input_ids / attention_mask [B, T] + the task's labels;
    metrics: the task's metrics plus grad_norm and lr (scalars)."""
    k = grad_accum_steps

    def grads_and_sums(params, teacher, batch, rng, denoms, compute):
        def loss_fn(p):
            sums = _sums(model, task, teacher_model, p, teacher, batch, rng, compute)
            return task.objective(sums, denoms), sums

        (_, sums), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        return grads, sums

    def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
        rng, step_rng = jax.random.split(state.rng)
        denoms = task.denominators(batch)
        if k == 1:
            grads, sums = grads_and_sums(state.params, state.teacher, batch, step_rng, denoms, state.compute)
        else:
            micro = split_microbatches(batch, k, mesh)

            def body(carry, xs):
                mb, i = xs
                g, s = grads_and_sums(state.params, state.teacher, mb, jax.random.fold_in(step_rng, i), denoms,
                                      state.compute)  # fmt: skip
                return jax.tree.map(jnp.add, carry, (g, s)), None

            first = jax.tree.map(lambda x: x[0], micro)
            shapes = jax.eval_shape(grads_and_sums, state.params, state.teacher, first, step_rng, denoms, state.compute)
            zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
            (grads, sums), _ = jax.lax.scan(body, zeros, (micro, jnp.arange(k)))
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = task.metrics(sums, denoms)
        metrics["grad_norm"] = optax.tree.norm(grads)
        if schedule is not None:
            metrics["lr"] = jnp.asarray(schedule(state.step), jnp.float32)
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, rng=rng,
                                  compute=refreshed_compute(state, params))  # cast fused into the update
        return new_state, metrics

    return train_step


def make_eval_step(model: nn.Module, task: Task, teacher_model: nn.Module | None = None
                   ) -> Callable[[TrainState, Batch], tuple[Sums, Sums]]:  # fmt: skip
    """The pure eval step `(state, batch) -> (sums, denominators)` (deterministic); add the results
    over batches and call `task.metrics` once."""

    def eval_step(state: TrainState, batch: Batch) -> tuple[Sums, Sums]:
        sums = _sums(model, task, teacher_model, state.params, state.teacher, batch, None, state.compute)
        return sums, task.denominators(batch)

    return eval_step


def jit_train_step(step: Callable, state: TrainState) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
    """`step` jitted once with the state donated; the new state keeps the input state's shardings."""
    shardings = jax.tree.map(lambda x: x.sharding, state)
    return jax.jit(step, donate_argnums=0, out_shardings=(shardings, None))
