"""Latency predictors of one search space on the machine that measured them. Every predictor
(`Predictor`: `predict(archs) -> ms`, archs as `Arch`, dict or string, checked against its space) is
saved as `predictor.json` (its `kind`) + `predictor.npz`, and `load_predictor` reads any kind:

- `mlp` (`LatencyPredictor`, AutoTinyBERT's): a small MLP from an arch's features — layers, hidden,
  heads, qkv, FFN (per-layer values averaged over the layers), each divided by the space's maximum — to
  its **log** latency (standardised), trained with optax on measured latencies;
- `flops` (`FlopsBaseline`): log latency linear in log encoder FLOPs, the baseline a predictor must beat;
- `layer_sum` (`layer_latency.LayerSumPredictor`): embeddings + the sum of the arch's timed sub-layers.

Predicting the log makes the squared loss a relative error, which is what MAPE and the latency window
(0.85–1.1 x target) measure; the original predicted latency / 200 ms (an absolute error, which lets the
small — i.e. interesting — archs carry large relative errors). Prediction is one jitted function over
chunks padded to a power of two: the original space's ~370k archs take about two seconds.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from .space import Arch, SearchSpace, parse_arch

FEATURES = ("layers", "hidden", "heads", "qkv", "ffn")
CONFIG_FILE, WEIGHTS_FILE = "predictor.json", "predictor.npz"
FORMAT = 1
CHUNK = 16384  # archs per jitted prediction call
MIN_TRAIN = 8  # fewer measured archs cannot fit a predictor
KINDS = ("mlp", "flops", "layer_sum")


class PredictorError(ValueError):
    """Latencies a predictor cannot be fitted on (too few, not positive)."""


class PredictorFileError(PredictorError):
    """A predictor directory that is missing or malformed; the message names the file."""


def encoder_flops(arch: Arch, batch: int = 1, seq: int = 128) -> int:
    """Multiply-adds x 2 of the encoder forward (q/k/v/out projections, attention scores and context,
    FFN; summed over the layers) on [batch, seq] tokens; embeddings, LayerNorms and softmax are left out."""
    h, t = arch.hidden, batch * seq
    return sum(2 * t * (4 * h * q + 2 * h * f) + 4 * t * seq * q for q, f in zip(arch.layer_qkv, arch.layer_ffn))


def within(predicted: np.ndarray, measured: np.ndarray, tolerance: float = 0.1) -> float:
    """The share of predictions within ±`tolerance` (relative) of the measurement."""
    predicted, measured = np.asarray(predicted, np.float64), np.asarray(measured, np.float64)
    return float(np.mean(np.abs(predicted / measured - 1) <= tolerance + 1e-12))


def mape(predicted: np.ndarray, measured: np.ndarray) -> float:
    """Mean absolute percentage error of `predicted` against `measured` (a fraction: 0.05 = 5 %)."""
    predicted, measured = np.asarray(predicted, np.float64), np.asarray(measured, np.float64)
    return float(np.mean(np.abs(predicted - measured) / measured))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two [n] arrays (ties get their mean rank); NaN when either is constant."""
    from scipy.stats import spearmanr  # scipy comes with jax

    a, b = np.asarray(a), np.asarray(b)
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def features(archs: Sequence[Arch], space: SearchSpace) -> np.ndarray:
    """[n, 5] float32: layers, hidden, heads, qkv, ffn of each arch (per-layer values: their mean over the
    layers), divided by the space's maxima."""
    largest = space.largest()
    scale = np.array([getattr(largest, f) for f in FEATURES], np.float32)
    mean = lambda v: v if isinstance(v, int) else sum(v) / len(v)  # noqa: E731
    raw = np.array([(a.layers, a.hidden, mean(a.heads), mean(a.qkv), mean(a.ffn)) for a in archs], np.float32)
    return raw.reshape(-1, len(FEATURES)) / scale


def _activation(name: str):
    import flax.linen as nn
    import jax.numpy as jnp

    return {"relu": nn.relu, "tanh": jnp.tanh, "silu": nn.silu}[name]


