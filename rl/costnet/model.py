"""The learned cost model: our DistilBERT over (op, schedule) tokens → log time; ranking + regression loss.

    cfg = CostNetConfig(space="refine")
    model, params = init(cfg, jax.random.PRNGKey(0))
    state, hist = fit(cfg, train_set, log)              # train_set: loaders.schedules.ScheduleSet
    pred = predict(model, state.params, ids)            # [N] predicted log seconds
    save(path, cfg, state.params, stats); load(path)    # config.json + params.msgpack

Loss per batch (G ops × M schedules, `ScheduleSet.batches`): a pairwise logistic ranking loss over every
pair of schedules of the same op whose measured log times differ by more than `min_gap` (noise),
`softplus(−(ŷ_slow − ŷ_fast))`, plus `reg_weight` × the squared error of the standardised log time.
One training step is one pure jitted function `(state, batch) → (state, metrics)` with optax AdamW.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import distilbert_jax as dj
from loaders.schedules import ScheduleSet, same_group_pairs

from . import features as F

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class CostNetConfig:
    """Model size, tokenizer and training settings of a cost model."""

    space: str = "refine"
    dim: int = 64
    n_layers: int = 2
    n_heads: int = 4
    hidden_dim: int = 128
    n_buckets: int = F.N_BUCKETS
    dropout: float = 0.0
    lr: float = 1e-3
    weight_decay: float = 1e-4
    steps: int = 1500
    groups: int = 8                # ops per batch
    per_group: int = 8             # schedules per op in a batch
    rank_weight: float = 1.0
    reg_weight: float = 0.2
    min_gap: float = 0.02          # |Δ log t| below this is noise: the pair is not ranked
    seed: int = 0

    def bert(self) -> dj.DistilBertConfig:
        seq = F.n_features(self.space) + 2
        return dj.small_config(vocab_size=F.vocab_size(self.space, self.n_buckets), dim=self.dim,
                               n_layers=self.n_layers, n_heads=self.n_heads, hidden_dim=self.hidden_dim,
                               max_position_embeddings=seq, dropout=self.dropout, attention_dropout=self.dropout)

    @classmethod
    def from_dict(cls, d: dict) -> "CostNetConfig":
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown CostNetConfig field(s) {unknown}")
        return cls(**d)


class CostNet(nn.Module):
    """ids [B, S] → predicted standardised log time [B] (DistilBERT's [CLS] output → Dense → GELU → Dense)."""

    config: dj.DistilBertConfig

    @nn.compact
    def __call__(self, ids: Array, deterministic: bool = True) -> Array:
        out = dj.DistilBertModel(self.config, name="bert")(ids, jnp.ones(ids.shape, bool),
                                                            deterministic=deterministic)
        h = nn.gelu(nn.Dense(self.config.dim, name="head_hidden")(out.last_hidden_state[:, 0]), approximate=False)
        return nn.Dense(1, name="head_out")(h)[:, 0]


class Stats(NamedTuple):
    """Standardisation of the target: z = (log t − mean) / std (from the training records)."""

    mean: float
    std: float


class TrainState(NamedTuple):
    params: Any
    opt_state: Any
    step: Array


def init(cfg: CostNetConfig, key: Array) -> tuple[CostNet, Any]:
    model = CostNet(cfg.bert())
    ids = jnp.zeros((1, F.n_features(cfg.space) + 2), jnp.int32)
    return model, jax.jit(model.init)(key, ids)


def optimizer(cfg: CostNetConfig) -> optax.GradientTransformation:
    sched = optax.warmup_cosine_decay_schedule(0.0, cfg.lr, max(cfg.steps // 20, 1), max(cfg.steps, 2))
    return optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(sched, weight_decay=cfg.weight_decay))


def loss_fn(params: Any, batch: dict, model: CostNet, cfg: CostNetConfig, stats: Stats,
            key: Array) -> tuple[Array, dict]:
    """Ranking + regression loss of one batch → (loss, {"rank", "reg", "pair_acc"})."""
    pred = model.apply(params, batch["ids"], deterministic=cfg.dropout == 0.0, rngs={"dropout": key})
    z = (batch["log_t"] - stats.mean) / stats.std
    pairs = same_group_pairs(batch["group"], batch["log_t"], cfg.min_gap)       # [B, B]: i faster than j
    diff = pred[None, :] - pred[:, None]                                         # ŷ_j − ŷ_i, want > 0
    n = jnp.maximum(pairs.sum(), 1)
    rank = jnp.sum(jnp.where(pairs, jax.nn.softplus(-diff), 0.0)) / n
    reg = jnp.mean((pred - z) ** 2)
    acc = jnp.sum(jnp.where(pairs, diff > 0, False)) / n
    return cfg.rank_weight * rank + cfg.reg_weight * reg, {"rank": rank, "reg": reg, "pair_acc": acc}


def train_step(state: TrainState, batch: dict, *, model: CostNet, tx: optax.GradientTransformation,
               cfg: CostNetConfig, stats: Stats) -> tuple[TrainState, dict]:
    """One optimiser step: pure, jit it with the keyword arguments bound (see `make_step`)."""
    key = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), state.step)
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch, model, cfg, stats, key)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    return TrainState(optax.apply_updates(state.params, updates), opt_state, state.step + 1), {"loss": loss, **aux}


