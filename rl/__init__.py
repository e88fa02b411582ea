"""rl: jitted PPO (PureJaxRL-style) with MLP / LSTM / DistilBERT policies on a loop-nest scheduling env.

Importing `rl` before JAX's CPU backend starts adds `--xla_cpu_multi_thread_eigen=false` to XLA_FLAGS:
with the multi-threaded Eigen pool, vmapped PPO programs sporadically wedge on CPU (all XLA threads
asleep in `block_until_ready`; cf. PyAutoFit#1530). Set RL_KEEP_XLA_FLAGS=1 to opt out.
"""

import os as _os

if not _os.environ.get("RL_KEEP_XLA_FLAGS") and "xla_cpu_multi_thread_eigen" not in _os.environ.get("XLA_FLAGS", ""):
    _os.environ["XLA_FLAGS"] = (_os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()
