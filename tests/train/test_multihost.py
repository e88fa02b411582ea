"""Multi-host for real: two processes on localhost joined by `jax.distributed` (CPU collectives over
gloo, 127.0.0.1 only), each feeding its half of every batch, train data-parallel and end with the same
params as one process training on the whole batch."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np

from distilbert_jax.train import enable_compile_cache, train
from distilbert_jax.train.config import tiny_config

enable_compile_cache()
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

WORKER = """
import json, sys
import jax, numpy as np
from distilbert_jax.train import TrainConfig, train
cfg = TrainConfig.from_dict(json.loads(sys.argv[1]))
result = train(cfg)  # cfg.distributed: jax.distributed.initialize from JAX_COORDINATOR_ADDRESS & co.
assert jax.process_count() == 2 and jax.device_count() == 2 and jax.local_device_count() == 1
params = [np.asarray(x).ravel()[:64].tolist() for x in jax.tree.leaves(jax.device_get(result.state.params))]
print("RESULT" + json.dumps({"process": jax.process_index(), "losses": [r["loss"] for r in result.history["train"]],
                             "eval": result.final_eval, "params": params}))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(out_dir, **changes):
    # dropout on: each process's dropout masks must be its rows' masks of the 1-process run
    return tiny_config(total_steps=2, checkpoint_every=0, eval_batches=1, out_dir=str(out_dir), data={"batch_size": 8},
                       **changes)  # fmt: skip


def test_two_processes_match_one_process(tmp_path):
    cfg2 = _config(tmp_path / "two", distributed=True)
    port = _free_port()
    procs = []
    for pid in range(2):
        env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                   JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(pid), PYTHONPATH=ROOT)  # fmt: skip
        env.pop("XLA_FLAGS", None)
        procs.append(subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(cfg2.to_dict())], cwd=ROOT, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))  # fmt: skip
    results = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=300)
            assert p.returncode == 0, err[-3000:]
            results.append(json.loads(out.split("RESULT", 1)[1]))
    finally:
        for p in procs:
            p.kill()
    assert sorted(r["process"] for r in results) == [0, 1]

    one = train(_config(tmp_path / "one"))
    assert jax.process_count() == 1
    for r in results:
        np.testing.assert_allclose(r["losses"], [h["loss"] for h in one.history["train"]], rtol=1e-5)
        for name, value in one.final_eval.items():
            np.testing.assert_allclose(r["eval"][name], value, rtol=1e-5, err_msg=name)
        for a, b in zip(r["params"], jax.tree.leaves(jax.device_get(one.state.params))):
            np.testing.assert_allclose(a, np.asarray(b).ravel()[:64], atol=1e-5)
