"""Hugging Face safetensors keys <-> nested Flax params, driven by one key table and checked against
`jax.eval_shape(init)`. Every missing / unexpected / mis-shaped key is collected and reported at once.

    distilbert.transformer.layer.0.attention.q_lin.weight [out, in]
        <-> distilbert/transformer/layer/0/attention/q_lin/kernel [in, out]

BERT, RoBERTa-family and ELECTRA checkpoints load into the same module tree: `BERT_LAYER_KEYS` and the
family's `FAMILY_KEYS` rename their keys to DistilBERT's first (`bert.encoder.layer.0.attention.self.query`
-> `distilbert.transformer.layer.0.attention.q_lin`, `cls.predictions.transform.dense` / `lm_head.dense` /
`generator_predictions.dense` -> `vocab_transform`, old-style `LayerNorm.gamma/beta` -> weight/bias),
and back when saving; error messages name the checkpoint's own keys.
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
IGNORED_KEYS = re.compile(r"^(distilbert\.)?embeddings\.(position_ids|token_type_ids)$")
ENCODER_MODULES = ("embeddings", "embeddings_project", "transformer", "pooler")

# BERT key fragment <-> ours: per encoder layer (after `encoder.layer.N.` / `transformer.layer.N.`) ...
BERT_LAYER_KEYS = (
    ("attention.self.query", "attention.q_lin"),
    ("attention.self.key", "attention.k_lin"),
    ("attention.self.value", "attention.v_lin"),
    ("attention.output.dense", "attention.out_lin"),
    ("attention.output.LayerNorm", "sa_layer_norm"),
    ("intermediate.dense", "ffn.lin1"),
    ("output.dense", "ffn.lin2"),
    ("output.LayerNorm", "output_layer_norm"),
)


def _mlm_keys(transform: str, layer_norm: str, bias: str, decoder: str) -> tuple[tuple[str, str], ...]:
    """A family's masked-LM head keys -> ours (the decoder weight is tied to the word embeddings)."""
    return ((f"{transform}.weight", "vocab_transform.weight"), (f"{transform}.bias", "vocab_transform.bias"),
            (f"{layer_norm}.weight", "vocab_layer_norm.weight"), (f"{layer_norm}.bias", "vocab_layer_norm.bias"),
            (bias, "vocab_projector.bias"), (decoder, TIED_KEY))  # fmt: skip


@dataclasses.dataclass(frozen=True)
class FamilyKeys:
    """How a BERT-style family's checkpoint keys differ from ours: the encoder prefix (for `distilbert.`),
    whole head keys renamed (theirs, ours), and tied copies in older checkpoints (copy -> the key it copies).
    Encoder layers everywhere use `BERT_LAYER_KEYS`; other head keys (classifiers) keep their names."""

    prefix: str
    head_keys: tuple[tuple[str, str], ...]
    aliases: dict[str, str]


FAMILY_KEYS = {
    "bert": FamilyKeys("bert.", _mlm_keys("cls.predictions.transform.dense", "cls.predictions.transform.LayerNorm",
                                          "cls.predictions.bias", "cls.predictions.decoder.weight"),
                       {"cls.predictions.decoder.bias": "cls.predictions.bias"}),
    "roberta": FamilyKeys("roberta.", _mlm_keys("lm_head.dense", "lm_head.layer_norm", "lm_head.bias",
                                                "lm_head.decoder.weight"), {"lm_head.decoder.bias": "lm_head.bias"}),
    "electra": FamilyKeys("electra.", _mlm_keys("generator_predictions.dense", "generator_predictions.LayerNorm",
                                                "generator_lm_head.bias", "generator_lm_head.weight"), {}),
}  # fmt: skip
_OLD_LAYER_NORM = re.compile(r"(LayerNorm|layer_norm)\.(gamma|beta)$")
_LAYER_KEY = re.compile(r"^(encoder|transformer)\.layer\.(\d+)\.(.+)\.(weight|bias)$")

