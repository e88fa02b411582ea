"""The whole AutoTinyBERT pipeline as one resumable command: [teacher training →] SuperNet training
(distilling from the teacher when one is given) → latency dataset and predictor → candidates under the
constraint → search → extraction → further masked-LM training → fine-tuning on the default corpus's 8-way
classification task → measured latency → results table. The training steps run data-parallel over every
local device (the training stack's 1-D mesh); on one CPU device that is a plain run.

Each step records its result in `OUT_DIR/pipeline_state.json` when it finishes; a rerun skips finished
steps (training steps also resume from their own checkpoints mid-way). The final table compares the
searched arch with a random arch of the same latency window and a hand-made arch with DistilBERT's
ratios (FFN = 4 x hidden, qkv = hidden, head size 64) nearest to the same latency.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import re
import warnings

import numpy as np

from distilbert_jax.train.config import ConfigError, build_dataclass
from distilbert_jax.train.config import read_json_object as read_config

from .candidates import CandidateSet
from .pipeline_report import ARMS, MODELS, results_markdown, results_rows, summary
from .pipeline_state import STATE_FILE, PipelineState  # noqa: F401  (STATE_FILE: re-exported)
from .space import Arch, SearchSpace

SEARCH_FITNESS = ("mlm", "task")


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """One pipeline run (JSON; every key optional). Paths of the sub-configs are relative to the
    current directory; `*_set` hold `key: value` overrides of those configs (dotted keys allowed)."""

    out_dir: str = "runs/nas_pipeline"
    seed: int = 0
    teacher: str = ""  # a teacher directory (`from_pretrained` loads it as a masked LM): the SuperNet distils from it
    teacher_config: str = ""  # or the training config (masked LM) of a teacher trained first, into OUT_DIR/teacher
    teacher_set: dict = dataclasses.field(default_factory=dict)  # overrides of teacher_config
    supernet_config: str = "distilbert_jax/nas/configs/supernet_small.json"
    supernet_set: dict = dataclasses.field(default_factory=dict)
    latency_n: int = 120  # sampled archs measured for the predictor
    latency_batch: int = 1
    latency_seq: int = 128
    latency_rounds: int = 10
    latency_reference: str = ""  # the reference arch (JSON or AutoTinyBERT's string); "" = BERT-base's shape
    constraint: str = "40"  # speedup over the BERT-base-shaped reference ("40", "40x") or "3ms"
    search_method: str = "evolved"
    search_evaluations: int = 40
    further_mlm_config: str = "distilbert_jax/nas/configs/further_mlm.json"
    further_mlm_set: dict = dataclasses.field(default_factory=dict)
    finetune_set: dict = dataclasses.field(default_factory=dict)  # over FINETUNE_DEFAULTS
    task: str = "packages"  # fine-tuning: "packages" (the default corpus's 8-way task) or "modulesN" (N-way, loaders.module_task)
    search_fitness: str = "mlm"  # "mlm": the SuperNet's masked-LM loss; "task": a task SuperNet's loss on the task (task_fitness.py)
    task_fitness_set: dict = dataclasses.field(default_factory=dict)  # over TaskFitnessConfig's defaults

    def __post_init__(self):
        p = []
        if self.search_fitness not in SEARCH_FITNESS:
            p.append(f"search_fitness must be one of {SEARCH_FITNESS}, got {self.search_fitness!r}")
        elif self.search_fitness == "task" and not self.task.startswith("modules"):
            p.append(f"search_fitness 'task' needs a module task (task 'modulesN', e.g. 'modules16'), got {self.task!r}: "
                     "its fitness is scored on a held-out part of that task's training split")  # fmt: skip
        try:
            self.task_fitness_config()
        except ConfigError as e:
            p.append(str(e))
        for name in ("latency_n", "latency_batch", "latency_seq", "latency_rounds", "search_evaluations"):
            if getattr(self, name) < 1:
                p.append(f"{name} must be >= 1, got {getattr(self, name)}")
        from .search import METHODS

        if self.search_method not in METHODS:
            p.append(f"search_method must be one of {METHODS}, got {self.search_method!r}")
        if self.task != "packages" and not re.fullmatch(r"modules([1-9][0-9]*)", self.task):
            p.append(f"task must be 'packages' (the 8-way task) or 'modulesN' (e.g. 'modules16'), got {self.task!r}")
        if self.teacher and self.teacher_config:
            p.append("give either teacher (a model directory) or teacher_config (a teacher to train), not both")
        if p:
            raise ConfigError("invalid pipeline config: " + "; ".join(p))

    @classmethod
    def from_json(cls, path: str | os.PathLike, overrides: list[str] = ()) -> PipelineConfig:
        """Read a JSON config and apply `--set key=value` overrides; errors name the file and key."""
        return read_dataclass_config(cls, path, overrides, "pipeline config")

    def task_fitness_config(self):
        """The `TaskFitnessConfig` of `task_fitness_set` (`ConfigError` naming an unknown key or bad value)."""
        from .task_fitness import TaskFitnessConfig

        return build_dataclass(TaskFitnessConfig, self.task_fitness_set, "task_fitness_set")


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """The keys an experiment over pipeline steps (`compare-arms`, `rank-check`) shares: a pipeline config
    (`pipeline_config` + `pipeline_set` overrides) whose `out_dir` and `task` the experiment sets."""

    out_dir: str = "runs/nas_experiment"
    pipeline_config: str = "distilbert_jax/nas/configs/pipeline_small.json"
    pipeline_set: dict = dataclasses.field(default_factory=dict)
    task: str = "modules16"

    def pipeline(self) -> PipelineConfig:
        """The pipeline config every step runs with."""
        sets = {**self.pipeline_set, "out_dir": self.out_dir, "task": self.task}
        return PipelineConfig.from_json(self.pipeline_config, [f"{k}={json.dumps(v)}" for k, v in sets.items()])

    @classmethod
    def from_json(cls, path: str, overrides: list[str] = ()):
        """Read a JSON config and apply `--set key=value` overrides; errors name the file and key."""
        return read_dataclass_config(cls, path, overrides, f"{cls.__name__} config")


def read_dataclass_config(cls, path: str | os.PathLike, overrides: list[str] = (), what: str = "config"):
    """A frozen dataclass `cls` from a JSON file (none: the defaults) and `--set key=value` overrides;
    errors name the file (or `what`) and the key."""
    from distilbert_jax.train.overrides import build_config

    return build_config(functools.partial(build_dataclass, cls), read_config(path) if path else {}, path or what,
                        overrides)  # fmt: skip


FINETUNE_DEFAULTS = {
    "task": "classify", "seed": 0, "total_steps": 150, "log_every": 25, "eval_every": 0, "eval_batches": 6,
    "checkpoint_every": 75, "keep_checkpoints": 1,
    "optim": {"learning_rate": 1e-3, "warmup_steps": 15, "schedule": "linear", "weight_decay": 0.01},
    "data": {"source": "default", "batch_size": 32, "seq_len": 64},
}  # fmt: skip


def module_task_for(task: str):
    """The `loaders.module_task` of a `task` value "modulesN" (built on first use)."""
    from loaders.module_task import module_task_named

    try:
        return module_task_named(task)
    except ValueError as e:
        raise ConfigError(f"task {task!r}: {e}") from None


def _overrides(d: dict) -> list[str]:
    return [f"{k}={json.dumps(v)}" for k, v in d.items()]


def _set(data: dict, overrides: dict) -> dict:
    from distilbert_jax.train.overrides import apply_overrides

    return apply_overrides(data, _overrides(overrides))


TINYBERT_FFN_RATIO = 1200 / 312  # TinyBERT-4: 4 layers, hidden 312, FFN 1200, 12 heads (qkv = hidden)


def ratio_error(space: SearchSpace, a: Arch, ffn_ratio: float = 4.0) -> float:
    """How far a uniform arch is from FFN = `ffn_ratio` x hidden, qkv = hidden and (where the mode lets
    heads vary) head size 64, in summed |log ratio|."""
    heads_err = 0.0 if space.mode != "mlm" else abs(math.log(a.qkv / a.heads / 64))
    return abs(math.log(a.ffn / (ffn_ratio * a.hidden))) + abs(math.log(a.qkv / a.hidden)) + heads_err


def tinybert_like_arch(space: SearchSpace, candidates: CandidateSet, predict) -> Arch:
    """A hand-made 4-layer TinyBERT-like arch scaled to the constraint: uniform layers, 4 of them (or the
    space's nearest layer count), qkv = hidden, FFN = 1200/312 x hidden; of those archs whose predicted
    latency is inside the candidates' window, the one nearest these ratios, else (none inside) the one
    nearest the target latency."""
    layers = min(space.layer_values, key=lambda n: (abs(n - 4), -n))
    pool = [a for a in space.uniform_archs() if a.layers == layers]
    ms = np.asarray(predict(pool), np.float64)
    err = [ratio_error(space, a, TINYBERT_FFN_RATIO) for a in pool]
    lo, hi = candidates.meta["window_ms"]
    inside = [i for i in range(len(pool)) if lo <= ms[i] <= hi]
    if inside:
        return pool[min(inside, key=lambda i: (err[i], i))]
    target = candidates.meta["target_ms"]
    return pool[min(range(len(pool)), key=lambda i: (abs(math.log(ms[i] / target)), err[i]))]


def distilbert_ratio_arch(space: SearchSpace, candidates: CandidateSet, predict) -> Arch:
    """The arch closest to DistilBERT's ratios (FFN = 4 x hidden, qkv = hidden, head size 64 where the
    mode lets heads vary) whose predicted latency is nearest the target: among the candidates when one
    has those ratios within a grid step, else among all archs of the space."""
    ratio_error_ = functools.partial(ratio_error, space)

    target = candidates.meta["target_ms"]
    pool = [a for a in candidates.archs if a.uniform]  # DistilBERT's layers are alike
    best_err = min(ratio_error_(a) for a in space.uniform_archs())
    exact = [a for a in pool if ratio_error_(a) <= best_err + 1e-9]
    if not exact:  # no candidate has the best ratios the space allows: search the whole space
        exact = [a for a in space.uniform_archs() if ratio_error_(a) <= best_err + 1e-9]
    ms = np.asarray(predict(exact), np.float64)
    return exact[int(np.argmin(np.abs(np.log(ms / target))))]


def random_candidate(candidates: CandidateSet, seed: int, exclude: Arch) -> Arch:
    """A seeded uniformly random candidate other than `exclude` (if there is another)."""
    rng = np.random.default_rng(seed)
    pool = [a for a in candidates.archs if a != exclude] or list(candidates.archs)
    return pool[int(rng.integers(len(pool)))]


def params_mb(path: str) -> float:
    """Size of a model directory's weights in MB (fp32 parameters x 4 bytes / 2**20)."""
    from safetensors import safe_open

    n = 0
    with safe_open(os.path.join(path, "model.safetensors"), framework="numpy") as f:
        for k in f.keys():
            n += int(np.prod(f.get_slice(k).get_shape()))
    return n * 4 / 2**20


