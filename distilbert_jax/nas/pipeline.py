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
import warnings

import numpy as np

from distilbert_jax.train.config import ConfigError, build_dataclass
from distilbert_jax.train.config import read_json_object as read_config

from .candidates import CandidateSet
from .pipeline_report import MODELS, results_markdown, results_rows, summary
from .pipeline_state import STATE_FILE, PipelineState  # noqa: F401  (STATE_FILE: re-exported)
from .space import Arch, SearchSpace



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

    def __post_init__(self):
        p = []
        for name in ("latency_n", "latency_batch", "latency_seq", "latency_rounds", "search_evaluations"):
            if getattr(self, name) < 1:
                p.append(f"{name} must be >= 1, got {getattr(self, name)}")
        from .search import METHODS

        if self.search_method not in METHODS:
            p.append(f"search_method must be one of {METHODS}, got {self.search_method!r}")
        if self.teacher and self.teacher_config:
            p.append("give either teacher (a model directory) or teacher_config (a teacher to train), not both")
        if p:
            raise ConfigError("invalid pipeline config: " + "; ".join(p))

    @classmethod
    def from_json(cls, path: str | os.PathLike, overrides: list[str] = ()) -> PipelineConfig:
        """Read a JSON config and apply `--set key=value` overrides; errors name the file and key."""
        from distilbert_jax.train.overrides import build_config

        return build_config(functools.partial(build_dataclass, cls), read_config(path) if path else {}, path or
                            "pipeline config", overrides)  # fmt: skip


FINETUNE_DEFAULTS = {
    "task": "classify", "seed": 0, "total_steps": 150, "log_every": 25, "eval_every": 0, "eval_batches": 6,
    "checkpoint_every": 75, "keep_checkpoints": 1,
    "optim": {"learning_rate": 1e-3, "warmup_steps": 15, "schedule": "linear", "weight_decay": 0.01},
    "data": {"source": "default", "batch_size": 32, "seq_len": 64},
}  # fmt: skip


def _overrides(d: dict) -> list[str]:
    return [f"{k}={json.dumps(v)}" for k, v in d.items()]


def _set(data: dict, overrides: dict) -> dict:
    from distilbert_jax.train.overrides import apply_overrides

    return apply_overrides(data, _overrides(overrides))


def distilbert_ratio_arch(space: SearchSpace, candidates: CandidateSet, predict) -> Arch:
    """The arch closest to DistilBERT's ratios (FFN = 4 x hidden, qkv = hidden, head size 64 where the
    mode lets heads vary) whose predicted latency is nearest the target: among the candidates when one
    has those ratios within a grid step, else among all archs of the space."""

    def ratio_error(a: Arch) -> float:
        heads_err = 0.0 if space.mode != "mlm" else abs(math.log(a.qkv / a.heads / 64))
        return abs(math.log(a.ffn / (4 * a.hidden))) + abs(math.log(a.qkv / a.hidden)) + heads_err

    target = candidates.meta["target_ms"]
    pool = [a for a in candidates.archs if a.uniform]  # DistilBERT's layers are alike
    best_err = min(ratio_error(a) for a in space.uniform_archs())
    exact = [a for a in pool if ratio_error(a) <= best_err + 1e-9]
    if not exact:  # no candidate has the best ratios the space allows: search the whole space
        exact = [a for a in space.uniform_archs() if ratio_error(a) <= best_err + 1e-9]
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


def _train_supernet(cfg: PipelineConfig, run_dir: str, teacher_dir: str = "") -> dict:
    from .config import load_nas_config
    from .train import train_supernet

    distill = {"objective": "distill", "teacher": teacher_dir} if teacher_dir else {}
    overrides = _overrides({**cfg.supernet_set, **distill, "out_dir": run_dir})
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


def _finetune(cfg: PipelineConfig, init_dir: str, out_dir: str) -> dict:
    data = _set(json.loads(json.dumps(FINETUNE_DEFAULTS)), cfg.finetune_set)
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


def _candidates(cfg: PipelineConfig, latency_dir: str, out: str) -> dict:
    from .latency import candidates_from_latency

    cands = candidates_from_latency(latency_dir, cfg.constraint, out)
    return {"count": len(cands), **{k: cands.meta[k] for k in ("constraint", "target_ms", "window_ms", "reference_ms",
                                                                "space_size")}}  # fmt: skip


def _search(cfg: PipelineConfig, setup, cands: CandidateSet, out: str) -> dict:
    from .search import search, write_search

    result = search(cfg.search_method, cands, setup.fitness, budget=cfg.search_evaluations, seed=cfg.seed,
                    space=setup.supernet.space)  # fmt: skip
    write_search(out, result, cands)
    return {"best": result.best.to_json(), "evaluations": len(result.evaluations), "notes": result.notes}


