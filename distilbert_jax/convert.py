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
import re
import shutil
import sys
import tempfile
from collections.abc import Mapping

from .atomicfile import TMP_MARK
from .clitools import run_cli
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
        raise ConvertError(f"{path}: cannot be loaded as a weights-only PyTorch checkpoint ({_load_error(path, e)})") from None
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise ConvertError(f"{path}: holds a {type(state).__name__}, not a state dict of tensors")
    bad = sorted(k for k, v in state.items() if not isinstance(v, torch.Tensor))
    if bad:
        raise ConvertError(f"{path}: entries that are not tensors: {bad[:10]}{' …' if len(bad) > 10 else ''}")
    # own, contiguous copies: safetensors refuses tensors that share memory (tied weights)
    return {k: v.detach().clone().contiguous() for k, v in state.items()}


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
_TENSOR_GLOBALS = ("torch.", "collections.OrderedDict", "_codecs.encode")  # what a plain state dict imports


def _load_error(path: str, e: Exception) -> str:
    """torch.load's failure said plainly: the refused global (e.g. `posix.system`) when the pickle imports
    something that is not a tensor, else the first line of torch's message, without its terminal escapes."""
    text = _ANSI.sub("", str(e))
    found = _GLOBAL.findall(text) or [g for g in _pickle_globals(path) if not g.startswith(_TENSOR_GLOBALS)]
    if found:
        return (f"it holds objects that are not tensors, refused: {', '.join(dict.fromkeys(found))} "
                "(only tensors and plain containers are read; nothing was unpickled)")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[0] if lines else ''}"


def _pickle_globals(path: str) -> list[str]:
    """`module.name` of every global the checkpoint's pickle imports, read with `pickletools` (nothing is
    executed); best effort: [] when the file cannot be read as a pickle."""
    import pickletools
    import zipfile

    found: list[str] = []
    try:
        if zipfile.is_zipfile(path):  # torch.save's format: the pickle is archive/data.pkl
            with zipfile.ZipFile(path) as z:
                data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
        else:
            with open(path, "rb") as f:
                data = f.read()
        strings: list[str] = []
        memo: dict[int, str] = {}
        n_memo = 0  # MEMOIZE numbers every memoized object, strings or not
        last: str | None = None  # the string the previous opcode pushed
        for op, arg, _ in pickletools.genops(data):
            pushed = None
            if op.name == "GLOBAL":
                found.append(arg.replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(".".join(strings[-2:]))
            elif isinstance(arg, str) and ("UNICODE" in op.name or op.name.endswith("STRING")):
                pushed = arg
            elif op.name == "MEMOIZE":
                if last is not None:
                    memo[n_memo] = last
                n_memo += 1
            elif op.name in ("PUT", "BINPUT", "LONG_BINPUT") and last is not None:
                memo[int(arg)] = last
            elif op.name in ("GET", "BINGET", "LONG_BINGET") and int(arg) in memo:
                pushed = memo[int(arg)]
            if pushed is not None:
                strings.append(pushed)
            last = pushed if pushed is not None else (last if op.name in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT") else None)
    except Exception:  # noqa: BLE001 (a damaged file: whatever was found before the damage)
        pass
    return found


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
    made_out = not os.path.isdir(out)
    os.makedirs(out, exist_ok=True)
    # every file is written into a temporary directory and moved into `out` only once all are written:
    # a failure (or a kill) part-way leaves no partial checkpoint behind to block the rerun
    tmp = tempfile.mkdtemp(dir=out, prefix=".convert" + TMP_MARK)
    try:
        rows = _convert_into(tmp, jobs, weight_map)
        for name in targets:
            os.replace(os.path.join(tmp, name), os.path.join(out, name))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if made_out and not os.listdir(out):
            os.rmdir(out)
    return rows


def _convert_into(out: str, jobs: list[tuple[str, str]], weight_map: dict | None) -> list[dict]:
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
    sys.exit(run_cli(main))