def _train_teacher(cfg: PipelineConfig, out_dir: str) -> dict:
    data = _set(read_config(cfg.teacher_config), cfg.teacher_set)
    if data.get("task", "mlm") != "mlm":
        raise ConfigError(f"teacher_config {cfg.teacher_config}: task must be 'mlm' (the teacher is a masked LM), "
                          f"got {data['task']!r}")  # fmt: skip
    return _train({**data, "task": "mlm", "out_dir": out_dir})


def _train_supernet(cfg: PipelineConfig, run_dir: str, teacher_dir: str, supernet_set: dict) -> dict:
    from .config import load_nas_config
    from .train import train_supernet

    distill = {"objective": "distill", "teacher": teacher_dir} if teacher_dir else {}
    overrides = _overrides({**supernet_set, **distill, "out_dir": run_dir})
    settings, tcfg = load_nas_config(cfg.supernet_config, overrides)
    result = train_supernet(settings, tcfg)
    return {"run_dir": run_dir, "supernet_dir": result.supernet_dir, "final_eval": result.final_eval,
            "compilations": result.compilations}  # fmt: skip


def _train(data: dict) -> dict:
    from distilbert_jax.train.config import TrainConfig
    from distilbert_jax.train.loop import train

    result = train(TrainConfig.from_dict(data))
    return {"model": result.export_dir, "final_eval": result.final_eval}


