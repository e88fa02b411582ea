"""The training loop: build everything from a `TrainConfig`, resume from the newest checkpoint,
run the jitted step with metrics fetched a step late, evaluate, checkpoint, stop on NaN / inf, and
export the final model as a Hugging Face directory."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
from tqdm.auto import tqdm

import distilbert_jax as dj

from ..faults import kill_point
from .checkpoint import Checkpoints
from .config import TrainConfig
from .data import BatchSource, DeviceFeeder
from .models import build_student, load_teacher
from .optim import make_optimizer
from .parallel import check_batch_size, data_mesh, global_batch, initialize_distributed, replicate
from .reporting import RunLog
from .sources import make_sources
from .state import TrainState, create_state
from .step import jit_train_step, make_eval_step, make_train_step
from .tasks import Task, task_for


class TrainingDiverged(RuntimeError):
    """The loss or gradient norm became NaN / inf; the run stopped without saving the bad state."""


@dataclasses.dataclass
class TrainResult:
    """What `train` returns: the final state and model, the metric history, the final evaluation,
    and where the HF export and the plot were written."""

    state: TrainState
    model: nn.Module
    history: dict[str, list[dict[str, float]]]
    final_eval: dict[str, float]
    export_dir: str | None
    plot_path: str | None


def evaluate(eval_step: Callable, state: TrainState, source: BatchSource, mesh, batches: int, task: Task
             ) -> dict[str, float]:  # fmt: skip
    """Metrics over `batches` batches of `source` (sums added on device, fetched once)."""
    totals = None
    for _ in range(batches):
        try:
            local = next(source)
        except StopIteration:
            break
        out = eval_step(state, global_batch(local, mesh))
        totals = out if totals is None else jax.tree.map(lambda a, b: a + b, totals, out)
    if totals is None:
        raise ValueError("the evaluation data is empty")
    return {k: float(v) for k, v in jax.device_get(task.metrics(*totals)).items()}


def _finite_or_stop(step: int, metrics: dict[str, float], last_good: int | None, ckpt_dir: str) -> None:
    bad = [k for k in ("loss", "grad_norm") if k in metrics and not math.isfinite(metrics[k])]
    if bad:
        kept = f"the last good checkpoint is step {last_good} in {ckpt_dir}" if last_good is not None else "no checkpoint was saved"
        values = ", ".join(f"{k}={metrics[k]}" for k in bad)
        raise TrainingDiverged(f"training diverged at step {step} ({values}); stopped without saving; {kept}")


# keys a resumed run may change: they do not change what the saved state means (total_steps is named)
RESUMABLE_CHANGES = {"out_dir", "resume", "progress", "distributed", "log_every", "eval_every", "eval_batches",
                     "checkpoint_every", "keep_checkpoints", "eval_archs", "total_steps"}  # fmt: skip


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v})
    return out


def check_resume_config(path: str, config: dict, step: int) -> list[str]:
    """Refuse to resume, at checkpoint `step`, a run whose saved config (`path`) differs from `config` in a
    key that changes what the saved state means (model, data, optimizer, seed, …): `ConfigError` naming each
    key, old -> new. Returns notes on the allowed changes that matter (total_steps: the schedule's length)."""
    from .config import ConfigError
    from ..jsonfile import read_json_object

    if not os.path.isfile(path):
        return []
    old, new = _flat(read_json_object(path, ConfigError)), _flat(json.loads(json.dumps(config)))
    changed = [(k, old.get(k, "<absent>"), new.get(k, "<absent>")) for k in sorted(set(old) | set(new))
               if old.get(k) != new.get(k)]  # fmt: skip
    bad = [f"{k}: {a!r} -> {b!r}" for k, a, b in changed if k.split(".")[0] not in RESUMABLE_CHANGES]
    if bad:
        raise ConfigError(f"{os.path.dirname(path)} holds a checkpoint (step {step}) of a run with another config "
                          f"({'; '.join(bad)}); resuming would mix the two: rerun with the same config, or start "
                          "afresh (--no-resume, --set resume=false) or in another out_dir")  # fmt: skip
    return [f"resuming at step {step} with total_steps {b} (the saved run had {a}): the learning-rate schedule now "
            f"runs to step {b}" for k, a, b in changed if k == "total_steps"]  # fmt: skip


@dataclasses.dataclass
class LoopResult:
    """What `run_loop` returns: the final state, the metric history, the final evaluation and the plot."""

    state: Any
    history: dict[str, list[dict[str, float]]]
    final_eval: dict[str, float]
    plot_path: str | None


def run_loop(
    cfg: TrainConfig,
    state: Any,
    train_source: BatchSource,
    mesh,
    make_step: Callable[[Any], Callable[[Any, Any, int], tuple[Any, Any]]],
    evaluate_at: Callable[[Any], dict[str, float]],
    *,
    desc: str,
    config_file: str,
    config: dict,
    shown: Callable[[str], bool] = lambda name: True,
) -> LoopResult:
    """The loop every training run shares: resume `state` and the data position from the newest
    checkpoint (with `cfg.resume`), write `config` to `out_dir/config_file`, then for each remaining step
    call `step(state, batch, step_index)` (`make_step(state)` builds it once, after resuming) with its
    metrics fetched a step late, stop on NaN / inf, checkpoint and evaluate (`evaluate_at(state)`) every
    `cfg.…_every` steps, log to the run log and a tqdm bar (eval metrics printed where `shown(name)`),
    and evaluate once more at the end."""
    lead = jax.process_index() == 0
    ckpt_dir = os.path.join(cfg.out_dir, "checkpoints")
    checkpoints = Checkpoints(ckpt_dir, keep=cfg.keep_checkpoints)
    last_good = checkpoints.latest_step() if cfg.resume else None
    if last_good is not None:
        for note in check_resume_config(os.path.join(cfg.out_dir, config_file), config, last_good):
            warnings.warn(note, stacklevel=2)
        state, data_state = checkpoints.restore(state, last_good)
        train_source.load_state_dict(data_state)
    start = int(jax.device_get(state.step))
    if lead:
        os.makedirs(cfg.out_dir, exist_ok=True)
        with open(os.path.join(cfg.out_dir, config_file), "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2)

    step_fn = make_step(state)
    log = RunLog(cfg.out_dir, enabled=lead)
    bar = tqdm(total=cfg.total_steps, initial=start, disable=not (cfg.progress and lead), desc=desc, unit="step")
    feeder = DeviceFeeder(train_source, mesh)
    pending: tuple[int, Any] | None = None

    def flush() -> None:  # fetch the previous step's metrics (a step late: no sync in the hot loop)
        nonlocal pending
        if pending is None:
            return
        n, metrics = pending
        pending = None
        values = {k: float(v) for k, v in jax.device_get(metrics).items()}
        _finite_or_stop(n, values, last_good, ckpt_dir)
        log.log("train", n, values)
        bar.update(1)
        bar.set_postfix(loss=f"{values['loss']:.4f}")
        if lead and (n % cfg.log_every == 0 or n == cfg.total_steps):
            bar.write(f"step {n}: " + " ".join(f"{k}={v:.4g}" for k, v in values.items()))

    def run_eval(n: int) -> dict[str, float]:
        metrics = evaluate_at(state)
        log.log("eval", n, metrics)
        if lead:
            bar.write(f"eval @ {n}: " + " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if shown(k)))
        return metrics

    try:
        for i in range(start, cfg.total_steps):
            try:
                batch, data_state = next(feeder)
            except StopIteration:
                raise ValueError(f"the training data ran out at step {i}; use more data or epochs") from None
            state, metrics = step_fn(state, batch, i)
            flush()
            pending = (i + 1, metrics)
            n = i + 1
            if (cfg.checkpoint_every and n % cfg.checkpoint_every == 0) or n == cfg.total_steps:
                flush()
                last_good = checkpoints.save(state, data_state)
            if cfg.eval_every and n % cfg.eval_every == 0 and n != cfg.total_steps:
                flush()
                run_eval(n)
            kill_point("train_step")
        flush()
        final_eval = run_eval(int(jax.device_get(state.step)))
    finally:
        bar.close()
        checkpoints.close()
        plot_path = log.plot()
        log.close()
    return LoopResult(state, log.history, final_eval, plot_path)


def train(cfg: TrainConfig, *, train_source: BatchSource | None = None,
          eval_source_fn: Callable[[], BatchSource] | None = None) -> TrainResult:  # fmt: skip
    """Run (or resume) the training of `cfg`. `train_source` / `eval_source_fn` override the data
    of `cfg.data` (the eval function is called once per evaluation for a fresh iterator)."""
    if cfg.distributed:
        initialize_distributed()
    mesh = data_mesh()
    check_batch_size(cfg.data.batch_size, cfg.optim.grad_accum_steps, mesh)
    data = make_sources(cfg)
    tokenizer = data.tokenizer
    train_source = train_source or data.train
    eval_source_fn = eval_source_fn or data.make_eval
    model, params = build_student(cfg, data.vocab_size, data.num_labels)
    task = task_for(cfg, model.config.num_labels, data.label_names)
    teacher_model, teacher = load_teacher(cfg, model, tokenizer) if cfg.task == "distill" else (None, None)
    tx, schedule = make_optimizer(cfg.optim, cfg.total_steps)
    state = replicate(create_state(params, tx, cfg.seed, teacher, compute_dtype=model.dtype), mesh)
    eval_step = jax.jit(make_eval_step(model, task, teacher_model))

    def make_step(state: TrainState):
        jitted = jit_train_step(make_train_step(model, task, tx, schedule, grad_accum_steps=cfg.optim.grad_accum_steps,
                                                teacher_model=teacher_model, mesh=mesh), state)  # fmt: skip
        return lambda state, batch, _i: jitted(state, batch)

    result = run_loop(cfg, state, train_source, mesh, make_step,
                      lambda state: evaluate(eval_step, state, eval_source_fn(), mesh, cfg.eval_batches, task),
                      desc=cfg.task, config_file="train_config.json", config=cfg.to_dict())  # fmt: skip
    export_dir = None
    if jax.process_index() == 0:
        export_dir = os.path.join(cfg.out_dir, "model")
        dj.save_pretrained(export_dir, model, {"params": jax.device_get(result.state.params)}, tokenizer)
    return TrainResult(result.state, model, result.history, result.final_eval, export_dir, result.plot_path)
