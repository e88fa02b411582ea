"""Issue 21 item 8, rl.train: killed with SIGKILL between chunks (after the history, before the checkpoint —
the worst moment), the rerun resumes and ends bit-identical to an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys

import jax
import numpy as np
from flax import serialization

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = {"env": "CartPole-v1", "model_type": "mlp", "seeds": [0], "total_timesteps": 4 * 4 * 16, "num_envs": 4,
        "num_steps": 16, "update_epochs": 1, "num_minibatches": 2, "width": 16, "updates_per_chunk": 1,
        "name": "run"}  # fmt: skip


def _train(tmp_path, out: str, kill_at: str = "") -> int:
    """`python -m rl.train` on TINY (the processes share one XLA cache: one compilation for the three runs)."""
    path = tmp_path / f"{out}.json"
    path.write_text(json.dumps({**TINY, "out_dir": str(tmp_path / out)}))
    env = {**os.environ, "DISTILBERT_JAX_KILL_AT": kill_at, "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "xla"),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1"}
    r = subprocess.run([sys.executable, "-m", "rl.train", "--config", str(path)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode in (0, -signal.SIGKILL), r.stderr[-2000:]
    return r.returncode


def _state(run) -> list:
    raw = serialization.msgpack_restore((run / "checkpoint.msgpack").read_bytes())
    return jax.tree.leaves(raw["state"])


def test_killed_rl_train_resumes_to_the_uninterrupted_result(tmp_path):
    assert _train(tmp_path, "killed", "rl_chunk:2") == -signal.SIGKILL  # 2 chunks' history saved, 1 checkpointed
    run = tmp_path / "killed" / "run"
    assert sorted(n for n in os.listdir(run) if "tmp" in n) == []  # no torn or temporary file
    assert np.load(run / "history.npz")["episodes"].shape[1] == 2
    assert _train(tmp_path, "killed") == 0  # resumes from the checkpoint of update 1
    assert _train(tmp_path, "whole") == 0
    for a, b in zip(_state(run), _state(tmp_path / "whole" / "run"), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    got, want = np.load(run / "history.npz"), np.load(tmp_path / "whole" / "run" / "history.npz")
    assert sorted(got) == sorted(want)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