def _start_from(init_dir: str) -> dict:
    has_tokenizer = any(os.path.isfile(os.path.join(init_dir, f)) for f in ("tokenizer.json", "vocab.txt"))
    return {"init_from": init_dir, "tokenizer": init_dir if has_tokenizer else None}


def _further_mlm(cfg: PipelineConfig, init_dir: str, out_dir: str) -> dict:
    data = _set(read_config(cfg.further_mlm_config), cfg.further_mlm_set)
    return _train({**data, "task": "mlm", **_start_from(init_dir), "out_dir": out_dir})


def finetune_data(cfg: PipelineConfig, extra: dict | None = None) -> dict:
    """The training config of a fine-tuning: FINETUNE_DEFAULTS, the task's data, `cfg.finetune_set`, `extra`."""
    data = json.loads(json.dumps(FINETUNE_DEFAULTS))
    if cfg.task != "packages":  # every evaluation example counts (the eval iterator stops after one pass)
        task = module_task_for(cfg.task)
        data = _set(data, {"data.source": task.path("train"), "data.eval_source": task.path("valid"),
                           "eval_batches": 10**6})  # fmt: skip
    return _set(data, {**cfg.finetune_set, **(extra or {})})


def _finetune(cfg: PipelineConfig, init_dir: str, out_dir: str, extra: dict | None = None) -> dict:
    data = finetune_data(cfg, extra)
    return _train({**data, **_start_from(init_dir), "out_dir": out_dir})