@functools.partial(jax.jit, static_argnums=2)
def _mlp_forward(weights: list[tuple[Any, Any]], x, activation: str):
    act = _activation(activation)
    for kernel, bias in weights[:-1]:
        x = act(x @ kernel + bias)
    kernel, bias = weights[-1]
    return (x @ kernel + bias)[:, 0]


def _mlp_predict(weights: list[tuple[np.ndarray, np.ndarray]], x: np.ndarray, activation: str) -> np.ndarray:
    # jitted, in chunks padded to a power of two (<= CHUNK): a few compilations serve any n
    out = []
    for i in range(0, len(x), CHUNK):
        part = x[i:i + CHUNK]
        size = max(64, 1 << (len(part) - 1).bit_length())
        padded = np.zeros((size, x.shape[1]), np.float32)
        padded[: len(part)] = part
        out.append(np.asarray(_mlp_forward(weights, padded, activation))[: len(part)])
    return np.concatenate(out)


@dataclasses.dataclass(frozen=True)
class MLPSettings:
    """The predictor MLP's shape and training (the original: width 2000, 3 layers — too slow to score a
    whole space quickly, and no better on a few hundred archs; see docs/nas.md)."""

    width: int = 128
    depth: int = 3
    activation: str = "silu"
    steps: int = 1500
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    target: str = "log"  # "log": standardised log(ms); "linear": ms / mean(ms)


@functools.lru_cache(maxsize=8)
def _trainer(width: int, depth: int, activation: str, steps: int, lr: float, weight_decay: float):
    # one jitted full-batch training loop per MLP shape (a refit with other data or seed reuses it)
    import flax.linen as nn
    import jax.numpy as jnp
    import optax

    act = _activation(activation)

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x):
            for _ in range(depth):
                x = act(nn.Dense(width)(x))
            return nn.Dense(1)(x)[:, 0]

    model = MLP()
    tx = optax.adamw(optax.cosine_decay_schedule(lr, steps), weight_decay=weight_decay)

    @jax.jit
    def train(x, y, key):
        params = model.init(key, x[:1])

        def step(carry, _):
            params, opt = carry
            loss, grads = jax.value_and_grad(lambda p: jnp.mean((model.apply(p, x) - y) ** 2))(params)
            updates, opt = tx.update(grads, opt, params)
            return (optax.apply_updates(params, updates), opt), loss

        (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), None, length=steps)
        return params

    return train


