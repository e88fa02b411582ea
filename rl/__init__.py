"""rl: jitted PPO (PureJaxRL-style) with MLP / LSTM / DistilBERT policies on a loop-nest scheduling env.

Importing `rl` changes no global setting (XLA_FLAGS included): the XLA:CPU wedge of vmapped PPO inits is
avoided by `networks.orthogonal`, whose QR is not batched (see its docstring for the cause).
"""

from .config import ENVS, PPOConfig
from .cost_model import Machine, OpCost, op_cost
from .distributions import entropy, log_prob
from .env import SchedState, SchedulingEnv
from .envs import Env, make_env, sched_env
from .evaluate import evaluate_schedules, geomean_speedups
from .networks import MODEL_TYPES, ActorCritic, DistilBertEmbedding, LSTMEmbedding, MLPEmbedding
from .ppo import Transition, gae, make_setup, make_train, run_updates
from .programs import test_programs, train_programs