def _call_with_cache(cache_dir: str | None, fn, args: tuple):
    if cache_dir:
        from distilbert_jax.train.parallel import enable_compile_cache

        enable_compile_cache(cache_dir)
    return fn(*args)


def in_fresh_process(fn, *args):
    """`fn(*args)` in a freshly spawned Python process (with this process's compilation cache). The timing
    steps run there: after minutes of training in one process, small models time ~20 % slower in it
    (measured: 1.81 vs 1.50 ms for the same arch), which would bias the table against the predictor."""
    import multiprocessing

    import jax

    cache_dir = jax.config.jax_compilation_cache_dir
    pool = multiprocessing.get_context("spawn").Pool(1)
    try:
        return pool.apply(_call_with_cache, (cache_dir, fn, args))
    finally:  # close + join (not the context manager's terminate: that leaks the pool's semaphores)
        pool.close()
        pool.join()


def _latency(cfg: PipelineConfig, supernet_dir: str, out: str) -> dict:
    from .latency import run_latency

    run = run_latency(supernet_dir, out, n=cfg.latency_n, batch=cfg.latency_batch, seq=cfg.latency_seq,
                      rounds=cfg.latency_rounds, seed=cfg.seed, reference=_reference(cfg))  # fmt: skip
    return run.report


def _reference(cfg: PipelineConfig) -> Arch:
    from .latency import REFERENCE
    from .space import parse_arch

    return parse_arch(cfg.latency_reference) if cfg.latency_reference else REFERENCE


def _candidates(constraint: str, latency_dir: str, out: str) -> dict:
    from .latency import candidates_from_latency

    cands = candidates_from_latency(latency_dir, constraint, out)
    return {"count": len(cands), **{k: cands.meta[k] for k in ("constraint", "target_ms", "window_ms", "reference_ms",
                                                                "space_size")}}  # fmt: skip


def _search(cfg: PipelineConfig, scorer, cands: CandidateSet, out: str) -> dict:
    """The search step: `scorer` is a `SearchSetup` (masked-LM fitness) or a `TaskFitness` (its `.fitness` and
    `.supernet` are what the search uses)."""
    from .search import search, write_search

    result = search(cfg.search_method, cands, scorer.fitness, budget=cfg.search_evaluations, seed=cfg.seed,
                    space=scorer.supernet.space)  # fmt: skip
    write_search(out, result, cands)
    return {"best": result.best.to_json(), "evaluations": len(result.evaluations), "notes": result.notes}


