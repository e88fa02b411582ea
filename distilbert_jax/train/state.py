"""The training state: a pytree of step, params, optimizer state, rng and (for distillation) the
frozen teacher variables."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
    """Everything a training step reads and writes. `teacher` is carried unchanged and is not
    checkpointed (it is reloaded from its directory)."""

    step: jax.Array  # [] int32, optimizer steps done
    params: Any
    opt_state: optax.OptState
    rng: jax.Array  # [2] uint32 PRNG key
    teacher: Any = None


def create_state(params: Any, tx: optax.GradientTransformation, seed: int, teacher: Any = None) -> TrainState:
    """A fresh state at step 0 (`params` is the inner param tree, without {"params": …})."""
    return TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), jax.random.PRNGKey(seed), teacher)


def checkpoint_tree(state: TrainState) -> dict[str, Any]:
    """The parts of the state a checkpoint holds."""
    return {"step": state.step, "params": state.params, "opt_state": state.opt_state, "rng": state.rng}


def from_checkpoint_tree(state: TrainState, tree: dict[str, Any]) -> TrainState:
    """`state` with its checkpointed parts replaced by `tree`."""
    return state.replace(**tree)
