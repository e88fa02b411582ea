"""The on-disk measurement cache's entries: written atomically with a SHA-256 of their content (two processes
sharing one cache never leave a torn file, a `kill -9` mid-write leaves none), and checked on every read — a
truncated, damaged or pre-checksum entry is reported, removed and re-measured, never trusted."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable

from distilbert_jax.atomicfile import CorruptFileError, read_checked_json, write_checked_json

log = logging.getLogger("rl.mlir")


def read_entry(path: str, fields: Iterable[str], statuses: Iterable[str]) -> dict | None:
    """The entry at `path` (a dict with exactly `fields`, its "status" one of `statuses`); None when there is
    none or it cannot be trusted (then it is removed, so the fresh measurement replaces it)."""
    try:
        data = read_checked_json(path)
        if not isinstance(data, dict) or set(data) != set(fields) or data.get("status") not in set(statuses):
            raise CorruptFileError(f"{path} does not hold a measurement (fields {sorted(data) if isinstance(data, dict) else data!r})")
    except FileNotFoundError:
        return None
    except (CorruptFileError, OSError) as e:
        log.warning("measurement cache: %s; measuring again", e)
        with contextlib.suppress(OSError):
            os.remove(path)
        return None
    return data


def write_entry(path: str, data: dict) -> None:
    """Write `data` to `path` atomically, with its checksum."""
    write_checked_json(path, data)