def pick_archs(cfg: PipelineConfig, searched: dict, setup, cands: CandidateSet, latency_dir: str,
               models: tuple[str, ...] = MODELS, task_fitness=None) -> dict:  # fmt: skip
    """The arms `models` of one constraint — of ARMS: the searched arch, a random candidate, the arch with
    DistilBERT's ratios and the 4-layer TinyBERT-like arch nearest the target — with their predicted latency,
    SuperNet loss and (given a `TaskFitness`) task fitness."""
    from .latency import PREDICTOR_DIR
    from .predictor import load_predictor

    unknown = sorted(set(models) - set(ARMS))
    if unknown:
        raise ConfigError(f"unknown arms {unknown}: choose from {ARMS}")
    predictor = load_predictor(os.path.join(latency_dir, PREDICTOR_DIR))  # the kind the latency step chose
    best = Arch(**searched["best"]["arch"])
    pick = {"searched": lambda: best, "random": lambda: random_candidate(cands, cfg.seed, best),
            "distilbert_ratios": lambda: distilbert_ratio_arch(predictor.space, cands, predictor.predict),
            "tinybert_like": lambda: tinybert_like_arch(predictor.space, cands, predictor.predict)}  # fmt: skip
    archs = {name: pick[name]() for name in models}
    task = (lambda a: {"task_fitness": task_fitness.fitness(a)}) if task_fitness else (lambda a: {})
    return {name: {"arch": a.to_json(), "predicted_ms": float(predictor.predict([a])[0]),
                   "supernet_loss": setup.fitness(a), **task(a)} for name, a in archs.items()}  # fmt: skip


def _train_task_fitness(cfg: PipelineConfig, supernet_dir: str, cands: CandidateSet, out: str, log) -> dict:
    from .task_fitness import train_task_supernet

    return train_task_supernet(supernet_dir, cands, cfg.task, out, cfg.task_fitness_config(), log)


def task_fitness_step(cfg: PipelineConfig, state: PipelineState, log, step: str, out: str, sn: dict, cands,
                      supernet_step: str = "supernet", candidates_step: str = "candidates"):  # fmt: skip
    """Step `step`: the task SuperNet of `sn` (the record of step `supernet_step`) trained over the candidates
    `cands()` (of step `candidates_step`) into `out`. → a function returning its `TaskFitness` (loaded once)."""
    from .task_fitness import TaskFitness

    state.run(step, lambda: _train_task_fitness(cfg, sn["supernet_dir"], cands(), out, log), log, [out],
              state.inputs_of(supernet_step, candidates_step, task=cfg.task, task_fitness_set=cfg.task_fitness_set))
    return functools.cache(lambda: TaskFitness(out))


def _extract(supernet_dir: str, arch: dict, out: str) -> dict:
    from .io import extract_to_dir

    extract_to_dir(supernet_dir, Arch(**arch), out)
    return {"dir": out, "arch": arch, "params_mb": params_mb(out)}


def _measure(cfg: PipelineConfig, supernet_dir: str, archs: list[dict]) -> dict:
    from .io import load_supernet
    from .latency import measure_latencies

    supernet, params = load_supernet(supernet_dir)
    m = measure_latencies([Arch(**a) for a in archs], supernet, params, batch=cfg.latency_batch, seq=cfg.latency_seq,
                          rounds=cfg.latency_rounds, seed=cfg.seed, reference=_reference(cfg))  # fmt: skip
    return {"ms": {str(a): float(ms) for a, ms in zip(m.archs, m.ms)}, "reference_ms": m.reference_ms,
            "spread": {str(a): float(s) for a, s in zip(m.archs, m.spread)}, "device": m.meta.get("device")}  # fmt: skip


@contextlib.contextmanager
def warnings_once(log):
    """Warnings raised inside are logged once per kind (their text after the path they start with): the
    three models' fine-tunings each warn alike that their classifier head starts fresh."""
    seen = set()

    def show(message, category, *_args, **_kwargs):
        kind = (category, str(message).split(": ", 1)[-1])
        if kind not in seen:
            seen.add(kind)
            log(f"{category.__name__} (shown once): {message}")

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show  # restored by catch_warnings
        yield


