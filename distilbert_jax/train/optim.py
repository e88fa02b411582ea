"""The optimizer: AdamW (no decay on biases / LayerNorm scales) with linear warmup then linear or
cosine decay, after global-norm gradient clipping."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from .config import OptimConfig


def make_schedule(cfg: OptimConfig, total_steps: int) -> optax.Schedule:
    """Learning rate per optimizer step: 0 → lr over `warmup_steps`, then decay to lr·end_lr_ratio."""
    lr, warmup = cfg.learning_rate, min(cfg.warmup_steps, total_steps)
    decay_steps = max(total_steps - warmup, 1)
    if cfg.schedule == "linear":
        decay = optax.linear_schedule(lr, lr * cfg.end_lr_ratio, decay_steps)
    elif cfg.schedule == "cosine":
        decay = optax.cosine_decay_schedule(lr, decay_steps, alpha=cfg.end_lr_ratio)
    else:
        decay = optax.constant_schedule(lr)
    if warmup == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), decay], [warmup])


def _decay_mask(params):
    def decays(path, _leaf) -> bool:
        return getattr(path[-1], "key", None) not in ("bias", "scale")

    return jax.tree_util.tree_map_with_path(decays, params)


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformation:
    """Scale updates by min(1, max_norm / global_norm): `optax.clip_by_global_norm`'s result (up to
    rounding) as one multiply per leaf, which XLA fuses into the AdamW update — optax's
    `where(norm < max, g, g / norm * max)` measured ~100 ms slower per step for DistilBERT-base on CPU."""

    def update(updates, state, params=None):
        del params
        scale = jnp.minimum(1.0, max_norm / jnp.maximum(optax.tree.norm(updates), 1e-30))
        return jax.tree.map(lambda g: g * scale.astype(g.dtype), updates), state

    return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


def make_optimizer(cfg: OptimConfig, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """`(tx, schedule)` for `total_steps` optimizer steps."""
    schedule = make_schedule(cfg, total_steps)
    adamw = optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay, mask=_decay_mask)
    if cfg.max_grad_norm is None:
        return adamw, schedule
    return optax.chain(clip_by_global_norm(cfg.max_grad_norm), adamw), schedule