def _train_mlp(x: np.ndarray, y: np.ndarray, settings: MLPSettings, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    s = settings
    train = _trainer(s.width, s.depth, s.activation, s.steps, s.learning_rate, s.weight_decay)
    p = jax.device_get(train(x.astype(np.float32), y.astype(np.float32), jax.random.PRNGKey(seed)))["params"]
    return [(np.asarray(p[f"Dense_{i}"]["kernel"]), np.asarray(p[f"Dense_{i}"]["bias"])) for i in range(s.depth + 1)]


KIND_CLASSES: dict[str, type] = {}


class Predictor:
    """Predicted latency (ms) of archs of one search space on the machine that measured them. `meta` holds
    `reference_ms`, `device`, `batch`, `seq` (and whatever else the fit recorded). Subclasses set `kind`
    and implement `_predict` (checked archs -> ms), `_config` / `_arrays` (what `save` writes) and
    `_from_files` (what `load_predictor` reads back)."""

    kind = ""

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        KIND_CLASSES[cls.kind] = cls          # `load_predictor` dispatches on the saved kind
    space: SearchSpace | None  # None: archs are parsed but not checked (a baseline fitted without a space)
    meta: dict[str, Any]

    def predict(self, archs: Sequence[Arch | str | dict]) -> np.ndarray:
        """Predicted latency in ms of each arch, [n] float64 (vectorised, any n). Archs are `Arch`es, dicts
        or strings (`parse_arch`'s formats), each checked against the predictor's space (`ArchError`)."""
        if len(archs) == 0:
            return np.zeros(0)
        checked = self.space.check_all(archs) if self.space is not None else [parse_arch(a) for a in archs]
        return np.asarray(self._predict(checked), np.float64)

    __call__ = predict

    def _predict(self, archs: Sequence[Arch]) -> np.ndarray:
        raise NotImplementedError

    @property
    def reference_ms(self) -> float:
        return float(self.meta["reference_ms"])

    @property
    def device(self) -> str:
        return str(self.meta.get("device", "unknown"))

    def _config(self) -> dict[str, Any]:
        raise NotImplementedError

    def _arrays(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def save(self, path: str | os.PathLike) -> None:
        """Write `predictor.json` (kind, settings, space, meta) and `predictor.npz` (arrays)."""
        path = os.fspath(path)
        os.makedirs(path, exist_ok=True)
        space = self.space.to_dict() if self.space is not None else None
        config = {"format": FORMAT, "kind": self.kind, **self._config(), "space": space, "meta": self.meta}
        with open(os.path.join(path, CONFIG_FILE), "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2)
            f.write("\n")
        np.savez(os.path.join(path, WEIGHTS_FILE), **self._arrays())


def load_predictor(path: str | os.PathLike) -> Predictor:
    """The predictor `save` wrote to `path`, whichever its kind (exactly: same predictions);
    `PredictorFileError` naming the file when it is missing or malformed."""
    path = os.fspath(path)
    config_file, weights_file = os.path.join(path, CONFIG_FILE), os.path.join(path, WEIGHTS_FILE)
    for f in (config_file, weights_file):
        if not os.path.isfile(f):
            raise PredictorFileError(f"latency predictor file {f} does not exist (fit one with "
                                     "`python -m distilbert_jax.nas latency`)")  # fmt: skip
    try:
        with open(config_file, encoding="utf-8") as f:
            config = json.load(f)
        kind = config.get("kind", "mlp")  # files before the other kinds are MLPs
        if config.get("format") != FORMAT or kind not in KINDS:
            raise ValueError(f"format {config.get('format')} / kind {kind!r}, expected {FORMAT} / one of {KINDS}")
        space = SearchSpace.from_dict(config["space"]) if config["space"] is not None or kind != "flops" else None
        meta = dict(config["meta"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise PredictorFileError(f"{config_file} is malformed: {type(e).__name__}: {e}") from None
    try:
        with np.load(weights_file) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise PredictorFileError(f"{weights_file} is malformed: {type(e).__name__}: {e}") from None
    cls = KIND_CLASSES[kind]      # every kind's module is imported by the `nas` package
    try:
        return cls._from_files(config, arrays, space, meta)
    except (KeyError, TypeError, ValueError) as e:
        raise PredictorFileError(f"{path}: the {kind} predictor's files are malformed: {type(e).__name__}: {e}") from None


class LatencyPredictor(Predictor):
    """The MLP predictor (kind "mlp")."""

    kind = "mlp"

    def __init__(self, space: SearchSpace, weights: list[tuple[np.ndarray, np.ndarray]], y_mean: float, y_std: float,
                 settings: MLPSettings = MLPSettings(), meta: dict[str, Any] | None = None):  # fmt: skip
        self.space, self.weights, self.y_mean, self.y_std = space, weights, float(y_mean), float(y_std)
        self.settings, self.meta = settings, dict(meta or {})

    @classmethod
    def fit(cls, archs: Sequence[Arch], ms: np.ndarray, space: SearchSpace, *, seed: int = 0,
            settings: MLPSettings = MLPSettings(), meta: dict[str, Any] | None = None) -> LatencyPredictor:  # fmt: skip
        """Train the MLP on measured latencies `ms` [n] of `archs` (archs of `space`)."""
        ms = np.asarray(ms, np.float64)
        if len(archs) != len(ms) or len(archs) < MIN_TRAIN:
            raise PredictorError(f"a predictor needs at least {MIN_TRAIN} measured archs (one latency each), "
                                 f"got {len(archs)} archs and {len(ms)} latencies")  # fmt: skip
        if not np.all(np.isfinite(ms) & (ms > 0)):
            raise PredictorError("latencies must be positive and finite")
        y = np.log(ms) if settings.target == "log" else ms
        if settings.target == "log":
            mean, std = float(y.mean()), float(y.std() or 1.0)
        else:
            mean, std = 0.0, float(ms.mean())
        weights = _train_mlp(features(archs, space), (y - mean) / std, settings, seed)
        return cls(space, weights, mean, std, settings, {**(meta or {}), "seed": seed, "n_train": len(archs)})

    def _predict(self, archs: Sequence[Arch]) -> np.ndarray:
        out = _mlp_predict(self.weights, features(archs, self.space), self.settings.activation).astype(np.float64)
        out = out * self.y_std + self.y_mean
        return np.exp(out) if self.settings.target == "log" else np.maximum(out, 1e-6)

    # ---- files ------------------------------------------------------------------------------------------
    def _config(self) -> dict[str, Any]:
        return {"features": list(FEATURES), "settings": dataclasses.asdict(self.settings), "y_mean": self.y_mean,
                "y_std": self.y_std}  # fmt: skip

    def _arrays(self) -> dict[str, np.ndarray]:
        return {f"{name}_{i}": a for i, (k, b) in enumerate(self.weights) for name, a in (("kernel", k), ("bias", b))}

    @classmethod
    def _from_files(cls, config: dict, arrays: dict, space: SearchSpace, meta: dict) -> LatencyPredictor:
        if config.get("features") != list(FEATURES):
            raise ValueError(f"features {config.get('features')}, expected {list(FEATURES)}")
        settings = MLPSettings(**config["settings"])
        weights = [(arrays[f"kernel_{i}"], arrays[f"bias_{i}"]) for i in range(settings.depth + 1)]
        fan_in = len(FEATURES)
        for i, (k, b) in enumerate(weights):
            want = (fan_in, 1 if i == settings.depth else settings.width)
            if k.shape != want or b.shape != want[1:]:
                raise ValueError(f"layer {i} has kernel {k.shape} / bias {b.shape}, expected {want} / {want[1:]} for "
                                 f"the settings {config['settings']}")  # fmt: skip
            fan_in = want[1]
        return cls(space, weights, float(config["y_mean"]), float(config["y_std"]), settings, meta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> LatencyPredictor:
        """The MLP predictor `save` wrote to `path` (exactly: same predictions); `PredictorFileError` naming
        the file when it is missing, malformed or holds another kind (`load_predictor` reads any kind)."""
        predictor = load_predictor(path)
        if not isinstance(predictor, cls):
            raise PredictorFileError(f"{os.path.join(os.fspath(path), CONFIG_FILE)} holds a {predictor.kind!r} "
                                     "predictor, not an MLP: read it with load_predictor")  # fmt: skip
        return predictor


class FlopsBaseline(Predictor):
    """The FLOPs-only baseline (kind "flops"): log(ms) = intercept + slope * log(FLOPs of the encoder at
    batch x seq), least squares on the training archs."""

    kind = "flops"

    def __init__(self, intercept: float, slope: float, batch: int, seq: int, space: SearchSpace | None = None,
                 meta: dict[str, Any] | None = None):  # fmt: skip
        self.intercept, self.slope, self.batch, self.seq = float(intercept), float(slope), int(batch), int(seq)
        self.space = space
        self.meta = dict(meta or {})

    @classmethod
    def fit(cls, archs: Sequence[Arch], ms: np.ndarray, batch: int, seq: int, space: SearchSpace | None = None,
            meta: dict[str, Any] | None = None) -> FlopsBaseline:  # fmt: skip
        flops = np.log([encoder_flops(a, batch, seq) for a in archs])
        slope, intercept = np.polyfit(flops, np.log(np.asarray(ms, np.float64)), 1)
        return cls(float(intercept), float(slope), batch, seq, space, {**(meta or {}), "n_train": len(archs)})

    def _predict(self, archs: Sequence[Arch]) -> np.ndarray:
        flops = np.log([encoder_flops(a, self.batch, self.seq) for a in archs])
        return np.exp(self.intercept + self.slope * flops)

    def to_dict(self) -> dict[str, float]:
        return {"intercept": self.intercept, "slope": self.slope, "batch": self.batch, "seq": self.seq}

    def _config(self) -> dict[str, Any]:
        return self.to_dict()

    def _arrays(self) -> dict[str, np.ndarray]:
        return {}

    @classmethod
    def _from_files(cls, config: dict, arrays: dict, space: SearchSpace, meta: dict) -> FlopsBaseline:
        return cls(config["intercept"], config["slope"], config["batch"], config["seq"], space, meta)
