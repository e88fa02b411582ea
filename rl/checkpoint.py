"""Checkpoints: the whole (seed-batched) `RunnerState` as flax msgpack, written atomically, plus config."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

from flax import serialization


def save(path: str, runner: Any, config: dict) -> None:
    """Write `runner` to `path` (tmp file + rename, so a crash never leaves a torn checkpoint)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    blob = serialization.msgpack_serialize({"config": json.dumps(config, sort_keys=True),
                                            "state": serialization.to_state_dict(runner)})
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(blob)
    os.replace(tmp, path)


def load_params(path: str, template: Any) -> Any:
    """The params of the first seed of a runner saved by `save`, in the structure of `template` (one seed's
    params, arrays or `jax.ShapeDtypeStruct`s); every shape is checked and all mismatches are reported at once."""
    import jax
    import numpy as np

    with open(path, "rb") as f:
        raw = serialization.msgpack_restore(f.read())
    saved = jax.tree.map(lambda x: np.asarray(x)[0], raw["state"]["train"]["params"])
    want = serialization.to_state_dict(template)
    got_shapes = {jax.tree_util.keystr(k): v.shape for k, v in jax.tree_util.tree_leaves_with_path(saved)}
    bad = [f"{k}: checkpoint {got_shapes.get(k)}, model {tuple(v.shape)}"
           for k, v in ((jax.tree_util.keystr(k), v) for k, v in jax.tree_util.tree_leaves_with_path(want))
           if got_shapes.get(k) != tuple(v.shape)]
    bad += [f"{k}: in the checkpoint only" for k in set(got_shapes) - {jax.tree_util.keystr(k) for k, _ in
                                                                        jax.tree_util.tree_leaves_with_path(want)}]
    if bad:
        raise ValueError(f"params of {path} do not fit the model: " + "; ".join(sorted(bad)))
    return serialization.from_state_dict(template, saved)


def load(path: str, template: Any, config: dict | None = None, defaults: dict | None = None) -> Any:
    """Restore a runner saved by `save` into the structure of `template`. With `config`, refuse a
    checkpoint written for a different config (other than the keys that do not change the state); a key
    the saved config lacks (added since) counts as its value in `defaults`."""
    with open(path, "rb") as f:
        raw = serialization.msgpack_restore(f.read())
    if config is not None:
        saved = {**(defaults or {}), **json.loads(raw["config"])}
        ignore = {"total_timesteps", "updates_per_chunk", "eval_samples", "eval_backend", "out_dir", "name"}
        diff = sorted(k for k in set(saved) | set(config) if k not in ignore and saved.get(k) != config.get(k))
        if diff:
            raise ValueError(f"checkpoint {path} was written with a different config (keys {diff}); "
                             "use --no-resume or another out_dir")
    return serialization.from_state_dict(template, raw["state"])
