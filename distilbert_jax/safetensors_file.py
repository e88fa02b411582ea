"""Read `.safetensors` tensors without memory-mapping the file, into 64-byte aligned host buffers.

`safetensors.safe_open` memory-maps the file: every page it reads stays in the process's resident set
until the file is closed, so loading a checkpoint costs its size twice (mapped file + params). Here each
tensor is `pread` from the page cache (not counted in the resident set) straight into its own aligned
array, which `jax.device_put` on CPU then adopts without a copy (`to_device`). Peak host memory while
loading is then about the params plus one tensor. The file format (an 8-byte little-endian header
length, a JSON header of `{name: {dtype, shape, data_offsets}}`, then the data) is checked up front.
"""

from __future__ import annotations

import json
import os
import struct

import jax
import ml_dtypes
import numpy as np

ALIGN = 64  # bytes; XLA:CPU aliases host buffers aligned like this instead of copying them
_MAX_HEADER = 100 * 2**20
DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}  # fmt: skip


def aligned_empty(shape: tuple[int, ...], dtype) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts on an `ALIGN`-byte boundary."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if nbytes == 0:  # nothing to align (numpy may place an empty view anywhere)
        return np.empty(shape, dtype)
    raw = np.empty(nbytes + ALIGN, np.uint8)
    start = -raw.ctypes.data % ALIGN
    return raw[start : start + nbytes].view(dtype).reshape(shape)


def to_device(array: np.ndarray, dtype=None, transpose: bool = False) -> jax.Array:
    """`array` (optionally transposed and cast to `dtype`) as a jax Array; on CPU the aligned buffer
    written here becomes the Array's memory, so no second copy is made."""
    source = array.T if transpose else array
    dtype = np.dtype(dtype or array.dtype)
    if source.flags.c_contiguous and source.dtype == dtype and source.ctypes.data % ALIGN == 0:
        return jax.device_put(source)
    out = aligned_empty(source.shape, dtype)
    np.copyto(out, source, casting="unsafe")
    return jax.device_put(out)


class SafetensorsError(ValueError):
    """A file that is not a well-formed safetensors file."""


class SafetensorsFile:
    """One `.safetensors` file: `keys()`, `get_tensor(key)` (a fresh aligned numpy array) and
    `metadata()`. A context manager that closes the file."""

    def __init__(self, path: str):
        self.path = path
        self._fd = os.open(path, os.O_RDONLY)
        try:
            self._entries, self._metadata, self._data_start = self._read_header()
        except BaseException:
            os.close(self._fd)
            raise

    def _read_header(self):
        size = os.fstat(self._fd).st_size
        head = os.pread(self._fd, 8, 0)
        if len(head) < 8:
            raise SafetensorsError(f"{size} bytes: too short for a header")
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, _MAX_HEADER):
            raise SafetensorsError(f"header length {n} does not fit in the file ({size} bytes)")
        try:
            header = json.loads(os.pread(self._fd, n, 8))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise SafetensorsError(f"header is not JSON: {e}") from None
        if not isinstance(header, dict):
            raise SafetensorsError("header is not a JSON object")
        metadata = header.pop("__metadata__", None) or {}
        data_start, data_size = 8 + n, size - 8 - n
        entries = {}
        for key, entry in header.items():
            try:
                dtype, shape, (begin, end) = DTYPES[entry["dtype"]], tuple(entry["shape"]), entry["data_offsets"]
            except (KeyError, TypeError, ValueError):
                raise SafetensorsError(f"tensor {key!r}: bad header entry {entry!r}") from None
            want = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
            if not 0 <= begin <= end <= data_size or end - begin != want:
                raise SafetensorsError(
                    f"tensor {key!r}: bytes [{begin}, {end}) for {want} bytes of {entry['dtype']}{list(shape)}, "
                    f"but the data section holds {data_size} bytes (truncated file?)"
                )
            entries[key] = (dtype, shape, begin)
        return entries, metadata, data_start

    def keys(self) -> list[str]:
        return list(self._entries)

    def metadata(self) -> dict[str, str]:
        return dict(self._metadata)

    def get_tensor(self, key: str) -> np.ndarray:
        """The tensor `key` as a new 64-byte aligned numpy array."""
        dtype, shape, begin = self._entries[key]
        out = aligned_empty(shape, dtype)
        view, offset = memoryview(out.reshape(-1).view(np.uint8)), self._data_start + begin
        while view.nbytes:
            got = os.preadv(self._fd, [view], offset)
            if got <= 0:
                raise SafetensorsError(f"tensor {key!r}: file ended early (truncated?)")
            view, offset = view[got:], offset + got
        return out

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "SafetensorsFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