def _pick_archs(cfg: PipelineConfig, searched: dict, setup, cands: CandidateSet, latency_dir: str) -> dict:
    from .latency import PREDICTOR_DIR
    from .predictor import load_predictor

    predictor = load_predictor(os.path.join(latency_dir, PREDICTOR_DIR))  # the kind the latency step chose
    best = Arch(**searched["best"]["arch"])
    archs = {"searched": best, "random": random_candidate(cands, cfg.seed, best),
             "distilbert_ratios": distilbert_ratio_arch(predictor.space, cands, predictor.predict)}  # fmt: skip
    return {name: {"arch": a.to_json(), "predicted_ms": float(predictor.predict([a])[0]),
                   "supernet_loss": setup.fitness(a)} for name, a in archs.items()}  # fmt: skip


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
    from .candidates import read_candidates
    from .fitness import load_search_setup

    out = lambda *p: os.path.join(cfg.out_dir, *p)  # noqa: E731
    timing = dict(latency_batch=cfg.latency_batch, latency_seq=cfg.latency_seq, latency_rounds=cfg.latency_rounds,
                  seed=cfg.seed, latency_reference=cfg.latency_reference)  # fmt: skip
    teacher, teacher_step = cfg.teacher, ("teacher",) if cfg.teacher_config else ()
    if cfg.teacher_config:
        teacher = state.run("teacher", lambda: _train_teacher(cfg, out("teacher")), log, [out("teacher")],
                            state.inputs_of(teacher_config=read_config(cfg.teacher_config),
                                            teacher_set=cfg.teacher_set))["model"]  # fmt: skip
    given = {"teacher": cfg.teacher} if cfg.teacher else {}  # (absent without one: older runs' inputs unchanged)
    sn = state.run("supernet", lambda: _train_supernet(cfg, out("supernet"), teacher), log, [out("supernet")],
                   state.inputs_of(*teacher_step, supernet_config=read_config(cfg.supernet_config),
                                   supernet_set=cfg.supernet_set, **given))  # fmt: skip
    state.run("latency", lambda: in_fresh_process(_latency, cfg, sn["supernet_dir"], out("latency")), log,
              [out("latency")], state.inputs_of("supernet", latency_n=cfg.latency_n, **timing))  # fmt: skip
    state.run("candidates", lambda: _candidates(cfg, out("latency"), out("candidates.jsonl")), log,
              [out("candidates.jsonl")], state.inputs_of("latency", constraint=cfg.constraint))  # fmt: skip
    # loaded at most once, by whichever of the next two steps runs first in this process
    setup = functools.cache(lambda: load_search_setup(sn["run_dir"]))
    cands = functools.cache(lambda: read_candidates(out("candidates.jsonl")))
    state.run("search", lambda: _search(cfg, setup(), cands(), out("search")), log, [out("search")],
              state.inputs_of("supernet", "candidates", search_method=cfg.search_method,
                              search_evaluations=cfg.search_evaluations, seed=cfg.seed))  # fmt: skip
    archs = state.run("archs", lambda: _pick_archs(cfg, state.data["search"], setup(), cands(), out("latency")), log,
                      [], state.inputs_of("supernet", "latency", "candidates", "search", seed=cfg.seed))  # fmt: skip
    for name in MODELS:
        arch, mdir = archs[name]["arch"], out("models", name)
        done = {p: os.path.join(mdir, p) for p in ("extracted", "mlm", "classify")}
        state.run(f"extract:{name}", lambda: _extract(sn["supernet_dir"], arch, done["extracted"]), log,
                  [done["extracted"]], state.inputs_of("supernet", arch=arch))  # fmt: skip
        mlm = state.run(f"further_mlm:{name}", lambda: _further_mlm(cfg, done["extracted"], done["mlm"]), log,
                        [done["mlm"]], state.inputs_of(f"extract:{name}", further_mlm_set=cfg.further_mlm_set,
                                                       further_mlm_config=read_config(cfg.further_mlm_config)))  # fmt: skip
        state.run(f"finetune:{name}", lambda: _finetune(cfg, mlm["model"], done["classify"]), log, [done["classify"]],
                  state.inputs_of(f"further_mlm:{name}", finetune_set=cfg.finetune_set))  # fmt: skip
    state.run("measure", lambda: in_fresh_process(_measure, cfg, sn["supernet_dir"], [a["arch"] for a in archs.values()]),
              log, [], state.inputs_of("supernet", "archs", **timing))  # fmt: skip
