"""Data parallelism: an 8-device run (CPU devices forced with XLA_FLAGS, in a subprocess) gives the
same loss curve and params as the 1-device run at the same global batch; bad batch sizes fail clearly."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from distilbert_jax.train import check_batch_size, data_mesh, enable_compile_cache, train
from distilbert_jax.train.config import tiny_config

enable_compile_cache()
ROOT = os.path.join(os.path.dirname(__file__), "..", "..")

SCRIPT = """
import json, sys
import jax, numpy as np
from distilbert_jax.train import check_batch_size, data_mesh, enable_compile_cache, train, TrainConfig
enable_compile_cache()
assert jax.device_count() == 8, jax.devices()
try:
    check_batch_size(12, 1, data_mesh())
    error = None
except ValueError as e:
    error = str(e)
cfg = TrainConfig.from_dict(json.loads(sys.argv[1]))
result = train(cfg)
params = [np.asarray(x).ravel()[:64].tolist() for x in jax.tree.leaves(jax.device_get(result.state.params))]
shardings = sorted({str(x.sharding.spec) for x in jax.tree.leaves(result.state.params)})
print("RESULT" + json.dumps({"losses": [r["loss"] for r in result.history["train"]], "eval": result.final_eval,
                             "params": params, "error": error, "shardings": shardings, "devices": jax.device_count()}))
"""


def _config(out_dir):
    # dropout on and 2 micro-batches: the sharded dropout masks and accumulation must match too
    return tiny_config(total_steps=4, checkpoint_every=2, out_dir=str(out_dir),
                       data={"batch_size": 16}, optim={"grad_accum_steps": 2})  # fmt: skip


def test_eight_devices_match_one_device(tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    cfg8 = _config(tmp_path / "eight")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(cfg8.to_dict())], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    eight = json.loads(proc.stdout.split("RESULT", 1)[1])
    assert eight["devices"] == 8 and eight["shardings"] == ["P()"]  # params replicated
    assert "not divisible by the 8 devices" in eight["error"]

    one = train(_config(tmp_path / "one"))
    assert jax.device_count() == 1
    np.testing.assert_allclose(eight["losses"], [r["loss"] for r in one.history["train"]], rtol=1e-5)
    for name, value in one.final_eval.items():
        np.testing.assert_allclose(eight["eval"][name], value, rtol=1e-5, err_msg=name)
    for a, b in zip(eight["params"], jax.tree.leaves(jax.device_get(one.state.params))):
        np.testing.assert_allclose(a, np.asarray(b).ravel()[:64], atol=1e-5)


def test_batch_size_must_split_over_micro_batches_and_devices():
    mesh = data_mesh()
    check_batch_size(8, 2, mesh)
    with pytest.raises(ValueError, match="not divisible"):
        check_batch_size(7, 2, mesh)
