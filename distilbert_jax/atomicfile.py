"""Files that are either whole or absent: written under a temporary name beside the target and renamed
onto it (`os.replace`, atomic on POSIX) only once complete, so a crash, a `kill -9` or a concurrent writer
never leaves a truncated file under the real name. `write_checked_json` / `read_checked_json` add a
SHA-256 of the content, so an entry damaged after it was written is detected instead of trusted."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from typing import IO, Any

TMP_MARK = ".tmp-"  # every temporary file or directory made here has this in its name


class CorruptFileError(ValueError):
    """A file that exists but whose content is truncated or damaged; the message names the file and why."""


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """`with atomic_write(path) as f: f.write(...)`: `f` is a temporary file in `path`'s directory, renamed
    onto `path` when the block ends without an error and removed when it raises."""
    path = os.fspath(path)
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=os.path.basename(path) + TMP_MARK)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def write_json(path: str | os.PathLike, obj: Any, **dump_kw) -> None:
    """Write `obj` as JSON to `path` atomically."""
    with atomic_write(path) as f:
        json.dump(obj, f, **dump_kw)


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def write_checked_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `{"sha256": …, "data": obj}` atomically; `read_checked_json` verifies it."""
    write_json(path, {"sha256": _digest(obj), "data": obj})


def read_checked_json(path: str | os.PathLike) -> Any:
    """The `obj` that `write_checked_json(path, obj)` wrote. Raises FileNotFoundError when there is no
    file, `CorruptFileError` (naming the file) when it is not valid JSON, lacks the checksum or fails it."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptFileError(f"{path} is truncated or damaged (not valid JSON: {e})") from None
    if not isinstance(raw, dict) or set(raw) != {"sha256", "data"}:
        raise CorruptFileError(f"{path} is not a checksummed entry (expected keys ['data', 'sha256'], "
                               f"got {sorted(raw) if isinstance(raw, dict) else type(raw).__name__})")  # fmt: skip
    if _digest(raw["data"]) != raw["sha256"]:
        raise CorruptFileError(f"{path} is damaged: its content does not match its SHA-256 checksum")
    return raw["data"]


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """SHA-256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