def run_pipeline(cfg: PipelineConfig, log=print) -> list[dict[str, str]]:
    """Run (or resume) every step of `cfg`; returns the results table's rows (also written to
    `OUT_DIR/results.md` and `results.json`, with the config of these results in `pipeline_config.json`)."""
    os.makedirs(cfg.out_dir, exist_ok=True)
    state = PipelineState(cfg.out_dir)
    with warnings_once(log):
        _run_steps(cfg, state, log)
    out = lambda *p: os.path.join(cfg.out_dir, *p)  # noqa: E731
    rows = results_rows(state.data)
    with open(out("results.md"), "w", encoding="utf-8") as f:
        f.write(results_markdown(rows))
    with open(out("results.json"), "w", encoding="utf-8") as f:
        json.dump({"rows": rows, "seconds": state.data.get("_seconds", {})}, f, indent=2)
    with open(out("pipeline_config.json"), "w", encoding="utf-8") as f:  # the config of these results
        json.dump(dataclasses.asdict(cfg), f, indent=2)
    log("\n" + summary(state.data, rows))
    return rows


def _run_steps(cfg: PipelineConfig, state: PipelineState, log) -> None:
    sn = shared_steps(cfg, state, log)
    constraint_steps(cfg, state, log, sn, cfg.constraint)


def shared_steps(cfg: PipelineConfig, state: PipelineState, log, prefix: str = "", supernet_set: dict | None = None,
                 latency: bool = True) -> dict:  # fmt: skip
    """The steps every constraint builds on — [teacher →] SuperNet [→ latency dataset and predictor] — as
    steps `PREFIX` + name under `OUT_DIR/PREFIX`; `supernet_set` replaces `cfg.supernet_set`. → the SuperNet
    step's record."""
    out = lambda *p: os.path.join(cfg.out_dir, prefix, *p)  # noqa: E731
    timing = _timing(cfg)
    supernet_set = cfg.supernet_set if supernet_set is None else supernet_set
    teacher, teacher_step = cfg.teacher, (prefix + "teacher",) if cfg.teacher_config else ()
    if cfg.teacher_config:
        teacher = state.run(prefix + "teacher", lambda: _train_teacher(cfg, out("teacher")), log, [out("teacher")],
                            state.inputs_of(teacher_config=read_config(cfg.teacher_config),
                                            teacher_set=cfg.teacher_set))["model"]  # fmt: skip
    given = {"teacher": cfg.teacher} if cfg.teacher else {}  # (absent without one: older runs' inputs unchanged)
    sn = state.run(prefix + "supernet", lambda: _train_supernet(cfg, out("supernet"), teacher, supernet_set), log,
                   [out("supernet")], state.inputs_of(*teacher_step, supernet_config=read_config(cfg.supernet_config),
                                                      supernet_set=supernet_set, **given))  # fmt: skip
    if latency:
        state.run(prefix + "latency", lambda: in_fresh_process(_latency, cfg, sn["supernet_dir"], out("latency")), log,
                  [out("latency")], state.inputs_of(prefix + "supernet", latency_n=cfg.latency_n, **timing))  # fmt: skip
    return sn


def _timing(cfg: PipelineConfig) -> dict:
    return dict(latency_batch=cfg.latency_batch, latency_seq=cfg.latency_seq, latency_rounds=cfg.latency_rounds,
                seed=cfg.seed, latency_reference=cfg.latency_reference)  # fmt: skip


def candidates_step(cfg: PipelineConfig, state: PipelineState, log, constraint: str, prefix: str = "",
                    latency_prefix: str = "") -> dict:  # fmt: skip
    """Step `PREFIX`candidates: the candidates of `constraint` from the latency step `LATENCY_PREFIX`latency."""
    path = os.path.join(cfg.out_dir, prefix, "candidates.jsonl")
    return state.run(prefix + "candidates", lambda: _candidates(constraint, os.path.join(cfg.out_dir, latency_prefix,
                     "latency"), path), log, [path], state.inputs_of(latency_prefix + "latency", constraint=constraint))  # fmt: skip


