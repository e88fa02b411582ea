"""The training state: a pytree of step, params, optimizer state, rng and (for distillation) the
frozen teacher variables."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from ..modeling import compute_copies


@flax.struct.dataclass
class TrainState:
    """Everything a training step reads and writes. `teacher` is carried unchanged and is not
    checkpointed (it is reloaded from its directory)."""

    step: jax.Array  # [] int32, optimizer steps done
    params: Any
    opt_state: optax.OptState
    rng: jax.Array  # [2] uint32 PRNG key
    teacher: Any = None
    compute: Any = None  # low-precision copies of the matmul weights (`modeling.compute_copies`), or None


def create_state(params: Any, tx: optax.GradientTransformation, seed: int, teacher: Any = None,
                 compute_dtype: Any = None) -> TrainState:  # fmt: skip
    """A fresh state at step 0 (`params` is the inner param tree, without {"params": …}). With a
    `compute_dtype` below float32 (the model's `dtype`), the state also carries the weights' copies in
    that dtype, which every step refreshes right after its update instead of casting them in the forward."""
    compute = None
    if compute_dtype is not None and jnp.dtype(compute_dtype) != jnp.float32:
        compute = compute_copies(params, compute_dtype) or None
    return TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), jax.random.PRNGKey(seed), teacher, compute)


def refreshed_compute(state: TrainState, params: Any) -> Any:
    """`state.compute` remade from `params` (None stays None)."""
    if state.compute is None:
        return None
    return compute_copies(params, jax.tree.leaves(state.compute)[0].dtype)


def checkpoint_tree(state: TrainState) -> dict[str, Any]:
    """The parts of the state a checkpoint holds."""
    return {"step": state.step, "params": state.params, "opt_state": state.opt_state, "rng": state.rng}


def from_checkpoint_tree(state: TrainState, tree: dict[str, Any]) -> TrainState:
    """`state` with its checkpointed parts replaced by `tree` (compute copies remade from its params)."""
    state = state.replace(**tree)
    return state.replace(compute=refreshed_compute(state, state.params))
