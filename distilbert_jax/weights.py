"""Hugging Face safetensors keys <-> nested Flax params, driven by one key table and checked against
`jax.eval_shape(init)`. Every missing / unexpected / mis-shaped key is collected and reported at once.

    distilbert.transformer.layer.0.attention.q_lin.weight [out, in]
        <-> distilbert/transformer/layer/0/attention/q_lin/kernel [in, out]
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from .heads import DistilBertForMultipleChoice
from .modeling import DistilBertModel, sinusoidal_table
from .safetensors_file import to_device

PREFIX = "distilbert."
TIED_KEY = "vocab_projector.weight"
IGNORED_KEYS = re.compile(r"^(distilbert\.)?embeddings\.position_ids$")

# The key table: (module-name pattern, HF param name) -> (Flax param name, HF->Flax transform).
# Modules not matched by an earlier row are Linear layers.
_MODULE_KINDS = (
    (re.compile(r"(^|\.)(word_embeddings|position_embeddings)$"), "embedding"),
    (re.compile(r"(^|\.)(LayerNorm|[a-z_]*layer_norm)$"), "layer_norm"),
    (re.compile(r".*"), "linear"),
)
_PARAMS = {
    ("embedding", "weight"): "embedding",
    ("layer_norm", "weight"): "scale",
    ("layer_norm", "bias"): "bias",
    ("linear", "weight"): "kernel",
    ("linear", "bias"): "bias",
}
_TRANSPOSED = {"kernel"}
_FLAX_TO_HF = {"embedding": "weight", "scale": "weight", "kernel": "weight", "bias": "bias"}


class WeightsError(ValueError):
    """A checkpoint that does not fit the model; the message lists every problem."""


@dataclasses.dataclass
class LoadReport:
    """What a conversion did besides copying: keys freshly initialised, keys left unused, notes."""

    initialized: list[str] = dataclasses.field(default_factory=list)
    unused: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    nonfinite: list[str] = dataclasses.field(default_factory=list)  # keys holding NaN / Inf

    def warnings(self) -> list[str]:
        """The messages `from_pretrained` warns with: non-finite weights and unused checkpoint keys."""
        out = []
        if self.nonfinite:
            out.append(f"{len(self.nonfinite)} checkpoint tensors hold NaN / Inf values: " + "; ".join(self.nonfinite))
        if self.unused:
            out.append(
                f"{len(self.unused)} checkpoint keys are not used by this model (another head's weights?): "
                + ", ".join(self.unused)
            )
        return out


def _kind(module: str) -> str:
    return next(kind for pattern, kind in _MODULE_KINDS if pattern.search(module))


def hf_key_to_path(key: str) -> tuple[tuple[str, ...], bool] | None:
    """HF key (without the `distilbert.` prefix) -> (Flax param path, transpose?) or None if not a param."""
    module, _, name = key.rpartition(".")
    flax_name = _PARAMS.get((_kind(module), name)) if module else None
    if flax_name is None:
        return None
    return tuple(module.split(".")) + (flax_name,), flax_name in _TRANSPOSED


def path_to_hf_key(path: tuple[str, ...]) -> str:
    """Flax param path -> HF key (the inverse of `hf_key_to_path`)."""
    return ".".join(path[:-1] + (_FLAX_TO_HF[path[-1]],))


def _is_base(model: nn.Module) -> bool:
    return isinstance(model, DistilBertModel)


def param_shapes(model: nn.Module) -> dict[tuple[str, ...], jax.ShapeDtypeStruct]:
    """Flat {path: ShapeDtypeStruct} of `model`'s params, from `jax.eval_shape(init)` (no compute)."""
    shape = (1, 2, 4) if isinstance(model, DistilBertForMultipleChoice) else (1, 4)
    ids = jnp.zeros(shape, jnp.int32)
    abstract = jax.eval_shape(model.init, jax.random.PRNGKey(0), ids, ids)
    return traverse_util.flatten_dict(abstract["params"])


