"""Convert PyTorch `.bin` checkpoints to safetensors, so `from_pretrained` can load them.

    python -m distilbert_jax.convert DIR [--out OUT_DIR] [--overwrite]

`DIR/pytorch_model.bin` becomes `model.safetensors`; a sharded checkpoint
(`pytorch_model.bin.index.json` + `pytorch_model-0000i-of-0000n.bin`) becomes
`model-0000i-of-0000n.safetensors` + `model.safetensors.index.json`. Tensors are read with
`torch.load(weights_only=True)`, which refuses to unpickle anything but tensors and plain containers,
so a malicious pickle cannot run code. Needs torch (the `parity` extra); nothing else is changed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping

from .tables import format_table

BIN_NAME = "pytorch_model.bin"
BIN_INDEX_NAME = "pytorch_model.bin.index.json"
SAFE_NAME = "model.safetensors"
SAFE_INDEX_NAME = "model.safetensors.index.json"


class ConvertError(ValueError):
    """A `.bin` checkpoint that cannot be converted; the message names the file and the problem."""


def _torch():
    try:
        import torch
    except ImportError:
        raise ConvertError("converting .bin checkpoints needs PyTorch, which is not installed: "
                           "pip install torch (CPU build: -c constraints.txt), or the `parity` extra") from None  # fmt: skip
    return torch


def _load_bin(path: str) -> dict:
    """{key: tensor} of one `.bin` file, loaded with weights_only=True (no arbitrary unpickling)."""
    torch = _torch()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError… for bad files
        raise ConvertError(f"{path}: cannot be loaded as a weights-only PyTorch checkpoint ({type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''})") from None  # fmt: skip
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise ConvertError(f"{path}: holds a {type(state).__name__}, not a state dict of tensors")
    bad = sorted(k for k, v in state.items() if not isinstance(v, torch.Tensor))
    if bad:
        raise ConvertError(f"{path}: entries that are not tensors: {bad[:10]}{' …' if len(bad) > 10 else ''}")
    # own, contiguous copies: safetensors refuses tensors that share memory (tied weights)
    return {k: v.detach().clone().contiguous() for k, v in state.items()}


def _save(state: dict, path: str) -> int:
    from safetensors.torch import save_file

    save_file(state, path, metadata={"format": "pt"})
    return sum(t.numel() * t.element_size() for t in state.values())


def convert(src: str | os.PathLike, out: str | os.PathLike | None = None, overwrite: bool = False) -> list[dict]:
    """Write safetensors next to (or into `out`) the `.bin` checkpoint of directory `src`.
    Returns one row per written file: {"file", "tensors", "bytes"}."""
    src = os.fspath(src)
    out = os.fspath(out) if out is not None else src
    if not os.path.isdir(src):
        raise ConvertError(f"{src} is not a directory")
    index_path, single_path = os.path.join(src, BIN_INDEX_NAME), os.path.join(src, BIN_NAME)
    if os.path.isfile(index_path):
        try:
            with open(index_path, encoding="utf-8") as f:
                weight_map = json.load(f)["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ConvertError(f"{index_path} is not a valid index (needs 'weight_map'): {e}") from None
        shards = sorted(set(weight_map.values()))
        unsafe = [s for s in shards if os.path.basename(s) != s or not s.endswith(".bin")]
        if unsafe:
            raise ConvertError(f"{index_path} names shards outside the directory or not .bin: {unsafe}")
        missing = [s for s in shards if not os.path.isfile(os.path.join(src, s))]
        if missing:
            raise ConvertError(f"{index_path} names shard files that do not exist: {missing}")
        jobs = [(os.path.join(src, s), s[: -len(".bin")].replace("pytorch_model", "model") + ".safetensors")
                for s in shards]  # fmt: skip
        targets = [t for _, t in jobs] + [SAFE_INDEX_NAME]
    elif os.path.isfile(single_path):
        jobs, targets, weight_map = [(single_path, SAFE_NAME)], [SAFE_NAME], None
    else:
        raise ConvertError(f"no {BIN_NAME} or {BIN_INDEX_NAME} in {src}")
    existing = [t for t in targets if os.path.exists(os.path.join(out, t))]
    if existing and not overwrite:
        raise ConvertError(f"{out} already has {existing}; pass --overwrite to replace them")
    os.makedirs(out, exist_ok=True)

    rows, new_map, total = [], {}, 0
    for source, target in jobs:
        state = _load_bin(source)
        if weight_map is not None:
            listed = {k for k, v in weight_map.items() if v == os.path.basename(source)}
            if listed != set(state):
                raise ConvertError(f"{source}: holds {len(state)} tensors but the index lists {len(listed)} for it")
        size = _save(state, os.path.join(out, target))
        total += size
        new_map.update(dict.fromkeys(state, target))
        rows.append(dict(file=target, tensors=len(state), bytes=size))
    if weight_map is not None:
        with open(os.path.join(out, SAFE_INDEX_NAME), "w", encoding="utf-8") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": new_map}, f, indent=2)
        rows.append(dict(file=SAFE_INDEX_NAME, tensors=len(new_map), bytes=total))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m distilbert_jax.convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("dir", help="HF directory holding pytorch_model.bin (or its sharded index)")
    parser.add_argument("--out", help="write the safetensors files here (default: into DIR)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing safetensors files")
    args = parser.parse_args(argv)
    try:
        rows = convert(args.dir, args.out, args.overwrite)
    except ConvertError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(rows, ["file", "tensors", "bytes"]))
    print(f"\nwrote {len(rows)} file(s) to {args.out or args.dir}; load with distilbert_jax.from_pretrained")
    return 0


if __name__ == "__main__":
    sys.exit(main())
