"""The jitted SuperNet steps. The archs are data ([k] int32 per field); only their buckets are static,
so the number of compilations is bounded by the number of bucket combinations, whatever the archs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from distilbert_jax.train.state import TrainState

from .objectives import LogitsTeacher, Objective, Sums, inplace_student
from .space import Arch
from .supernet import ArchArrays, Bucket, SuperNet

Metrics = dict[str, jax.Array]


def _teacher_out(teacher_model, teacher, batch):
    if teacher_model is None:
        return None
    out = teacher_model.apply(teacher, batch["input_ids"], batch["attention_mask"], output_hidden_states=True,
                              output_attentions=True)  # fmt: skip
    return jax.lax.stop_gradient(out)


def make_supernet_step(supernet: SuperNet, objective: Objective, tx: optax.GradientTransformation,
                       schedule: optax.Schedule | None = None, teacher_model: Any = None,
                       inplace: bool = False) -> Callable:  # fmt: skip
    """The pure step `(state, batch, archs, buckets) -> (state, metrics)`: `archs` an `ArchArrays` of [k]
    archs (data) and `buckets` their k `Bucket`s (static). The loss is the mean over the k archs (k > 1:
    the sandwich rule); metrics are those of the mean sums, plus grad_norm and lr.

    `inplace` (in-place distillation, BigNAS): arch 0 — the largest — minimises `objective`, and each
    other arch the KL to arch 0's masked-LM logits (computed in the same step, without gradient);
    metrics are arch 0's, `loss` the mean over the archs and `inplace_kd` the students' mean KL."""
    student = inplace_student(objective)

    def inplace_loss(params, batch, archs, buckets, step_rng, teacher_out, denoms):
        largest = jax.tree.map(lambda a: a[0], archs)
        teacher = LogitsTeacher(jax.lax.stop_gradient(
            supernet.apply(params, largest, buckets[0], batch["input_ids"], batch["attention_mask"]).logits))
        first = objective.sums(supernet, params, largest, buckets[0], batch, jax.random.fold_in(step_rng, 0), teacher_out)
        losses = [objective.objective(first, denoms)]
        for j in range(1, len(buckets)):
            arch = jax.tree.map(lambda a: a[j], archs)
            sums = student.sums(supernet, params, arch, buckets[j], batch, jax.random.fold_in(step_rng, j), teacher)
            losses.append(student.objective(sums, denoms))  # the KL to the largest's logits
        metrics = objective.metrics(first, denoms)
        metrics["inplace_kd"] = jnp.mean(jnp.stack(losses[1:]))
        metrics["loss"] = jnp.mean(jnp.stack(losses))
        return metrics["loss"], metrics

    def step(state: TrainState, batch: dict, archs: ArchArrays, buckets: tuple[Bucket, ...]):
        rng, step_rng = jax.random.split(state.rng)
        denoms = objective.denominators(batch)
        teacher_out = _teacher_out(teacher_model, state.teacher, batch)

        def loss_fn(params):
            if inplace:
                return inplace_loss(params, batch, archs, buckets, step_rng, teacher_out, denoms)
            total = None
            for j, bucket in enumerate(buckets):
                arch = jax.tree.map(lambda a: a[j], archs)
                sums = objective.sums(supernet, params, arch, bucket, batch, jax.random.fold_in(step_rng, j), teacher_out)
                total = sums if total is None else jax.tree.map(jnp.add, total, sums)
            mean = jax.tree.map(lambda s: s / len(buckets), total)
            return objective.objective(mean, denoms), objective.metrics(mean, denoms)

        (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        metrics["grad_norm"] = optax.tree.norm(grads)
        if schedule is not None:
            metrics["lr"] = jnp.asarray(schedule(state.step), jnp.float32)
        new = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                            opt_state=opt_state, rng=rng)  # fmt: skip
        return new, metrics

    return step


def jit_supernet_step(step: Callable, state: TrainState) -> Callable:
    """`step` jitted with the buckets static and the state donated (shardings kept)."""
    shardings = jax.tree.map(lambda x: x.sharding, state)
    return jax.jit(step, static_argnums=3, donate_argnums=0, out_shardings=(shardings, None))


class ArchEvaluator:
    """Held-out masked-LM loss of the SuperNet at any arch: one jitted function, compiled once per
    bucket (never per arch). `evaluator(params, arch, batches) -> {"loss", "accuracy", "perplexity"}`."""

    def __init__(self, supernet: SuperNet, max_predictions: int | None = None):
        self.supernet = supernet
        self.objective = Objective("mlm", max_predictions)

        def sums(params, arch: ArchArrays, batch, bucket: Bucket) -> tuple[Sums, Sums]:
            return self.objective.sums(supernet, params, arch, bucket, batch, None), self.objective.denominators(batch)

        self.sums = jax.jit(sums, static_argnums=3)

    def compilations(self) -> int:
        """How many programs the jitted function holds (one per bucket seen)."""
        return self.sums._cache_size()

    def __call__(self, params: Any, arch: Arch, batches) -> dict[str, float]:
        arch = self.supernet.space.check(arch)
        totals = summed_over_batches(self.sums, params, arch, batches, self.supernet.bucket(arch))
        return {k: float(v) for k, v in jax.device_get(self.objective.metrics(*totals)).items()}


def summed_over_batches(sums: Callable, params: Any, arch: Arch, batches, bucket: Bucket) -> Any:
    """Σ over `batches` of the jitted `sums(params, arch_arrays, batch, bucket)` (a pytree of sums)."""
    totals = None
    for batch in batches:
        out = sums(params, ArchArrays.of(arch), batch, bucket)
        totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
    if totals is None:
        raise ValueError("no evaluation batches")
    return totals
