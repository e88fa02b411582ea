"""Checkpoints with orbax: periodic, atomic (orbax writes to a temporary directory and renames),
keep-last-N. Each holds the state's step, params, optimizer state and rng, plus the data iterator's
position as JSON, so a resumed run continues exactly where the saved one was."""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from .state import TrainState, checkpoint_tree, from_checkpoint_tree


class Checkpoints:
    """Checkpoints of one run in `directory` (`step_<n>` subdirectories), the newest `keep` kept."""

    def __init__(self, directory: str | os.PathLike, keep: int = 3):
        self.directory = os.path.abspath(os.fspath(directory))
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=False)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or None."""
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(self, state: TrainState, data_state: dict[str, Any]) -> int:
        """Save `state` (minus the teacher) and the data position under the state's step; returns it."""
        step = int(jax.device_get(state.step))
        args = ocp.args.Composite(state=ocp.args.StandardSave(checkpoint_tree(state)), data=ocp.args.JsonSave(data_state))
        self.manager.save(step, args=args, force=True)
        self.manager.wait_until_finished()
        return step

    def restore(self, state: TrainState, step: int | None = None) -> tuple[TrainState, dict[str, Any]]:
        """`(state, data_state)` from checkpoint `step` (default: the newest); `state` gives the tree
        structure, shapes and shardings to restore onto."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, checkpoint_tree(state))
        args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore())
        restored = self.manager.restore(step, args=args)
        return from_checkpoint_tree(state, restored["state"]), restored["data"]

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
