"""One-shot fitness on the downstream task: the SuperNet trained further, with weight sharing, on a
classification task (a DistilBERT classifier head on every sub-network: [CLS] -> pre_classifier -> ReLU ->
dropout -> classifier, sliced to the arch's hidden size), one candidate of the latency window drawn per step;
an arch's fitness is then the error rate (1 − accuracy) of that task SuperNet at the arch on a held-out part of
the task's *training* split (`loaders.module_task.search_split`), never on the evaluation split the arms are
judged on. Not its cross-entropy: on the rank-check archs the wider sub-networks have the *higher* held-out
cross-entropy (over-confident after weight-shared training) and the higher accuracy.

Why: masked-LM loss ranks the archs of a window by how they fine-tune only weakly (`rank-check`: Kendall τ
−0.51 over 10 archs), while AutoTinyBERT's searcher scores sub-networks on the downstream task."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from distilbert_jax.train.losses import labelled_ce_sums

from .candidates import CandidateSet
from .space import Arch
from .step import summed_over_batches
from .supernet import F32, ArchArrays, Bucket, SuperNet, _dropout, matmul

PARAMS_FILE = "params.msgpack"
META_FILE = "task_fitness.json"


class TaskFitnessError(ValueError):
    """A task-fitness directory or setting that cannot be used; the message names the file or key."""


@dataclasses.dataclass(frozen=True)
class TaskFitnessConfig:
    """How the task SuperNet is trained (the pipeline's `task_fitness_set` overrides these)."""

    steps: int = 600
    learning_rate: float = 5e-4  # the SuperNet's own (weight sharing is unstable at the fine-tuning's 1e-3)
    warmup_steps: int = 30
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    batch_size: int = 32
    seq_len: int = 64
    seed: int = 0
    eval_every: int = 50  # early stopping: the params kept are those of the highest mean search-validation accuracy
    eval_archs: int = 8  # over this many candidates (a seeded sample), checked every eval_every steps

    def __post_init__(self):
        p = [f"{k} must be >= 1, got {getattr(self, k)}" for k in ("steps", "batch_size", "seq_len", "eval_every",
                                                                        "eval_archs")
             if not isinstance(getattr(self, k), int) or getattr(self, k) < 1]  # fmt: skip
        if not self.learning_rate > 0:
            p.append(f"learning_rate must be > 0, got {self.learning_rate}")
        if p:
            raise TaskFitnessError("invalid task_fitness_set: " + "; ".join(p))


def init_head(rng: jax.Array, hidden: int, num_labels: int) -> dict:
    """The classifier head of the largest arch: pre_classifier [H, H], classifier [H, C] (normal 0.02, zero bias)."""
    k1, k2 = jax.random.split(rng)
    return {"pre_classifier": {"kernel": 0.02 * jax.random.normal(k1, (hidden, hidden), F32), "bias": jnp.zeros(hidden, F32)},
            "classifier": {"kernel": 0.02 * jax.random.normal(k2, (hidden, num_labels), F32),
                           "bias": jnp.zeros(num_labels, F32)}}  # fmt: skip


def task_logits(supernet: SuperNet, params: dict, arch: ArchArrays, bucket: Bucket, input_ids: jax.Array,
                attention_mask: jax.Array, rng: jax.Array | None = None) -> jax.Array:  # fmt: skip
    """Class logits [B, C] of the sub-network `arch`: `params` = {"encoder": SuperNet params, "head": `init_head`'s}."""
    out = supernet.encode(params["encoder"], arch, bucket, input_ids, attention_mask, rng=rng)
    m_h = (jnp.arange(bucket.hidden) < arch.hidden).astype(F32)
    head = params["head"]
    pre = head["pre_classifier"]
    h = matmul(out.last_hidden_state[:, 0], pre["kernel"][: bucket.hidden, : bucket.hidden] * m_h[:, None] * m_h,
               supernet.dtype) + pre["bias"][: bucket.hidden] * m_h  # fmt: skip
    h = _dropout(jax.nn.relu(h), rng, supernet.base.seq_classif_dropout, salt=10_000)
    cls = head["classifier"]
    return matmul(h, cls["kernel"][: bucket.hidden] * m_h[:, None], supernet.dtype) + cls["bias"]


def task_sums(supernet: SuperNet, params: dict, arch: ArchArrays, bucket: Bucket, batch: dict,
              rng: jax.Array | None = None) -> dict[str, jax.Array]:  # fmt: skip
    """{"ce", "correct", "count"}: sums over the batch's labelled rows (label -100: padding)."""
    logits = task_logits(supernet, params, arch, bucket, batch["input_ids"], batch["attention_mask"], rng)
    sums = labelled_ce_sums(logits, batch["labels"])
    return {"ce": sums["ce"], "correct": sums["correct"], "count": jnp.sum(batch["labels"] != -100).astype(F32)}


def _task_data(task_name: str):
    from loaders.module_task import module_task_named, search_split

    try:
        task = module_task_named(task_name)
    except ValueError as e:
        raise TaskFitnessError(f"task fitness needs a module task: {e}") from None
    return task, search_split(task)


def _dataset(path: str, label_names):
    import loaders

    return loaders.TextDataset.from_files(path, label_field="label", label_names=list(label_names))


def _tokenizer(supernet_dir: str):
    import distilbert_jax as dj

    if not any(os.path.isfile(os.path.join(supernet_dir, f)) for f in ("tokenizer.json", "vocab.txt")):
        raise TaskFitnessError(f"{supernet_dir}: the SuperNet directory holds no tokenizer (tokenizer.json or vocab.txt)")
    return dj.Tokenizer.from_pretrained(supernet_dir)


def _valid_batches(path: str, label_names, supernet_dir: str, batch_size: int, seq_len: int) -> tuple[list[dict], int]:
    import loaders

    ds = _dataset(path, label_names)
    it = loaders.classification_batches(ds, _tokenizer(supernet_dir), batch_size=batch_size, seq_len=seq_len,
                                        shuffle=False, drop_last=False, epochs=1)  # fmt: skip
    return [{k: jnp.asarray(v) for k, v in b.items()} for b in it], len(ds)


class _Evaluator:
    """{"loss", "accuracy"} of task-SuperNet params at an arch over fixed batches; compiled once per bucket."""

    def __init__(self, supernet: SuperNet, batches: list[dict]):
        self.supernet, self.batches = supernet, batches
        self.sums = jax.jit(lambda p, a, b, bucket: task_sums(supernet, p, a, bucket, b), static_argnums=3)

    def __call__(self, params: dict, arch: Arch) -> dict[str, float]:
        t = jax.device_get(summed_over_batches(self.sums, params, arch, self.batches, self.supernet.bucket(arch)))
        return {"loss": float(t["ce"] / t["count"]), "accuracy": float(t["correct"] / t["count"])}


def train_task_supernet(supernet_dir: str, candidates: CandidateSet, task_name: str, out_dir: str,
                        cfg: TaskFitnessConfig = TaskFitnessConfig(), log=print) -> dict:  # fmt: skip
    """Train the task SuperNet of `supernet_dir` on `task_name`'s search-training split, one of `candidates`
    (uniformly, seeded) per step, early-stopped on the search-validation split (the mean accuracy of `eval_archs`
    candidates every `eval_every` steps: the params of the highest mean accuracy are kept), and write it to `out_dir` (params.msgpack, task_fitness.json).
    → its record."""
    import flax.serialization
    import loaders
    import optax
    from tqdm.auto import tqdm

    from distilbert_jax.train.config import OptimConfig
    from distilbert_jax.train.optim import make_optimizer

    from .io import load_supernet

    task, paths = _task_data(task_name)
    supernet, sn_params = load_supernet(supernet_dir)
    tok = _tokenizer(supernet_dir)
    archs = [supernet.space.check(a) for a in candidates.archs]
    if not archs:
        raise TaskFitnessError("no candidates to train the task SuperNet on")
    batches = loaders.classification_batches(_dataset(paths["search_train"], task.label_names), tok,
                                             batch_size=cfg.batch_size, seq_len=cfg.seq_len, seed=cfg.seed, epochs=None)  # fmt: skip
    rng = jax.random.PRNGKey(cfg.seed)
    params = {"encoder": sn_params, "head": init_head(rng, supernet.config().dim, len(task.label_names))}
    tx, _ = make_optimizer(OptimConfig(cfg.learning_rate, cfg.warmup_steps, "linear", weight_decay=cfg.weight_decay,
                                       max_grad_norm=cfg.max_grad_norm), cfg.steps)  # fmt: skip
    opt_state = tx.init(params)

    def step(params, opt_state, batch, arch, step_rng, bucket):
        def loss_fn(p):
            s = task_sums(supernet, p, arch, bucket, batch, step_rng)
            return s["ce"] / jnp.maximum(s["count"], 1.0), s

        (loss, sums), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, {"loss": loss, "accuracy": sums["correct"] / sums["count"]}

    jitted = jax.jit(step, static_argnums=5, donate_argnums=(0, 1))
    draw = np.random.default_rng(cfg.seed)
    watched = [archs[i] for i in np.random.default_rng(cfg.seed + 1).permutation(len(archs))[: cfg.eval_archs]]
    evaluate = _Evaluator(supernet, _valid_batches(paths["search_valid"], task.label_names, supernet_dir,
                                                   cfg.batch_size, cfg.seq_len)[0])  # fmt: skip
    best: dict[str, Any] = {"step": 0, "accuracy": float(np.mean([evaluate(params, a)["accuracy"] for a in watched])),
                            "params": jax.device_get(params)}  # fmt: skip
    history, start, window = [], time.perf_counter(), []
    it = iter(batches)
    bar = tqdm(range(cfg.steps), desc="task supernet", leave=False)
    for i in bar:
        arch = archs[int(draw.integers(len(archs)))]
        batch = {k: jnp.asarray(v) for k, v in next(it).items()}
        params, opt_state, m = jitted(params, opt_state, batch, ArchArrays.of(arch), jax.random.fold_in(rng, i + 1),
                                      supernet.bucket(arch))  # fmt: skip
        window.append(m)
        if (i + 1) % cfg.eval_every == 0 or i + 1 == cfg.steps:
            avg = {k: float(np.mean([float(w[k]) for w in window])) for k in ("loss", "accuracy")}
            held = [evaluate(params, a) for a in watched]
            val = {f"valid_{k}": float(np.mean([h[k] for h in held])) for k in ("loss", "accuracy")}
            history.append({"step": i + 1, **avg, **val})
            if val["valid_accuracy"] > best["accuracy"]:
                best = {"step": i + 1, "accuracy": val["valid_accuracy"], "params": jax.device_get(params)}
            bar.set_postfix(loss=f"{avg['loss']:.3f}", valid_acc=f"{val['valid_accuracy']:.3f}")
            window = []
    seconds = time.perf_counter() - start
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, PARAMS_FILE), "wb") as f:
        f.write(flax.serialization.to_bytes(best["params"]))
    meta = {"supernet_dir": os.path.abspath(supernet_dir), "task": task_name, "label_names": list(task.label_names),
            "search_train": paths["search_train"], "search_valid": paths["search_valid"], "candidates": len(archs),
            "config": dataclasses.asdict(cfg), "history": history, "seconds": seconds, "best_step": best["step"],
            "best_valid_accuracy": best["accuracy"], "watched": [str(a) for a in watched],
            "compilations": jitted._cache_size()}  # fmt: skip
    with open(os.path.join(out_dir, META_FILE), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2)
    at = next(h for h in history if h["step"] == best["step"]) if best["step"] else {}
    log(f"[task fitness] {cfg.steps} steps over {len(archs)} candidates in {seconds:.0f} s; kept step {best['step']} "
        f"(highest mean search-validation accuracy {best['accuracy']:.3f}, loss {at.get('valid_loss', float('nan')):.3f}, "
        f"over {len(watched)} candidates); training loss {history[0]['loss']:.3f} -> {history[-1]['loss']:.3f}")  # fmt: skip
    return {"dir": out_dir, "seconds": seconds, "best_step": best["step"], "best_valid_accuracy": best["accuracy"]}