def _encoder_key(key: str, prefixed: bool) -> str | None:
    """The encoder-relative key (`embeddings.…` / `transformer.…`), or None for a head key."""
    if prefixed:
        return key[len(PREFIX):] if key.startswith(PREFIX) else None
    return key if key.split(".", 1)[0] in ("embeddings", "transformer") else None


def hf_to_params(
    state: Mapping[str, np.ndarray],
    model: nn.Module,
    rng: jax.Array | int | None = 0,
    param_dtype=jnp.float32,
    ignore_mismatched_sizes: bool = False,
) -> tuple[dict, LoadReport]:
    """Convert a flat HF state dict into `{"params": tree}` for `model`.

    Works with or without the `distilbert.` prefix, with the tied `vocab_projector.weight` present or
    absent, and from a base checkpoint into a head model (head params freshly initialised from `rng`
    and listed in the report). Raises `WeightsError` listing every missing, unexpected or mis-shaped key;
    with `ignore_mismatched_sizes`, mis-shaped *head* params (e.g. another label count) are freshly
    initialised instead (noted in the report); encoder mismatches always raise.
    """
    expected = param_shapes(model)
    into_base = _is_base(model)
    encoder_root = () if into_base else ("distilbert",)
    report = LoadReport()
    keys = [k for k in state if not IGNORED_KEYS.match(k)]
    prefixed = any(k.startswith(PREFIX) for k in keys)  # decided from all keys, not the first

    params: dict[tuple[str, ...], jax.Array] = {}
    unexpected, misshaped, seen_wrong_shape = [], [], set()
    for key in keys:
        enc_key = _encoder_key(key, prefixed)
        if enc_key is None:  # a head key
            target = None if into_base or key == TIED_KEY else hf_key_to_path(key)
            if target is None or target[0] not in expected:
                if key != TIED_KEY or into_base:
                    report.unused.append(key)  # e.g. the MLM head's keys when loading into a classifier
                continue
        else:
            target = hf_key_to_path(enc_key)
            if target is not None:
                target = (encoder_root + target[0], target[1])
            if target is None or target[0] not in expected:
                unexpected.append(key)
                continue
        path, transpose = target
        array = np.asarray(state[key])
        transpose = transpose and array.ndim == 2
        got = array.shape[::-1] if transpose else array.shape
        want = tuple(expected[path].shape)
        if got != want:
            if ignore_mismatched_sizes and enc_key is None:
                report.notes.append(f"{key}: checkpoint {tuple(got)} vs model {want}, re-initialised")
                continue  # left missing: initialised below like any absent head param
            misshaped.append(f"{key}: checkpoint {tuple(got)} vs model {want}")
            seen_wrong_shape.add(path)
            continue
        _note_nonfinite(key, array, report)
        params[path] = to_device(array, param_dtype, transpose)  # one copy at most, adopted by jax on CPU
        del array

    word_path = encoder_root + ("embeddings", "word_embeddings", "embedding")
    if not into_base and TIED_KEY in state and word_path in params:
        tied = np.asarray(state[TIED_KEY], np.float32)
        if tied.shape != params[word_path].shape or not np.allclose(tied, np.asarray(params[word_path], np.float32)):
            report.notes.append(f"{TIED_KEY} differs from the word embeddings; the projector is tied to them")

    missing = [p for p in expected if p not in params and p not in seen_wrong_shape]
    fresh, really_missing = [], []
    for path in missing:
        rel = path[1:] if path[0] == "distilbert" else path
        if rel[:2] == ("embeddings", "position_embeddings") and model.config.sinusoidal_pos_embds:
            cfg = model.config
            params[path] = jnp.asarray(sinusoidal_table(cfg.max_position_embeddings, cfg.dim), param_dtype)
            report.notes.append("position_embeddings absent: filled with the sinusoidal table")
        elif path[0] != "distilbert" and not into_base:
            fresh.append(path)  # a head param: initialise it
        else:
            really_missing.append(path_to_hf_key(path))

    problems = []
    if really_missing:
        problems.append(f"missing keys ({len(really_missing)}): " + ", ".join(sorted(really_missing)))
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): " + ", ".join(sorted(unexpected)))
    if misshaped:
        head_only = all(not k.startswith(PREFIX) and _encoder_key(k.split(":")[0], prefixed) is None for k in misshaped)
        hint = " (head params only: ignore_mismatched_sizes=True re-initialises them)" if head_only else ""
        problems.append(f"mis-shaped keys ({len(misshaped)}){hint}: " + "; ".join(sorted(misshaped)))
    if problems:
        cfg = model.config
        raise WeightsError(
            f"checkpoint does not fit {type(model).__name__}(dim={cfg.dim}, n_layers={cfg.n_layers}, "
            f"hidden_dim={cfg.hidden_dim}, vocab_size={cfg.vocab_size}, num_labels={cfg.num_labels}) — "
            "does config.json match the weights?\n  " + "\n  ".join(problems)
        )

    if fresh:
        if rng is None:
            raise WeightsError("head params missing and no rng to initialise them: " + ", ".join(map(path_to_hf_key, fresh)))
        rng = jax.random.PRNGKey(rng) if isinstance(rng, int) else rng
        init = _fresh_params(model, rng)
        for path in fresh:
            params[path] = init[path].astype(param_dtype)
        report.initialized = sorted(path_to_hf_key(p) for p in fresh)
    return {"params": traverse_util.unflatten_dict(params)}, report


