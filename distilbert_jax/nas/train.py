"""SuperNet training on the training stack: the same data sources, optimizer, orbax checkpoints (with
the data position), TensorBoard / JSONL / PNG run log, tqdm bar, NaN stop and data-parallel mesh as
`distilbert_jax.train`; each step trains fresh archs drawn from a seeded stream that is a pure function
of (seed, step), so a resumed run trains exactly the archs an uninterrupted one would."""

from __future__ import annotations

import dataclasses
import itertools
import os
from typing import Any

import jax

import distilbert_jax as dj
from distilbert_jax.train.config import ConfigError, TrainConfig
from distilbert_jax.train.data import BatchSource
from distilbert_jax.train.sources import make_sources
from distilbert_jax.train.loop import run_loop
from distilbert_jax.train.models import DTYPES, model_config
from distilbert_jax.train.optim import make_optimizer
from distilbert_jax.train.parallel import check_batch_size, data_mesh, global_batch, replicate
from distilbert_jax.train.state import TrainState, create_state
from distilbert_jax.train.tasks import mlm_max_predictions

from .config import NasSettings
from .io import save_supernet
from .objectives import Objective
from .space import Arch
from .step import ArchEvaluator, jit_supernet_step, make_supernet_step
from .supernet import ArchArrays, SuperNet


@dataclasses.dataclass
class NasResult:
    """What `train_supernet` returns."""

    state: TrainState
    supernet: SuperNet
    history: dict[str, list[dict[str, float]]]
    final_eval: dict[str, float]
    supernet_dir: str | None
    plot_path: str | None
    compilations: int  # programs the jitted step compiled in this run (one per bucket combination seen)


def step_archs(settings: NasSettings, seed: int, step: int) -> list[Arch]:
    """The archs step `step` trains: [largest, smallest] with the sandwich rule ([largest] with in-place
    distillation alone), then `random_archs` archs of the seeded stream (a pure function of seed and step)."""
    s = settings.space
    fixed = [s.largest(), s.smallest()] if settings.sandwich else [s.largest()] if settings.inplace_distill else []
    return fixed + [s.arch_at(seed, step * settings.random_archs + j) for j in range(settings.random_archs)]


def eval_arch_list(settings: NasSettings) -> list[tuple[str, Arch]]:
    """(name, arch) of each of `settings.eval_archs`."""
    s = settings.space
    named = {"smallest": s.smallest(), "largest": s.largest()}
    return [(a, named[a]) if a in named else (str(s.check(a)), s.check(a)) for a in settings.eval_archs]


def load_teacher(settings: NasSettings, supernet: SuperNet, dtype: Any):
    """The distillation teacher `(model, variables)`, loaded as a masked-LM; its vocabulary must match."""
    try:
        model, variables = dj.from_pretrained(settings.teacher, head="masked_lm", dtype=dtype)
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(f"teacher: {e}") from None
    if model.config.vocab_size != supernet.base.vocab_size:
        raise ConfigError(f"teacher {settings.teacher} has vocab_size {model.config.vocab_size} but the SuperNet "
                          f"{supernet.base.vocab_size}: distillation needs the same tokenizer (set 'tokenizer' to "
                          "the teacher's directory)")  # fmt: skip
    return model, variables


def train_supernet(settings: NasSettings, cfg: TrainConfig, *, train_source: BatchSource | None = None) -> NasResult:
    """Train (or resume) the SuperNet of `settings` with the data / optimizer / schedule of `cfg`
    (`train_source` overrides the training batches of `cfg.data`)."""
    if cfg.optim.grad_accum_steps != 1:
        raise ConfigError("optim.grad_accum_steps: SuperNet steps do not accumulate (use the sandwich rule or a "
                          "smaller batch)")  # fmt: skip
    mesh = data_mesh()
    check_batch_size(cfg.data.batch_size, 1, mesh)
    data = make_sources(cfg)
    train_source = train_source or data.train
    dtype = DTYPES[cfg.dtype]
    supernet = SuperNet(settings.space, model_config(cfg, data.vocab_size), settings.buckets, dtype)
    teacher_model, teacher = load_teacher(settings, supernet, dtype) if settings.objective == "distill" else (None, None)
    objective = Objective(settings.objective, mlm_max_predictions(cfg), settings.temperature, settings.logits_weight,
                          settings.attention_weight, settings.relation_weight, settings.hard_weight)  # fmt: skip
    tx, schedule = make_optimizer(cfg.optim, cfg.total_steps)
    state = replicate(create_state(supernet.init(cfg.seed), tx, cfg.seed, teacher), mesh)
    evaluator = ArchEvaluator(supernet, objective.max_predictions)
    jitted: list[Any] = []  # the jitted step, for its compilation count

    def make_step(state: TrainState):
        step_fn = make_supernet_step(supernet, objective, tx, schedule, teacher_model, settings.inplace_distill)
        jitted.append(jit_supernet_step(step_fn, state))

        def step(state: TrainState, batch: Any, i: int):
            archs = step_archs(settings, cfg.seed, i)
            return jitted[0](state, batch, ArchArrays.stack(archs), tuple(supernet.bucket(a) for a in archs))

        return step

    def evaluate_at(state: TrainState) -> dict[str, float]:
        metrics = {}
        for name, arch in eval_arch_list(settings):
            batches = (global_batch(b, mesh) for b in itertools.islice(data.make_eval(), cfg.eval_batches))
            for k, v in evaluator(state.params, arch, batches).items():
                metrics[f"{k}@{name}"] = v
        return metrics

    nas = dataclasses.asdict(settings) | {"space": settings.space.to_dict()}
    result = run_loop(cfg, state, train_source, mesh, make_step, evaluate_at, desc="supernet",
                      config_file="nas_config.json", config={**nas, **cfg.to_dict()},
                      shown=lambda name: name.startswith("loss"))  # fmt: skip
    supernet_dir = None
    if jax.process_index() == 0:
        supernet_dir = os.path.join(cfg.out_dir, "supernet")
        save_supernet(supernet_dir, supernet, result.state.params, data.tokenizer)
    return NasResult(result.state, supernet, result.history, result.final_eval, supernet_dir, result.plot_path,
                     jitted[0]._cache_size())
