"""Load and save Hugging Face DistilBERT / BERT / RoBERTa-family / ELECTRA directories: config.json +
model.safetensors (single file or sharded with model.safetensors.index.json) + tokenizer files;
sentence-transformers directories (modules.json) load their transformer with the directory's pooling and
normalization. A Hub model id (`org/name`) is found in the local Hugging Face cache (see `hub`)."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from safetensors.numpy import save_file

from .config import DistilBertConfig
from .heads import ALL_HEADS, FAMILY_HEADS, HEADS, architecture_of, build_model, head_of_architecture
from .hub import resolve_model_path
from .safetensors_file import SafetensorsError, SafetensorsFile
from .sentence import read_sentence_transformers
from .tokenizer import Tokenizer
from .weights import LoadReport, WeightsError, hf_to_params, params_to_hf

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"


def _open_safetensors(path: str) -> SafetensorsFile:
    try:
        return SafetensorsFile(path)
    except (SafetensorsError, OSError) as e:
        raise WeightsError(f"{path} is not a readable safetensors file (truncated or another format?): {e}") from None


def _is_plain_file_name(name: object) -> bool:
    """Whether a shard name from an index is a file name inside the directory (no path parts)."""
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and "/" not in name
        and "\\" not in name
        and os.path.basename(name) == name
        and not os.path.isabs(name)
        and not os.path.splitdrive(name)[0]
    )


def _weight_map(path: str) -> dict[str, str]:
    """{HF key: safetensors file} for a directory (single file or sharded index) or one file."""
    if os.path.isfile(path):
        with _open_safetensors(path) as f:
            return dict.fromkeys(f.keys(), path)
    index, single = os.path.join(path, INDEX_NAME), os.path.join(path, WEIGHTS_NAME)
    if os.path.isfile(index):
        try:
            with open(index, encoding="utf-8") as f:
                weight_map: dict[str, str] = json.load(f)["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise WeightsError(f"{index} is not a valid safetensors index (needs 'weight_map'): {e}") from None
        outside = sorted({str(f) for f in weight_map.values() if not _is_plain_file_name(f)})
        if outside:
            raise WeightsError(
                f"{index} names shard files outside the checkpoint directory {path}: {outside}; only plain "
                "file names inside it are accepted"
            )
        missing = sorted({f for f in weight_map.values() if not os.path.isfile(os.path.join(path, f))})
        if missing:
            raise WeightsError(f"{index} names shard files that do not exist: {missing}")
        return {key: os.path.join(path, file) for key, file in weight_map.items()}
    if os.path.isfile(single):
        return _weight_map(single)
    others = sorted(f for f in os.listdir(path) if f.endswith((".bin", ".h5", ".msgpack", ".pt"))) if os.path.isdir(path) else []
    hint = ""
    if any(f.endswith(".bin") for f in others):
        hint = f" (found {others}: convert them with `python -m distilbert_jax.convert {path}`)"
    elif others:
        hint = f" (found {others}: convert them to safetensors)"
    raise FileNotFoundError(f"no {WEIGHTS_NAME} or {INDEX_NAME} in {path}{hint}")


class LazyState(Mapping[str, np.ndarray]):
    """A read-only {HF key: numpy array} view of a checkpoint that reads each tensor when asked for it,
    so converting never holds the whole checkpoint in host memory next to the params. Each shard is
    opened once. Use as a context manager (closes the files)."""

    def __init__(self, path: str | os.PathLike):
        self._files = _weight_map(os.fspath(path))
        self._handles: dict[str, Any] = {}

    def __getitem__(self, key: str) -> np.ndarray:
        file = self._files[key]
        if file not in self._handles:
            self._handles[file] = _open_safetensors(file).__enter__()
        try:
            return self._handles[file].get_tensor(key)
        except (SafetensorsError, OSError) as e:
            raise WeightsError(f"{file}: cannot read tensor {key!r} (truncated file?): {e}") from None

    def __iter__(self):
        return iter(self._files)

    def __len__(self) -> int:
        return len(self._files)

    def close(self) -> None:
        for handle in self._handles.values():
            handle.__exit__(None, None, None)
        self._handles.clear()

    def __enter__(self) -> "LazyState":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Flat {HF key: numpy array} from a directory (single-file or sharded) or one `.safetensors` file."""
    with LazyState(path) as state:
        return {key: state[key] for key in state}


def _head_from_config(path: str) -> str:
    with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
        archs = json.load(f).get("architectures") or []
    heads = [h for h in map(head_of_architecture, archs) if h]
    return heads[0] if heads else "base"