def make_step(model: CostNet, tx: optax.GradientTransformation, cfg: CostNetConfig, stats: Stats):
    """`train_step` jitted once, state donated."""
    return jax.jit(functools.partial(train_step, model=model, tx=tx, cfg=cfg, stats=stats), donate_argnums=0)


def fit(cfg: CostNetConfig, data: ScheduleSet, progress: bool = False) -> tuple[CostNet, TrainState, Stats, list]:
    """Train on `data` for `cfg.steps` steps → (model, state, stats, per-100-step mean metrics)."""
    from tqdm import tqdm

    stats = Stats(float(data.log_t.mean()), float(max(data.log_t.std(), 1e-3)))
    model, params = init(cfg, jax.random.PRNGKey(cfg.seed))
    tx = optimizer(cfg)
    state = TrainState(params, jax.jit(tx.init)(params), jnp.zeros((), jnp.int32))
    step = make_step(model, tx, cfg, stats)
    batches = data.batches(cfg.groups, cfg.per_group, cfg.seed)
    history, window = [], []
    for i in tqdm(range(cfg.steps), desc="training cost model", unit="step", disable=not progress):
        state, m = step(state, next(batches))
        window.append(m)
        if (i + 1) % 100 == 0 or i + 1 == cfg.steps:
            window = jax.device_get(window)
            history.append({"step": i + 1, **{k: float(np.mean([w[k] for w in window])) for k in window[0]}})
            window = []
    return model, state, stats, history


@functools.partial(jax.jit, static_argnums=0)
def _apply(model: CostNet, params: Any, ids: Array) -> Array:
    return model.apply(params, ids)


def predict(model: CostNet, params: Any, ids: np.ndarray, stats: Stats, batch: int = 256) -> np.ndarray:
    """Predicted log seconds [N] of token ids [N, S] (padded to whole batches: one compiled shape)."""
    out = []
    for s in range(0, len(ids), batch):
        chunk = ids[s:s + batch]
        pad = np.zeros((batch - len(chunk), ids.shape[1]), np.int32)
        z = np.asarray(_apply(model, params, jnp.asarray(np.concatenate([chunk, pad]))))[: len(chunk)]
        out.append(z * stats.std + stats.mean)
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def save(path: str, cfg: CostNetConfig, params: Any, stats: Stats, meta: dict | None = None) -> None:
    """Write `config.json` (config, target stats, `meta`) and `params.msgpack` to directory `path`."""
    from flax import serialization

    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump({"costnet": dataclasses.asdict(cfg), "stats": stats._asdict(), **(meta or {})}, f, indent=1)
    with open(os.path.join(path, "params.msgpack"), "wb") as f:
        f.write(serialization.to_bytes(jax.device_get(params)))


def load(path: str) -> tuple[CostNetConfig, CostNet, Any, Stats, dict]:
    """(config, model, params, stats, the whole config.json) of a directory written by `save`."""
    from flax import serialization

    cfg_path, par_path = os.path.join(path, "config.json"), os.path.join(path, "params.msgpack")
    for p in (cfg_path, par_path):
        if not os.path.isfile(p):
            raise FileNotFoundError(f"cost model {path}: missing {os.path.basename(p)} (train one with "
                                    "`python -m rl.cost_learned train`)")
    try:
        with open(cfg_path) as f:
            meta = json.load(f)
        cfg = CostNetConfig.from_dict(meta["costnet"])
        stats = Stats(**meta["stats"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise ValueError(f"cost model {cfg_path} is not a cost-model config: {e}") from None
    model, template = init(cfg, jax.random.PRNGKey(0))
    with open(par_path, "rb") as f:
        try:
            params = serialization.from_bytes(template, f.read())
        except (ValueError, KeyError) as e:
            raise ValueError(f"cost model {par_path} does not fit the network of {cfg_path}: {e}") from None
    return cfg, model, params, stats, meta


__all__ = ["CostNet", "CostNetConfig", "Stats", "TrainState", "fit", "init", "load", "loss_fn", "make_step",
           "optimizer", "predict", "save", "train_step"]
