"""Checking JAX's persistent compilation cache before use. JAX writes an entry in place (not under a temporary
name) and never replaces an existing one, so an entry torn by a `kill -9` mid-write would fail to load — and be
recompiled — on every later run. `check_compile_cache` decompresses each entry it has not checked before (with
JAX's own decompressor: zlib / zstd carry checksums), removes a truncated or damaged one with a warning naming
it, so JAX compiles and writes it afresh, and records the entries it checked (name, size, mtime) in
`.checked.json`, so each is read once."""

from __future__ import annotations

import contextlib
import json
import os
import warnings

from distilbert_jax.atomicfile import write_json

CHECKED = ".checked.json"
SUFFIX = "-cache"  # JAX's entry files: <key>-cache (and <key>-atime beside them when eviction is on)


def check_compile_cache(directory: str) -> list[str]:
    """Remove the entries of `directory` that do not decompress (warning for each); returns their paths."""
    from jax._src.compilation_cache import decompress_executable  # the format JAX itself reads

    if not os.path.isdir(directory):
        return []
    record = os.path.join(directory, CHECKED)
    try:
        with open(record, encoding="utf-8") as f:
            checked = json.load(f)
        assert isinstance(checked, dict)
    except (OSError, ValueError, AssertionError):
        checked = {}
    removed, now = [], {}
    for name in sorted(os.listdir(directory)):
        if not name.endswith(SUFFIX):
            continue
        path = os.path.join(directory, name)
        try:
            st = os.stat(path)
            stamp = [st.st_size, st.st_mtime_ns]
            if checked.get(name) != stamp:
                with open(path, "rb") as f:
                    if len(decompress_executable(f.read())) < 8:  # 8 bytes of compile time, then the executable
                        raise ValueError("no executable in it")
        except FileNotFoundError:
            continue
        except Exception as e:  # noqa: BLE001 (zlib.error, ZstdError, ValueError: any undecodable entry)
            warnings.warn(f"XLA compilation cache entry {path} is truncated or damaged ({type(e).__name__}: {e}); "
                          "removed, it will be compiled again", stacklevel=2)  # fmt: skip
            for p in (path, path[: -len(SUFFIX)] + "-atime"):
                with contextlib.suppress(OSError):
                    os.remove(p)
            removed.append(path)
            continue
        now[name] = stamp
    if now != checked:
        with contextlib.suppress(OSError):
            write_json(record, now)
    return removed