def from_pretrained(
    path: str | os.PathLike,
    head: str | None = None,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    dtype: Any = jnp.float32,
    param_dtype: Any = jnp.float32,
    rng: int = 0,
    num_labels: int | None = None,
    ignore_mismatched_sizes: bool = False,
    return_report: bool = False,
) -> tuple[nn.Module, dict] | tuple[nn.Module, dict, LoadReport]:
    """Load an HF DistilBERT, BERT, RoBERTa / XLM-RoBERTa / CamemBERT or ELECTRA directory (or a
    sentence-transformers directory on one) as `(model, {"params": tree})`.

    `path` is a directory or a Hub model id ("distilbert-base-uncased", "org/name") found in the local
    Hugging Face cache (`cache_dir`, else HF_HUB_CACHE / HF_HOME; `revision`: a branch, tag or commit,
    default "main"), offline.
    head: "base", "masked_lm", "sequence_classification", "token_classification",
    "question_answering", "multiple_choice", ELECTRA's "discriminator", or None to take it from
    config.json's `architectures`.
    A base checkpoint loads into a head model with the head freshly initialised (a warning names the
    keys). `dtype` is the compute dtype; `param_dtype` the dtype params are cast to.
    `ignore_mismatched_sizes` re-initialises head params whose shape differs (e.g. a classifier trained
    with another number of labels) instead of raising.

    A sentence-transformers directory (`modules.json`) loads its transformer with `config.pooling` /
    `config.normalize_embeddings` set from its Pooling / Normalize modules, which `embed` applies.
    A bare BERT checkpoint without pooler weights gives a model without the pooler (`pooler_output` None)."""
    path = resolve_model_path(path, revision, cache_dir)
    if head is not None and head not in ALL_HEADS:
        raise ValueError(f"unknown head {head!r}; expected one of {sorted(ALL_HEADS)}")
    sentence = read_sentence_transformers(path)
    if sentence is not None:
        path = sentence.transformer_path
    config = DistilBertConfig.from_json_file(path)
    if num_labels is not None:
        config = config.replace(num_labels=num_labels)
    if sentence is not None:
        config = config.replace(pooling=sentence.pooling, normalize_embeddings=sentence.normalize)
    head = head or _head_from_config(path)
    try:
        with LazyState(path) as state:
            has_pooler = any(".pooler." in f".{key}" for key in state)
            model = build_model(config, head, dtype, add_pooling_layer=has_pooler)
            variables, report = hf_to_params(state, model, rng=rng, param_dtype=param_dtype,
                                             ignore_mismatched_sizes=ignore_mismatched_sizes)  # fmt: skip
    except WeightsError as e:
        raise WeightsError(f"{path}: {e}") from None
    for note in report.warnings():
        warnings.warn(f"{path}: {note}", stacklevel=2)
    if report.initialized:
        warnings.warn(
            f"{path}: {len(report.initialized)} {head} head params were not in the checkpoint (or had another "
            f"shape, with ignore_mismatched_sizes) and are freshly initialised: {', '.join(report.initialized)}",
            stacklevel=2,
        )
    return (model, variables, report) if return_report else (model, variables)


def _shards(state: dict[str, np.ndarray], max_bytes: int) -> list[dict[str, np.ndarray]]:
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for key, array in state.items():
        if shards[-1] and size + array.nbytes > max_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = array
        size += array.nbytes
    return shards


def save_pretrained(
    path: str | os.PathLike,
    model: nn.Module,
    variables: dict,
    tokenizer: Tokenizer | None = None,
    *,
    max_shard_size: int | None = None,
    for_transformers: bool | None = None,
) -> None:
    """Write an HF directory that `transformers`' `AutoModelFor….from_pretrained` loads with the same
    outputs: config.json, model.safetensors (or shards of at most `max_shard_size` bytes + index), and
    the tokenizer files when a tokenizer is given.

    A model whose attention width `qkv_dim` differs from `dim` (a NAS sub-network) is written in the
    same layout with `qkv_dim` in config.json: `from_pretrained` reloads it exactly, `transformers`
    cannot. `for_transformers=True` refuses such a model with a ValueError saying why; None (default)
    writes either kind."""
    if for_transformers:
        model.config.check_transformers_compatible()
    path = os.fspath(path)
    os.makedirs(path, exist_ok=True)
    classes = {name: entry[0] for name, entry in (HEADS | FAMILY_HEADS).items()}
    head = next(name for name, cls in classes.items() if type(model) is cls)
    state = params_to_hf(variables, model)
    model.config.to_json_file(os.path.join(path, "config.json"), architectures=[architecture_of(head, model.config)])
    metadata = {"format": "pt"}
    for stale in (WEIGHTS_NAME, INDEX_NAME):
        if os.path.exists(os.path.join(path, stale)):
            os.remove(os.path.join(path, stale))
    if max_shard_size is None or sum(a.nbytes for a in state.values()) <= max_shard_size:
        save_file(state, os.path.join(path, WEIGHTS_NAME), metadata=metadata)
    else:
        shards = _shards(state, max_shard_size)
        weight_map = {}
        for i, shard in enumerate(shards, 1):
            name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, os.path.join(path, name), metadata=metadata)
            weight_map.update(dict.fromkeys(shard, name))
        index = {"metadata": {"total_size": sum(a.nbytes for a in state.values())}, "weight_map": weight_map}
        with open(os.path.join(path, INDEX_NAME), "w", encoding="utf-8") as f:
            json.dump(index, f, indent=2)
    if tokenizer is not None:
        # a WordPiece tokenizer is written as the model family's (BertTokenizer, ElectraTokenizer, …); a BPE /
        # Unigram one keeps its own class (e.g. XLMRobertaTokenizer under a multilingual BERT model)
        own = tokenizer.tokenizer_class if not tokenizer.is_word_piece else model.config.class_prefix + "Tokenizer"
        tokenizer.save_pretrained(path, tokenizer_class=own)
