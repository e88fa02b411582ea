"""rl: jitted PPO (PureJaxRL-style) with MLP / LSTM / DistilBERT policies on a loop-nest scheduling env.

Importing `rl` before JAX's CPU backend starts adds `--xla_cpu_multi_thread_eigen=false` to XLA_FLAGS:
with the multi-threaded Eigen pool, vmapped PPO programs sporadically wedge on CPU (all XLA threads
asleep in `block_until_ready`; cf. PyAutoFit#1530). Set RL_KEEP_XLA_FLAGS=1 to opt out.
"""

import os as _os

if not _os.environ.get("RL_KEEP_XLA_FLAGS") and "xla_cpu_multi_thread_eigen" not in _os.environ.get("XLA_FLAGS", ""):
    _os.environ["XLA_FLAGS"] = (_os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()

from .config import ENVS, PPOConfig  # noqa: E402
from .cost_model import Machine, OpCost, op_cost  # noqa: E402
from .distributions import entropy, log_prob  # noqa: E402
from .env import SchedState, SchedulingEnv  # noqa: E402
from .envs import Env, make_env, sched_env  # noqa: E402
from .evaluate import evaluate_schedules, geomean_speedups  # noqa: E402
from .networks import MODEL_TYPES, ActorCritic, DistilBertEmbedding, LSTMEmbedding, MLPEmbedding  # noqa: E402
from .ppo import Transition, gae, make_setup, make_train, run_updates  # noqa: E402
from .programs import test_programs, train_programs  # noqa: E402
