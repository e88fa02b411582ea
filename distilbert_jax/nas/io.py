"""SuperNet directories: the largest arch's Hugging Face masked-LM directory (config.json +
model.safetensors + tokenizer) plus `search_space.json` (the space and the bucket count)."""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp

import distilbert_jax as dj
from distilbert_jax.jsonfile import read_json_object

from .space import Arch, SearchSpace
from .supernet import SuperNet

SPACE_FILE = "search_space.json"


class SuperNetDirError(ValueError):
    """A SuperNet directory whose files do not fit together; the message names the file and fields."""


def save_supernet(path: str | os.PathLike, supernet: SuperNet, params: dict, tokenizer: dj.Tokenizer | None = None) -> None:
    """Write the SuperNet (params without {"params": …}) and its search space to `path`."""
    path = os.fspath(path)
    dj.save_pretrained(path, supernet.model(), {"params": jax.device_get(params)}, tokenizer)
    with open(os.path.join(path, SPACE_FILE), "w", encoding="utf-8") as f:
        json.dump({"space": supernet.space.to_dict(), "buckets": supernet.buckets}, f, indent=2)
        f.write("\n")


def find_supernet_dir(path: str | os.PathLike) -> str | None:
    """The SuperNet directory at `path` itself or at `path/supernet` (a training run's), else None."""
    path = os.fspath(path)
    for candidate in (path, os.path.join(path, "supernet")):
        if os.path.isfile(os.path.join(candidate, SPACE_FILE)):
            return candidate
    return None


def load_supernet(path: str | os.PathLike, dtype: Any = jnp.float32) -> tuple[SuperNet, dict]:
    """`(supernet, params)` from a directory written by `save_supernet`; `SuperNetDirError` when
    config.json is not the largest arch of `search_space.json` (or the weights do not fit it)."""
    path = os.fspath(path)
    space_file = os.path.join(path, SPACE_FILE)
    if not os.path.isfile(space_file):
        raise FileNotFoundError(f"{path} is not a SuperNet directory: no {SPACE_FILE} (train one with "
                                "`python -m distilbert_jax.nas train`)")  # fmt: skip
    data = read_json_object(space_file, SuperNetDirError)
    try:
        space = SearchSpace.from_dict(data.get("space", {}))
        buckets = int(data.get("buckets", 3))
    except (ValueError, TypeError) as e:
        raise SuperNetDirError(f"{space_file}: {e}") from None
    config = dj.DistilBertConfig.from_json_file(path)
    supernet = SuperNet(space, config, buckets, dtype)
    want = supernet.config()
    fields = ("n_layers", "dim", "n_heads", "attention_dim", "hidden_dim")
    wrong = [f"{f}: config.json {getattr(config, f)} vs search space {getattr(want, f)}"
             for f in fields if getattr(config, f) != getattr(want, f)]  # fmt: skip
    if wrong:
        raise SuperNetDirError(f"{path}: config.json is not the largest arch {space.largest()} of {SPACE_FILE}: "
                               + "; ".join(wrong))  # fmt: skip
    try:
        _, variables = dj.from_pretrained(path, "masked_lm", dtype=dtype)
    except dj.WeightsError as e:
        raise SuperNetDirError(f"SuperNet weights do not fit its config: {e}") from None
    return supernet, variables["params"]


def extract_to_dir(supernet_dir: str | os.PathLike, arch: Arch | str | dict, out: str | os.PathLike) -> tuple[Arch, dj.DistilBertConfig]:
    """Extract `arch` from the SuperNet in `supernet_dir` and write it (with the SuperNet's tokenizer,
    if any) as a masked-LM directory at `out`; returns the checked arch and its config."""
    supernet, params = load_supernet(supernet_dir)
    arch = supernet.space.check(arch)
    model, variables = supernet.extract(params, arch)
    has_tokenizer = any(os.path.isfile(os.path.join(os.fspath(supernet_dir), f)) for f in ("tokenizer.json", "vocab.txt"))
    tokenizer = dj.Tokenizer.from_pretrained(supernet_dir) if has_tokenizer else None
    dj.save_pretrained(out, model, variables, tokenizer)
    with open(os.path.join(os.fspath(out), "arch.json"), "w", encoding="utf-8") as f:
        json.dump({"arch": arch.to_json(), "autotinybert": arch.to_autotinybert()}, f, indent=2)
        f.write("\n")
    return arch, model.config