class TaskFitness:
    """The fitness of a trained task SuperNet (`train_task_supernet`'s directory): `fitness(arch)` is its
    error rate at `arch` on the search-validation split (lower is better), `metrics(arch)` its loss and accuracy.
    One jitted evaluation, compiled once per bucket."""

    def __init__(self, path: str | os.PathLike):
        import flax.serialization

        from distilbert_jax.jsonfile import read_json_object

        from .io import load_supernet

        path = os.fspath(path)
        meta_path, params_path = os.path.join(path, META_FILE), os.path.join(path, PARAMS_FILE)
        for p in (meta_path, params_path):
            if not os.path.isfile(p):
                raise TaskFitnessError(f"{path} is not a task-fitness directory: no {os.path.basename(p)} "
                                       "(train one with `python -m distilbert_jax.nas task-supernet`)")  # fmt: skip
        self.meta = read_json_object(meta_path, TaskFitnessError)
        self.supernet, sn_params = load_supernet(self.meta["supernet_dir"])
        head = init_head(jax.random.PRNGKey(0), self.supernet.config().dim, len(self.meta["label_names"]))
        with open(params_path, "rb") as f:
            self.params = flax.serialization.from_bytes({"encoder": sn_params, "head": head}, f.read())
        cfg = self.meta["config"]
        batches, self.examples = _valid_batches(self.meta["search_valid"], self.meta["label_names"],
                                                self.meta["supernet_dir"], cfg["batch_size"], cfg["seq_len"])  # fmt: skip
        self.batches = batches  # the search-validation split, materialised once
        self._evaluate = _Evaluator(self.supernet, batches)

    def metrics(self, arch: Arch | str | dict) -> dict[str, float]:
        """{"loss", "accuracy"} of the task SuperNet at `arch` on the search-validation split."""
        return self._evaluate(self.params, self.supernet.space.check(arch))

    def compilations(self) -> int:
        """How many programs the jitted evaluation holds (one per bucket seen)."""
        return self._evaluate.sums._cache_size()

    def fitness(self, arch: Arch) -> float:
        """Search-validation error rate at `arch` (lower is better)."""
        return 1.0 - self.metrics(arch)["accuracy"]
