"""The `mkl` GEMM back end: the model's 2-D matmuls as XLA FFI custom calls into Intel MKL.

No XLA:CPU flag in jaxlib 0.10 puts a bf16 × bf16 → f32 dot on the AMX tiles (oneDNN fusion takes only
same-dtype dots, YNNPACK has no AMX kernels); MKL's `cblas_gemm_bf16bf16f32` does. `csrc/mkl_gemm.cc`
wraps it (and `cblas_sgemm` for float32) as two FFI handlers; this module finds MKL (the `mkl` wheel, the
`[mkl]` extra, or `$DISTILBERT_JAX_MKL_LIB`), compiles the handlers once with the system C++ compiler
against JAX's FFI headers into a cache directory, loads them and registers the targets. Nothing happens at
import; `distilbert_jax.configure_cpu(backend="mkl")` (or the rule, on an Intel CPU with AMX) calls `load`.

    ok, why = mkl_gemm.available()      # (False, "MKL not found: pip install 'distilbert_jax[mkl]'")
    mkl_gemm.load()                      # raises MklUnavailable naming what is missing
    y = mkl_gemm.dot(a, b, transpose_b=True)   # a [m, k] @ b[n, k]ᵀ -> [m, n] float32
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp

SOURCE = Path(__file__).parent / "csrc" / "mkl_gemm.cc"
LIB_ENV = "DISTILBERT_JAX_MKL_LIB"  # path of libmkl_rt.so, overriding the `mkl` wheel's
TARGETS = {jnp.dtype(jnp.bfloat16): "distilbert_jax_mkl_gemm_bf16", jnp.dtype(jnp.float32): "distilbert_jax_mkl_gemm_f32"}
_HANDLERS = {jnp.dtype(jnp.bfloat16): "DjMklGemmBf16", jnp.dtype(jnp.float32): "DjMklGemmF32"}
_STATE: dict = {}  # "lib": the loaded handler library, once `load` succeeded


class MklUnavailable(RuntimeError):
    """The MKL back end cannot run here; the message names what is missing."""


def find_mkl() -> Path | None:
    """libmkl_rt.so: `$DISTILBERT_JAX_MKL_LIB`, else the one the `mkl` wheel installed; None if neither."""
    if os.environ.get(LIB_ENV):
        return Path(os.environ[LIB_ENV])
    try:
        dist = importlib.metadata.distribution("mkl")
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in dist.files or ():
        if Path(f).name.startswith("libmkl_rt.so"):
            return Path(dist.locate_file(f)).resolve()
    return None


def _mkl_or_why() -> tuple[Path | None, str]:
    """(libmkl_rt.so, "") or (None, why it cannot be used)."""
    mkl = find_mkl()
    if mkl is None:
        return None, (f"MKL not found: install it with pip install 'distilbert_jax[mkl]' (the mkl wheel) "
                      f"or point ${LIB_ENV} at libmkl_rt.so")  # fmt: skip
    if not mkl.exists():
        return None, f"MKL library {mkl} does not exist (from ${LIB_ENV} or the mkl wheel's file list)"
    return mkl, ""


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def cache_dir() -> Path:
    """Where compiled handlers live: `$DISTILBERT_JAX_CACHE/ffi`, else `~/.cache/distilbert_jax/ffi`."""
    root = os.environ.get("DISTILBERT_JAX_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "distilbert_jax")
    return Path(root) / "ffi"


def build(out_dir: Path | None = None) -> Path:
    """Compile `csrc/mkl_gemm.cc` into a shared library (once: named by a hash of the source, the jaxlib
    version and the compiler) and return its path. Raises MklUnavailable if there is no C++ compiler or the
    compilation fails (with the compiler's message)."""
    cxx = _compiler()
    if cxx is None:
        raise MklUnavailable("the mkl GEMM back end compiles a small FFI library and needs a C++ compiler "
                             "(c++, g++ or clang++ on PATH, or $CXX); none was found")  # fmt: skip
    key = hashlib.sha256(SOURCE.read_bytes() + jax.lib.__version__.encode() + cxx.encode()).hexdigest()[:16]
    out_dir = Path(out_dir) if out_dir is not None else cache_dir()
    lib = out_dir / f"libdj_mkl_gemm-{key}.so"
    if lib.exists():
        return lib
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out_dir)
    os.close(fd)
    cmd = [cxx, "-O2", "-shared", "-fPIC", "-std=c++17", "-w", f"-I{jax.ffi.include_dir()}", str(SOURCE), "-o", tmp]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        os.unlink(tmp)
        raise MklUnavailable(f"compiling {SOURCE.name} failed ({' '.join(cmd)}):\n{done.stderr[-2000:]}")
    os.replace(tmp, lib)  # atomic: a concurrent process sees the old state or the whole library
    return lib


def load() -> None:
    """Build (if needed) and load the handlers, load MKL (sequential: each GEMM is split over XLA's intra-op
    thread pool) and register the FFI targets. Idempotent. Raises MklUnavailable."""
    if "lib" in _STATE:
        return
    mkl, missing = _mkl_or_why()
    if missing:
        raise MklUnavailable(missing)
    lib = ctypes.CDLL(str(build()))
    lib.dj_mkl_load.argtypes, lib.dj_mkl_error.restype = [ctypes.c_char_p], ctypes.c_char_p
    rc = lib.dj_mkl_load(str(mkl).encode())
    if rc != 0:
        why = (lib.dj_mkl_error() or b"").decode() if rc == 1 else "cblas_gemm_bf16bf16f32 / cblas_sgemm missing"
        raise MklUnavailable(f"loading {mkl} failed: {why}")
    for dtype, target in TARGETS.items():
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, _HANDLERS[dtype])), platform="cpu")
    _STATE["lib"] = lib


def available() -> tuple[bool, str]:
    """(whether `load` would succeed without compiling anything yet, why not): MKL found and a compiler
    present (or the library already built or loaded)."""
    if "lib" in _STATE:
        return True, "loaded"
    mkl, missing = _mkl_or_why()
    if missing:
        return False, missing
    if _compiler() is None:
        return False, "no C++ compiler to build the MKL FFI library (set $CXX)"
    return True, f"MKL at {mkl}"


def loaded() -> bool:
    return "lib" in _STATE


def dot(a: jax.Array, b: jax.Array, transpose_a: bool = False, transpose_b: bool = False) -> jax.Array:
    """a [m, k] (or [k, m] with transpose_a) @ b [k, n] (or [n, k] with transpose_b) -> [m, n] float32, both
    bf16 or both float32, on MKL. Call `load` first. Under `vmap` the batch runs as a loop of GEMMs."""
    dtype = jnp.dtype(a.dtype)
    if dtype not in TARGETS or b.dtype != dtype or a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"mkl_gemm.dot takes two 2-D bf16 or float32 arrays of one dtype, got {a.dtype}{a.shape} "
                         f"and {b.dtype}{b.shape}")  # fmt: skip
    m, k = a.shape[::-1] if transpose_a else a.shape
    n, kb = b.shape if transpose_b else b.shape[::-1]
    if k != kb:
        raise ValueError(f"mkl_gemm.dot: contracting dimensions differ: {k} vs {kb}")
    out = jax.ShapeDtypeStruct((m, n), jnp.float32)
    call = jax.ffi.ffi_call(TARGETS[dtype], out, vmap_method="sequential")
    return call(a, b, transpose_a=transpose_a, transpose_b=transpose_b)
