"""The whole AutoTinyBERT pipeline as one resumable command: SuperNet training → latency dataset and
predictor → candidates under the constraint → search → extraction → further masked-LM training →
fine-tuning on the default corpus's 8-way classification task → measured latency → results table.

Each step records its result in `OUT_DIR/pipeline_state.json` when it finishes; a rerun skips finished
steps (training steps also resume from their own checkpoints mid-way). The final table compares the
searched arch with a random arch of the same latency window and a hand-made arch with DistilBERT's
ratios (FFN = 4 x hidden, qkv = hidden, head size 64) nearest to the same latency.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
from typing import Any

import numpy as np

from distilbert_jax.faults import kill_point
from distilbert_jax.jsonfile import read_json_object
from distilbert_jax.tables import format_table, markdown_table
from distilbert_jax.train.config import ConfigError, build_dataclass
from distilbert_jax.train.config import read_json_object as read_config

from .candidates import CandidateSet
from .space import Arch, SearchSpace

STATE_FILE = "pipeline_state.json"
MODELS = ("searched", "random", "distilbert_ratios")  # the rows of the results table


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """One pipeline run (JSON; every key optional). Paths of the sub-configs are relative to the
    current directory; `*_set` hold `key: value` overrides of those configs (dotted keys allowed)."""

    out_dir: str = "runs/nas_pipeline"
    seed: int = 0
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
        if p:
            raise ConfigError("invalid pipeline config: " + "; ".join(p))

    @classmethod
    def from_json(cls, path: str | os.PathLike, overrides: list[str] = ()) -> PipelineConfig:
        """Read a JSON config and apply `--set key=value` overrides; errors name the file and key."""
        from distilbert_jax.train.cli import apply_overrides

        data = apply_overrides(read_config(path) if path else {}, list(overrides))
        try:
            return build_dataclass(cls, data)
        except ConfigError as e:
            raise ConfigError(f"{os.fspath(path) if path else 'pipeline config'}: {e}") from None


FINETUNE_DEFAULTS = {
    "task": "classify", "seed": 0, "total_steps": 150, "log_every": 25, "eval_every": 0, "eval_batches": 6,
    "checkpoint_every": 75, "keep_checkpoints": 1,
    "optim": {"learning_rate": 1e-3, "warmup_steps": 15, "schedule": "linear", "weight_decay": 0.01},
    "data": {"source": "default", "batch_size": 32, "seq_len": 64},
}  # fmt: skip


def _overrides(d: dict) -> list[str]:
    return [f"{k}={json.dumps(v)}" for k, v in d.items()]


def _set(data: dict, overrides: dict) -> dict:
    from distilbert_jax.train.cli import apply_overrides

    return apply_overrides(data, _overrides(overrides))


class _State:
    """`pipeline_state.json`: step name -> its recorded result (written after each step)."""

    def __init__(self, out_dir: str):
        self.path = os.path.join(out_dir, STATE_FILE)
        self.data: dict[str, Any] = read_json_object(self.path, ConfigError) if os.path.isfile(self.path) else {}

    def run(self, name: str, fn, log) -> Any:
        if name in self.data:
            log(f"[{name}] done before, skipped")
            return self.data[name]
        log(f"[{name}] …")
        start = time.perf_counter()
        result = fn()
        kill_point(f"pipeline:{name}")  # the worst moment for a kill: the step's work done, not yet recorded
        self.data[name] = result
        self.data.setdefault("_seconds", {})[name] = round(time.perf_counter() - start, 1)
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.data, f, indent=2)
        os.replace(tmp, self.path)
        log(f"[{name}] finished in {self.data['_seconds'][name]:.0f} s")
        return result


def distilbert_ratio_arch(space: SearchSpace, candidates: CandidateSet, predict) -> Arch:
    """The arch closest to DistilBERT's ratios (FFN = 4 x hidden, qkv = hidden, head size 64 where the
    mode lets heads vary) whose predicted latency is nearest the target: among the candidates when one
    has those ratios within a grid step, else among all archs of the space."""

    def ratio_error(a: Arch) -> float:
        heads_err = 0.0 if space.mode != "mlm" else abs(math.log(a.qkv / a.heads / 64))
        return abs(math.log(a.ffn / (4 * a.hidden))) + abs(math.log(a.qkv / a.hidden)) + heads_err

    target = candidates.meta["target_ms"]
    pool = list(candidates.archs)
    best_err = min(ratio_error(a) for a in space.archs())
    exact = [a for a in pool if ratio_error(a) <= best_err + 1e-9]
    if not exact:  # no candidate has the best ratios the space allows: search the whole space
        exact = [a for a in space.archs() if ratio_error(a) <= best_err + 1e-9]
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


def _train_supernet(cfg: PipelineConfig, run_dir: str) -> dict:
    from .config import load_nas_config
    from .train import train_supernet

    settings, tcfg = load_nas_config(cfg.supernet_config, _overrides(cfg.supernet_set) + [f"out_dir={json.dumps(run_dir)}"])
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


def results_rows(cfg: PipelineConfig, state: dict) -> list[dict[str, str]]:
    """The results table (one row per model of `MODELS`) from the recorded pipeline state."""
    measured = state["measure"]
    rows = []
    for name in MODELS:
        arch = Arch(**state["archs"][name]["arch"])
        ms = measured["ms"][str(arch)]
        mlm = state[f"further_mlm:{name}"]["final_eval"]
        clf = state[f"finetune:{name}"]["final_eval"]
        rows.append({
            "model": name, "constraint": state["candidates"]["constraint"], "arch": str(arch),
            "params (MB)": f"{state['extract:' + name]['params_mb']:.2f}",
            "predicted ms": f"{state['archs'][name]['predicted_ms']:.3f}", "measured ms": f"{ms:.3f}",
            "speedup vs reference": f"{measured['reference_ms'] / ms:.1f}x",
            "SuperNet loss": f"{state['archs'][name]['supernet_loss']:.3f}",
            "MLM loss": f"{mlm['loss']:.3f}", "accuracy": f"{clf['accuracy']:.3f}",
        })  # fmt: skip
    return rows


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
    from .predictor import LatencyPredictor

    predictor = LatencyPredictor.load(os.path.join(latency_dir, PREDICTOR_DIR))
    best = Arch(**searched["best"]["arch"])
    archs = {"searched": best, "random": random_candidate(cands, cfg.seed, best),
             "distilbert_ratios": distilbert_ratio_arch(predictor.space, cands, predictor.predict)}  # fmt: skip
    return {name: {"arch": a.to_json(), "predicted_ms": float(predictor.predict([a])[0]),
                   "supernet_loss": setup.fitness(a)} for name, a in archs.items()}  # fmt: skip


def _extract(supernet_dir: str, arch: dict, out: str) -> dict:
    from .io import extract_to_dir

    extract_to_dir(supernet_dir, Arch(**arch), out)
    return {"dir": out, "params_mb": params_mb(out)}


def _measure(cfg: PipelineConfig, supernet_dir: str, archs: list[dict]) -> dict:
    from .io import load_supernet
    from .latency import measure_latencies

    supernet, params = load_supernet(supernet_dir)
    m = measure_latencies([Arch(**a) for a in archs], supernet, params, batch=cfg.latency_batch, seq=cfg.latency_seq,
                          rounds=cfg.latency_rounds, seed=cfg.seed, reference=_reference(cfg))  # fmt: skip
    return {"ms": {str(a): float(ms) for a, ms in zip(m.archs, m.ms)}, "reference_ms": m.reference_ms,
            "spread": {str(a): float(s) for a, s in zip(m.archs, m.spread)}, "device": m.meta.get("device")}  # fmt: skip


def run_pipeline(cfg: PipelineConfig, log=print) -> list[dict[str, str]]:
    """Run (or resume) every step of `cfg`; returns the results table's rows (also written to
    `OUT_DIR/results.md` and `results.json`)."""
    from .candidates import read_candidates
    from .fitness import load_search_setup

    os.makedirs(cfg.out_dir, exist_ok=True)
    with open(os.path.join(cfg.out_dir, "pipeline_config.json"), "w", encoding="utf-8") as f:
        json.dump(dataclasses.asdict(cfg), f, indent=2)
    state = _State(cfg.out_dir)
    out = lambda *p: os.path.join(cfg.out_dir, *p)  # noqa: E731
    sn = state.run("supernet", lambda: _train_supernet(cfg, out("supernet")), log)
    state.run("latency", lambda: in_fresh_process(_latency, cfg, sn["supernet_dir"], out("latency")), log)
    state.run("candidates", lambda: _candidates(cfg, out("latency"), out("candidates.jsonl")), log)
    # loaded at most once, by whichever of the next two steps runs first in this process
    setup = functools.cache(lambda: load_search_setup(sn["run_dir"]))
    cands = functools.cache(lambda: read_candidates(out("candidates.jsonl")))
    state.run("search", lambda: _search(cfg, setup(), cands(), out("search")), log)
    archs = state.run("archs", lambda: _pick_archs(cfg, state.data["search"], setup(), cands(), out("latency")), log)
    for name in MODELS:
        arch, mdir = archs[name]["arch"], out("models", name)
        state.run(f"extract:{name}", lambda: _extract(sn["supernet_dir"], arch, os.path.join(mdir, "extracted")), log)
        mlm = state.run(f"further_mlm:{name}",
                        lambda: _further_mlm(cfg, os.path.join(mdir, "extracted"), os.path.join(mdir, "mlm")), log)  # fmt: skip
        state.run(f"finetune:{name}", lambda: _finetune(cfg, mlm["model"], os.path.join(mdir, "classify")), log)
    state.run("measure", lambda: in_fresh_process(_measure, cfg, sn["supernet_dir"], [a["arch"] for a in archs.values()]),
              log)  # fmt: skip
    rows = results_rows(cfg, state.data)
    columns = list(rows[0])
    with open(out("results.md"), "w", encoding="utf-8") as f:
        f.write(markdown_table(rows, columns))
    with open(out("results.json"), "w", encoding="utf-8") as f:
        json.dump({"rows": rows, "seconds": state.data.get("_seconds", {})}, f, indent=2)
    log("\n" + format_table(rows, columns))
    return rows