# The key table: (module-name pattern, HF param name) -> (Flax param name, HF->Flax transform).
# Modules not matched by an earlier row are Linear layers.
_MODULE_KINDS = (
    (re.compile(r"(^|\.)(word_embeddings|position_embeddings|token_type_embeddings)$"), "embedding"),
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


def modern_layer_norm_key(key: str) -> str:
    """Old-style (TF-era) `….LayerNorm.gamma` / `beta` -> `….LayerNorm.weight` / `bias`."""
    return _OLD_LAYER_NORM.sub(lambda m: f"{m[1]}.{'weight' if m[2] == 'gamma' else 'bias'}", key)


def family_to_key(key: str, family: str) -> str:
    """A BERT / RoBERTa / ELECTRA checkpoint key -> ours (`bert.` -> `distilbert.`, BERT module names ->
    DistilBERT's, the family's masked-LM keys -> `vocab_*`, `LayerNorm.gamma/beta` -> `LayerNorm.weight/bias`);
    keys it does not know come back unchanged. A DistilBERT key only gets the LayerNorm renaming."""
    key = modern_layer_norm_key(key)
    if family not in FAMILY_KEYS:
        return key
    table = FAMILY_KEYS[family]
    key = table.aliases.get(key, key)
    prefix = ""
    if key.startswith(table.prefix):
        prefix, key = PREFIX, key[len(table.prefix):]
    m = _LAYER_KEY.match(key)
    if m and m[1] == "encoder":
        ours = dict(BERT_LAYER_KEYS).get(m[3])
        return f"{prefix}transformer.layer.{m[2]}.{ours}.{m[4]}" if ours else prefix + key
    return prefix + dict(table.head_keys).get(key, key)


def key_to_family(key: str, family: str) -> str:
    """Ours -> the family's checkpoint key (the inverse of `family_to_key`)."""
    if family not in FAMILY_KEYS:
        return key
    table = FAMILY_KEYS[family]
    prefix = ""
    if key.startswith(PREFIX):
        prefix, key = table.prefix, key[len(PREFIX):]
    m = _LAYER_KEY.match(key)
    if m and m[1] == "transformer":
        theirs = {ours: b for b, ours in BERT_LAYER_KEYS}.get(m[3])
        return f"{prefix}encoder.layer.{m[2]}.{theirs}.{m[4]}" if theirs else prefix + key
    return prefix + {ours: theirs for theirs, ours in table.head_keys}.get(key, key)


def _source_keys(state: Mapping[str, np.ndarray], family: str) -> tuple[dict[str, str], list[str]]:
    """{our key: the checkpoint's key} for every key but ignored buffers, and the checkpoint keys
    dropped as tied duplicates. BERT-style keys are renamed (see `family_to_key`)."""
    names: dict[str, str] = {}
    duplicates = []
    aliases = FAMILY_KEYS[family].aliases if family in FAMILY_KEYS else {}
    for key in state:
        ours = family_to_key(key, family)
        if IGNORED_KEYS.match(ours):
            continue
        if ours in names:  # e.g. cls.predictions.bias and its tied copy cls.predictions.decoder.bias
            if key in aliases:
                duplicates.append(key)
                continue
            duplicates.append(names[ours])
        names[ours] = key
    return names, duplicates


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
    return key if key.split(".", 1)[0] in ENCODER_MODULES else None


def hf_to_params(
    state: Mapping[str, np.ndarray],
    model: nn.Module,
    rng: jax.Array | int | None = 0,
    param_dtype=jnp.float32,
    ignore_mismatched_sizes: bool = False,
) -> tuple[dict, LoadReport]:
    """Convert a flat HF state dict into `{"params": tree}` for `model`.

    Works with or without the `distilbert.` (BERT: `bert.`) prefix, with the tied `vocab_projector.weight`
    (BERT: `cls.predictions.decoder.weight`) present or absent, and from a base checkpoint into a head
    model (head params freshly initialised from `rng` and listed in the report). A BERT model
    (`config.model_type == "bert"`) reads BERT's keys, old-style `LayerNorm.gamma/beta` included; a BERT
    pooler absent from the checkpoint is freshly initialised like a head param. Raises `WeightsError` listing every missing, unexpected or mis-shaped key;
    with `ignore_mismatched_sizes`, mis-shaped *head* params (e.g. another label count) are freshly
    initialised instead (noted in the report); encoder mismatches always raise.
    """
    expected = param_shapes(model)
    into_base = _is_base(model)
    bert, family = model.config.is_bert, model.config.family
    display = lambda k: key_to_family(k, family)  # noqa: E731
    encoder_root = () if into_base else ("distilbert",)
    report = LoadReport()
    names, duplicates = _source_keys(state, family)
    report.unused += duplicates
    keys = list(names)
    prefixed = any(k.startswith(PREFIX) for k in keys)  # decided from all keys, not the first

    params: dict[tuple[str, ...], jax.Array] = {}
    unexpected, misshaped, seen_wrong_shape = [], [], set()
    for key in keys:
        source = names[key]
        enc_key = _encoder_key(key, prefixed)
        if enc_key is None:  # a head key
            target = None if into_base or key == TIED_KEY else hf_key_to_path(key)
            if target is None or target[0] not in expected:
                if key != TIED_KEY or into_base:
                    report.unused.append(source)  # e.g. the MLM head's keys when loading into a classifier
                continue
        else:
            target = hf_key_to_path(enc_key)
            if target is not None:
                target = (encoder_root + target[0], target[1])
            if target is None or target[0] not in expected:
                if bert and enc_key.startswith("pooler."):
                    report.unused.append(source)  # a pooler the model does not use (e.g. a masked-LM head)
                    continue
                unexpected.append(source)
                continue
        path, transpose = target
        array = np.asarray(state[source])
        transpose = transpose and array.ndim == 2
        got = array.shape[::-1] if transpose else array.shape
        want = tuple(expected[path].shape)
        if got != want:
            if ignore_mismatched_sizes and enc_key is None:
                report.notes.append(f"{source}: checkpoint {tuple(got)} vs model {want}, re-initialised")
                continue  # left missing: initialised below like any absent head param
            misshaped.append(f"{source}: checkpoint {tuple(got)} vs model {want}")
            seen_wrong_shape.add(path)
            continue
        _note_nonfinite(key, array, report)
        params[path] = to_device(array, param_dtype, transpose)  # one copy at most, adopted by jax on CPU
        del array

    word_path = encoder_root + ("embeddings", "word_embeddings", "embedding")
    if not into_base and TIED_KEY in names and word_path in params:
        tied = np.asarray(state[names[TIED_KEY]], np.float32)
        if tied.shape != params[word_path].shape or not np.allclose(tied, np.asarray(params[word_path], np.float32)):
            report.notes.append(f"{names[TIED_KEY]} differs from the word embeddings; the projector is tied to them")

    missing = [p for p in expected if p not in params and p not in seen_wrong_shape]
    fresh, really_missing = [], []
    for path in missing:
        rel = path[1:] if path[0] == "distilbert" else path
        if rel[:2] == ("embeddings", "position_embeddings") and model.config.sinusoidal_pos_embds:
            cfg = model.config
            params[path] = jnp.asarray(sinusoidal_table(cfg.max_position_embeddings, cfg.dim), param_dtype)
            report.notes.append("position_embeddings absent: filled with the sinusoidal table")
        elif (path[0] != "distilbert" and not into_base) or (bert and rel[0] == "pooler"):
            fresh.append(path)  # a head param (or BERT's pooler): initialise it
        else:
            really_missing.append(display(path_to_hf_key(path)))

    problems = []
    if really_missing:
        problems.append(f"missing keys ({len(really_missing)}): " + ", ".join(sorted(really_missing)))
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): " + ", ".join(sorted(unexpected)))
    if misshaped:
        head_only = all(_encoder_key(family_to_key(k.split(":")[0], family), prefixed) is None for k in misshaped)
        hint = " (head params only: ignore_mismatched_sizes=True re-initialises them)" if head_only else ""
        problems.append(f"mis-shaped keys ({len(misshaped)}){hint}: " + "; ".join(sorted(misshaped)))
    if problems:
        cfg = model.config
        raise WeightsError(
            f"checkpoint does not fit {type(model).__name__}({cfg.model_type}, dim={cfg.dim}, n_layers={cfg.n_layers}, "
            f"hidden_dim={cfg.hidden_dim}, vocab_size={cfg.vocab_size}, num_labels={cfg.num_labels}) — "
            "does config.json match the weights?\n  " + "\n  ".join(problems)
        )

    if fresh:
        if rng is None:
            raise WeightsError("head params missing and no rng to initialise them: "
                               + ", ".join(display(path_to_hf_key(p)) for p in fresh))  # fmt: skip
        rng = jax.random.PRNGKey(rng) if isinstance(rng, int) else rng
        init = _fresh_params(model, rng)
        for path in fresh:
            params[path] = init[path].astype(param_dtype)
        report.initialized = sorted(display(path_to_hf_key(p)) for p in fresh)
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
    `distilbert.` prefix. The tied `vocab_projector.weight` is written only if `tie_projector`.
    A BERT model gets BERT's keys (`bert.encoder.layer.0.attention.self.query.weight`, …)."""
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
    if model.config.is_bert:
        out = {key_to_family(key, model.config.family): value for key, value in out.items()}
    return out
