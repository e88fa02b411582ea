"""sentence-transformers directories: `modules.json` naming a Transformer module (the HF model
directory), a Pooling module (`1_Pooling/config.json`) and optionally a Normalize module.

Both Pooling config formats are read: sentence-transformers ≥ 6 writes `"pooling_mode": "mean"` (or a
list, concatenated in that order); older versions write `pooling_mode_cls_token` / `…_max_tokens` /
`…_mean_tokens` / `…_mean_sqrt_len_tokens` booleans (concatenated in that order)."""

from __future__ import annotations

import dataclasses
import os

from .jsonfile import read_json_object

MODULES_NAME = "modules.json"
SENTENCE_POOLINGS = ("cls", "max", "mean", "mean_sqrt_len_tokens")
# the legacy boolean keys, in the order sentence-transformers concatenates their outputs
_LEGACY_MODES = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}


@dataclasses.dataclass(frozen=True)
class SentenceDir:
    """What a sentence-transformers directory asks for: where its transformer lives, the pooling
    modes (concatenated in order), whether embeddings are L2-normalised, and its max sequence length."""

    transformer_path: str
    pooling: tuple[str, ...]
    normalize: bool
    max_seq_length: int | None = None


def _module_kind(entry: dict) -> str:
    return str(entry.get("type", "")).rsplit(".", 1)[-1]


def _pooling_modes(config_path: str) -> tuple[str, ...]:
    cfg = read_json_object(config_path)
    mode = cfg.get("pooling_mode")
    if mode is None:
        modes = tuple(m for key, m in _LEGACY_MODES.items() if cfg.get(key)) or ("mean",)
    else:
        modes = (mode,) if isinstance(mode, str) else tuple(mode)
    unsupported = [m for m in modes if m not in SENTENCE_POOLINGS]
    if unsupported:
        raise ValueError(f"{config_path}: pooling {unsupported} is not supported; distilbert_jax pools with "
                         f"{SENTENCE_POOLINGS}")  # fmt: skip
    if cfg.get("include_prompt") is False:
        raise ValueError(f"{config_path}: include_prompt=false (prompt tokens left out of pooling) is not supported")
    return modes


def read_sentence_transformers(path: str | os.PathLike) -> SentenceDir | None:
    """The `SentenceDir` of a sentence-transformers directory, or None if `path` has no modules.json.
    Modules other than Transformer, Pooling and Normalize (e.g. Dense) are refused by name."""
    path = os.fspath(path)
    modules_path = os.path.join(path, MODULES_NAME)
    if not os.path.isfile(modules_path):
        return None
    import json

    try:
        with open(modules_path, encoding="utf-8") as f:
            modules = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{modules_path} is not valid JSON: {e}") from None
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise ValueError(f"{modules_path} must hold a list of module objects")
    transformer, pooling, normalize = None, None, False
    for entry in sorted(modules, key=lambda m: m.get("idx", 0)):
        kind, sub = _module_kind(entry), os.path.join(path, str(entry.get("path", "")))
        if kind == "Transformer" and transformer is None:
            transformer = sub
        elif kind == "Pooling" and pooling is None:
            pooling = _pooling_modes(os.path.join(sub, "config.json"))
        elif kind == "Normalize":
            normalize = True
        else:
            raise ValueError(f"{modules_path}: module {entry.get('type')!r} (path {entry.get('path')!r}) is not "
                             "supported; distilbert_jax runs Transformer → Pooling → optional Normalize")  # fmt: skip
    if transformer is None or pooling is None:
        raise ValueError(f"{modules_path} names no {'Transformer' if transformer is None else 'Pooling'} module")
    max_len = None
    st_config = os.path.join(transformer, "sentence_bert_config.json")
    if os.path.isfile(st_config):
        cfg = read_json_object(st_config)
        if cfg.get("do_lower_case"):
            raise ValueError(f"{st_config}: do_lower_case=true (lower-casing before the tokenizer) is not supported")
        max_len = cfg.get("max_seq_length")
    return SentenceDir(os.path.normpath(transformer), pooling, normalize,
                       int(max_len) if max_len else None)  # fmt: skip
