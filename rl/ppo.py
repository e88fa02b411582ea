"""PPO as one XLA program: `make_train(cfg) -> train(rng)` (PureJaxRL structure, typed and split up).

train(rng) = lax.scan(update, init(rng), length=num_updates); update = rollout (lax.scan over num_steps of
vmapped envs) → GAE (reverse lax.scan) → update_epochs × num_minibatches Adam steps (nested lax.scan).
Runs under `jax.jit(train)` or `jax.jit(jax.vmap(train))` over seeds. With more than one local device the
env batch is sharded over a 1-D `data` mesh (params replicated; XLA inserts the gradient all-reduce).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from . import distributions as dist
from .config import PPOConfig
from .envs import Env, make_env
from .networks import ActorCritic, bert_config, load_pretrained_bert

Array = jax.Array


class Transition(NamedTuple):
    """One rollout step for all envs (leaves [num_envs, ...]; stacked to [num_steps, num_envs, ...])."""

    obs: dict
    action: Array        # [B, H]
    log_prob: Array      # [B]
    value: Array         # [B]
    reward: Array        # [B]
    terminated: Array    # [B] bool — true end: no bootstrap
    done: Array          # [B] bool — terminated | truncated: the trace is cut
    next_value: Array    # [B] V(pre-reset obs) where truncated (envs that can truncate), else 0
    info: dict


class TrainState(NamedTuple):
    params: Any
    opt_state: Any


class RunnerState(NamedTuple):
    train: TrainState
    env_state: Any
    obs: dict
    rng: Array
    update: Array        # [] int updates done


class Setup(NamedTuple):
    """Static pieces built from a config (not traced)."""

    cfg: PPOConfig
    env: Env
    network: nn.Module
    tx: optax.GradientTransformation
    mesh: Mesh | None


def build_network(cfg: PPOConfig, env: Env) -> ActorCritic:
    """The actor-critic for `cfg.model_type` sized for `env`."""
    bert = None
    if cfg.model_type.startswith("distilbert"):
        import distilbert_jax as dj
        base = dj.DistilBertConfig.from_json_file(cfg.pretrained) if cfg.pretrained else None
        n_feat = env_feature_count(env)
        bert = bert_config(n_feat, cfg.model_type.split("-")[1], cfg.bert_dim, cfg.bert_layers, cfg.bert_heads,
                           cfg.bert_hidden, cfg.n_buckets, cfg.dropout, base)
    return ActorCritic(cfg.model_type, env.n_heads, env.n_actions, cfg.width, cfg.lstm_chunk, bert,
                       cfg.n_buckets, cfg.shared_embedding)


def env_feature_count(env: Env) -> int:
    obs, _ = env.reset(jax.random.PRNGKey(0))
    return int(obs["consumer"].shape[-1])


def make_setup(cfg: PPOConfig, env: Env | None = None) -> Setup:
    """Env, network, optimiser (Adam + grad clipping + optional linear LR annealing) and device mesh."""
    env = env or make_env(cfg.env, cfg.load_machine())
    steps_per_update = cfg.num_minibatches * cfg.update_epochs
    lr = (lambda c: cfg.lr * (1.0 - (c // steps_per_update) / cfg.num_updates)) if cfg.anneal_lr else cfg.lr
    tx = optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), optax.adam(lr, eps=1e-5))
    devices = jax.local_devices()
    mesh = Mesh(devices, ("data",)) if len(devices) > 1 and cfg.num_envs % len(devices) == 0 else None
    return Setup(cfg, env, build_network(cfg, env), tx, mesh)


def shard_envs(setup: Setup, tree: Any) -> Any:
    """Constrain the leading (env) axis of every leaf to the `data` mesh axis (no-op on one device)."""
    if setup.mesh is None:
        return tree
    spec = NamedSharding(setup.mesh, PartitionSpec("data"))
    return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, spec) if x.ndim else x, tree)


def init_runner(setup: Setup, rng: Array) -> RunnerState:
    """Initial params, optimiser state and env states for one seed."""
    cfg, env = setup.cfg, setup.env
    rng, k_net, k_env = jax.random.split(rng, 3)
    obs, env_state = jax.vmap(env.reset)(jax.random.split(k_env, cfg.num_envs))
    params = setup.network.init(k_net, jax.tree.map(lambda x: x[:1], obs))
    if cfg.pretrained:
        params = load_pretrained_bert(params, cfg.pretrained, cfg.model_type.split("-")[1])
    train = TrainState(params, setup.tx.init(params))
    return RunnerState(train, shard_envs(setup, env_state), shard_envs(setup, obs), rng, jnp.int32(0))


def env_step(setup: Setup, runner: RunnerState, _: Any) -> tuple[RunnerState, Transition]:
    """Act in every env once with the current policy."""
    env, params = setup.env, runner.train.params
    rng, k_act, k_env = jax.random.split(runner.rng, 3)
    logits, value = setup.network.apply(params, runner.obs)
    action = dist.sample(k_act, logits, runner.obs["mask"])
    logp = dist.log_prob(logits, runner.obs["mask"], action, env.active)
    keys = jax.random.split(k_env, setup.cfg.num_envs)
    obs, env_state, reward, term, trunc, info = jax.vmap(env.step)(keys, runner.env_state, action)
    if env.can_truncate:  # the value of the pre-reset observation, needed only where an episode was truncated
        final_obs = info.pop("final_obs")
        next_value = jax.lax.cond(jnp.any(trunc & ~term), lambda: setup.network.apply(params, final_obs)[1],
                                  lambda: jnp.zeros_like(value))  # fmt: skip
    else:
        next_value = jnp.zeros_like(value)
    obs, env_state = shard_envs(setup, (obs, env_state))
    tr = Transition(runner.obs, action, logp, value, reward, term, term | trunc, next_value, info)
    return runner._replace(env_state=env_state, obs=obs, rng=rng), tr


def gae(rewards: Array, values: Array, next_values: Array, terminated: Array, dones: Array,
        gamma: float, lam: float) -> tuple[Array, Array]:
    """Generalised advantage estimation over time-major [T, B] arrays → (advantages, value targets).

    delta_t = r_t + γ (1 − term_t) V'_t − V_t with V'_t the value of the state after step t (of the
    pre-reset observation for truncated steps); A_t = delta_t + γλ (1 − done_t) A_{t+1}."""
    deltas = rewards + gamma * next_values * (1.0 - terminated) - values

    def back(carry, x):
        delta, done = x
        carry = delta + gamma * lam * (1.0 - done) * carry
        return carry, carry

    _, adv = jax.lax.scan(back, jnp.zeros_like(values[0]), (deltas, dones.astype(values.dtype)), reverse=True)
    return adv, adv + values


def ppo_loss(params: Any, setup: Setup, batch: tuple[Transition, Array, Array]) -> tuple[Array, dict]:
    """Clipped policy loss + clipped value loss − entropy bonus on one minibatch ([N, ...] leaves)."""
    cfg = setup.cfg
    tr, adv, targets = batch
    logits, value = setup.network.apply(params, tr.obs)
    logp = dist.log_prob(logits, tr.obs["mask"], tr.action, setup.env.active)
    v_clip = tr.value + jnp.clip(value - tr.value, -cfg.clip_eps, cfg.clip_eps)
    v_loss = 0.5 * jnp.maximum((value - targets) ** 2, (v_clip - targets) ** 2).mean()
    log_ratio = logp - tr.log_prob
    ratio = jnp.exp(log_ratio)
    if cfg.normalize_advantages and adv.shape[0] > 1:   # a minibatch of one would give NaN
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    pg = -jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - cfg.clip_eps, 1 + cfg.clip_eps) * adv).mean()
    ent = dist.entropy(logits, tr.obs["mask"], setup.env.active).mean()
    total = pg + cfg.vf_coef * v_loss - cfg.ent_coef * ent
    aux = {"policy_loss": pg, "value_loss": v_loss, "entropy": ent,
           "approx_kl": ((ratio - 1) - log_ratio).mean(), "clip_frac": (jnp.abs(ratio - 1) > cfg.clip_eps).mean()}
    return total, aux


def _minibatch_step(setup: Setup, train: TrainState, batch: Any) -> tuple[TrainState, dict]:
    grads, aux = jax.grad(ppo_loss, has_aux=True)(train.params, setup, batch)
    updates, opt_state = setup.tx.update(grads, train.opt_state, train.params)
    return TrainState(optax.apply_updates(train.params, updates), opt_state), aux


def _epoch(setup: Setup, carry: tuple[TrainState, Array], _: Any, data: Any) -> tuple[tuple, dict]:
    train, rng = carry
    cfg = setup.cfg
    rng, k = jax.random.split(rng)
    n = cfg.num_envs * cfg.num_steps
    perm = jax.random.permutation(k, n)
    shuffled = jax.tree.map(lambda x: x.reshape(n, *x.shape[2:])[perm], data)
    mbs = jax.tree.map(lambda x: x.reshape(cfg.num_minibatches, cfg.minibatch_size, *x.shape[1:]), shuffled)
    train, aux = jax.lax.scan(functools.partial(_minibatch_step, setup), train, mbs)
    return (train, rng), aux


def episode_metrics(info: dict) -> dict[str, Array]:
    """Mean return / length of the episodes that ended during a rollout (0 with count 0 if none)."""
    done = info["returned_episode"]
    count = done.sum()
    mean = lambda x: jnp.where(done, x, 0).sum() / jnp.maximum(count, 1)  # noqa: E731
    return {"episode_return": mean(info["returned_episode_return"]),
            "episode_length": mean(info["returned_episode_length"]), "episodes": count}


def update_step(setup: Setup, runner: RunnerState, _: Any) -> tuple[RunnerState, dict]:
    """One PPO update: rollout, GAE, epochs of minibatch steps. Returns per-update metrics."""
    cfg = setup.cfg
    runner, traj = jax.lax.scan(functools.partial(env_step, setup), runner, None, cfg.num_steps)
    # V of the state after each step: the next step's value, or (truncated steps) of the pre-reset observation
    last_val = setup.network.apply(runner.train.params, runner.obs)[1]
    next_values = jnp.concatenate([traj.value[1:], last_val[None]], 0)
    if setup.env.can_truncate:
        next_values = jnp.where(traj.done & ~traj.terminated, traj.next_value, next_values)
    adv, targets = gae(traj.reward, traj.value, next_values, traj.terminated.astype(jnp.float32), traj.done,
                       cfg.gamma, cfg.gae_lambda)
    data = (traj._replace(info={}), adv, targets)
    rng, k = jax.random.split(runner.rng)
    (train, _), aux = jax.lax.scan(functools.partial(_epoch, setup, data=data), (runner.train, k), None,
                                   cfg.update_epochs)
    metrics = {**episode_metrics(traj.info), **jax.tree.map(jnp.mean, aux)}
    return runner._replace(train=train, rng=rng, update=runner.update + 1), metrics


def run_updates(setup: Setup, runner: RunnerState, n: int) -> tuple[RunnerState, dict]:
    """`n` (static) updates under one lax.scan; metrics stacked [n]."""
    return jax.lax.scan(functools.partial(update_step, setup), runner, None, n)


def make_train(cfg: PPOConfig, env: Env | None = None):
    """`train(rng) -> (RunnerState, metrics [num_updates])`, pure: wrap in jax.jit / jax.vmap."""
    setup = make_setup(cfg, env)

    def train(rng: Array) -> tuple[RunnerState, dict]:
        return run_updates(setup, init_runner(setup, rng), cfg.num_updates)

    return train


__all__ = ["Transition", "TrainState", "RunnerState", "Setup", "make_setup", "init_runner", "env_step", "gae",
           "ppo_loss", "update_step", "run_updates", "make_train", "episode_metrics", "build_network"]