def model_steps(cfg: PipelineConfig, state: PipelineState, log, sn: dict, name: str, arch: dict, prefix: str = "",
                seeds: tuple[int, ...] | None = None, supernet_step: str = "supernet") -> dict:  # fmt: skip
    """One arm: extraction from the SuperNet `sn` → further masked-LM training → fine-tuning (once with
    `cfg.finetune_set`'s seed when `seeds` is None — steps `finetune:NAME` —, else once per seed — steps
    `finetune:NAME:seedS`); `sn` is the record of step `supernet_step`. → {"extract", "further_mlm", "finetune": {step name: record}} (step records)."""
    mdir = os.path.join(cfg.out_dir, prefix, "models", name)
    done = {p: os.path.join(mdir, p) for p in ("extracted", "mlm")}
    ext = state.run(f"{prefix}extract:{name}", lambda: _extract(sn["supernet_dir"], arch, done["extracted"]), log,
                    [done["extracted"]], state.inputs_of(supernet_step, arch=arch))  # fmt: skip
    mlm = state.run(f"{prefix}further_mlm:{name}", lambda: _further_mlm(cfg, done["extracted"], done["mlm"]), log,
                    [done["mlm"]], state.inputs_of(f"{prefix}extract:{name}", further_mlm_set=cfg.further_mlm_set,
                                                   further_mlm_config=read_config(cfg.further_mlm_config)))  # fmt: skip
    runs = {f"{prefix}finetune:{name}": (os.path.join(mdir, "classify"), {})} if seeds is None else {
        f"{prefix}finetune:{name}:seed{s}": (os.path.join(mdir, f"classify-seed{s}"), {"seed": s}) for s in seeds}
    fine = {}
    for step, (ft_dir, extra) in runs.items():
        task = {"task": cfg.task} if cfg.task != "packages" else {}  # (absent by default: older runs' inputs unchanged)
        fine[step] = state.run(step, lambda: _finetune(cfg, mlm["model"], ft_dir, extra), log, [ft_dir],
                               state.inputs_of(f"{prefix}further_mlm:{name}", finetune_set={**cfg.finetune_set, **extra},
                                               **task))  # fmt: skip
    return {"extract": ext, "further_mlm": mlm, "finetune": fine}


def constraint_steps(cfg: PipelineConfig, state: PipelineState, log, sn: dict, constraint: str, prefix: str = "",
                     models: tuple[str, ...] = MODELS, seeds: tuple[int, ...] | None = None) -> dict:  # fmt: skip
    """The steps of one latency constraint, named `PREFIX` + step under `OUT_DIR/PREFIX`: candidates → search →
    the arms `models` (see `pick_archs`) → for each, `model_steps` → their measured latency. The SuperNet and
    latency steps are the unprefixed ones. → the archs step's record."""
    from .candidates import read_candidates
    from .fitness import load_search_setup

    out = lambda *p: os.path.join(cfg.out_dir, prefix, *p)  # noqa: E731
    candidates_step(cfg, state, log, constraint, prefix)
    # loaded at most once, by whichever of the next two steps runs first in this process
    setup = functools.cache(lambda: load_search_setup(sn["run_dir"]))
    cands = functools.cache(lambda: read_candidates(out("candidates.jsonl")))
    by_task = cfg.search_fitness == "task"  # (its inputs are absent by default: older runs' inputs unchanged)
    task_step = (prefix + "task_fitness",) if by_task else ()
    task_fitness = task_fitness_step(cfg, state, log, task_step[0], out("task_fitness"), sn, cands,
                                     candidates_step=prefix + "candidates") if by_task else lambda: None  # fmt: skip
    state.run(prefix + "search", lambda: _search(cfg, task_fitness() or setup(), cands(), out("search")), log,
              [out("search")], state.inputs_of("supernet", prefix + "candidates", *task_step,
                                               search_method=cfg.search_method, search_evaluations=cfg.search_evaluations,
                                               seed=cfg.seed, **({"search_fitness": "task"} if by_task else {})))  # fmt: skip
    named = {"models": list(models)} if models != MODELS else {}  # (absent by default: older runs' inputs unchanged)
    archs = state.run(prefix + "archs", lambda: pick_archs(cfg, state.data[prefix + "search"], setup(), cands(),
                                                           os.path.join(cfg.out_dir, "latency"), models, task_fitness()),
                      log, [], state.inputs_of("supernet", "latency", prefix + "candidates", prefix + "search",
                                               *task_step, seed=cfg.seed, **named))  # fmt: skip
    for name in models:
        model_steps(cfg, state, log, sn, name, archs[name]["arch"], prefix, seeds)
    state.run(prefix + "measure", lambda: in_fresh_process(_measure, cfg, sn["supernet_dir"],
                                                           [a["arch"] for a in archs.values()]),
              log, [], state.inputs_of("supernet", prefix + "archs", **_timing(cfg)))  # fmt: skip
    return archs