def _note_nonfinite(key: str, array: np.ndarray, report: LoadReport) -> None:
    """Record in the report (`nonfinite` and `notes`) a tensor holding NaN or Inf."""
    if array.dtype.kind in "biu":
        return
    array = array.astype(np.float32, copy=False)  # bf16 / fp16 too
    if np.isfinite(array).all():
        return
    n_nan, n_inf = int(np.isnan(array).sum()), int(np.isinf(array).sum())
    entry = f"{key} ({n_nan} NaN, {n_inf} Inf of {array.size})"
    report.nonfinite.append(entry)
    report.notes.append(f"non-finite values in {entry}")


def _fresh_params(model: nn.Module, rng: jax.Array) -> dict[tuple[str, ...], jax.Array]:
    from .heads import init_params

    return traverse_util.flatten_dict(init_params(model, rng)["params"])


def params_to_hf(variables: Mapping, model: nn.Module, tie_projector: bool = False) -> dict[str, np.ndarray]:
    """Flat HF state dict (float32 numpy, torch layout) from `{"params": tree}`; head models get the
    `distilbert.` prefix. The tied `vocab_projector.weight` is written only if `tie_projector`."""
    tree = variables["params"] if "params" in variables else variables
    flat = traverse_util.flatten_dict(dict(tree))
    expected = param_shapes(model)
    problems = [f"{'/'.join(p)}: missing" for p in expected if p not in flat]
    problems += [f"{'/'.join(p)}: not a param of {type(model).__name__}" for p in flat if p not in expected]
    problems += [
        f"{'/'.join(p)}: {tuple(np.shape(v))} vs model {tuple(expected[p].shape)}"
        for p, v in flat.items()
        if p in expected and tuple(np.shape(v)) != tuple(expected[p].shape)
    ]
    if problems:
        raise WeightsError("params do not fit the model:\n  " + "\n  ".join(problems))
    out: dict[str, np.ndarray] = {}
    for path, value in flat.items():
        array = np.asarray(jax.device_get(value), dtype=np.float32)
        if path[-1] in _TRANSPOSED:
            array = array.T
        key = path_to_hf_key(path)
        out[key] = np.ascontiguousarray(array)
    if tie_projector and not _is_base(model):
        out[TIED_KEY] = out[PREFIX + "embeddings.word_embeddings.weight"]
    return out
