"""Training for distilbert_jax: one jitted step for every task (MLM, classification, token
classification, QA, knowledge distillation), data parallel over all devices, orbax checkpoints.

    python -m distilbert_jax.train mlm --config distilbert_jax/train/configs/mlm_small.json
"""

from .config import ConfigError, DataConfig, DistillConfig, OptimConfig, TrainConfig
from .checkpoint import Checkpoints
from .data import DeviceFeeder, SyntheticBatches
from .loop import TrainingDiverged, TrainResult, evaluate, train
from .optim import make_optimizer, make_schedule
from .parallel import check_batch_size, data_mesh, enable_compile_cache, global_batch, initialize_distributed, replicate
from .state import TrainState, create_state
from .step import jit_train_step, make_eval_step, make_train_step, split_microbatches
from .tasks import Task, task_for

__all__ = [
    "Checkpoints", "ConfigError", "DataConfig", "DeviceFeeder", "DistillConfig", "OptimConfig", "SyntheticBatches",
    "Task", "TrainConfig", "TrainResult", "TrainState", "TrainingDiverged", "check_batch_size", "create_state",
    "data_mesh", "enable_compile_cache", "evaluate", "global_batch", "initialize_distributed", "jit_train_step", "make_eval_step",
    "make_optimizer", "make_schedule", "make_train_step", "replicate", "split_microbatches", "task_for", "train",
]
