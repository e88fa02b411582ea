"""Which GEMM back end XLA:CPU uses, chosen from what the CPU reports, and how to apply the choice.

XLA:CPU reads its flags (`XLA_FLAGS`) once, when its backend starts (the first JAX computation), so a
choice must be applied before that, and per process. Nothing here runs at import: a program calls

    distilbert_jax.configure_cpu()            # rule (or $DISTILBERT_JAX_GEMM) for fp32
    distilbert_jax.configure_cpu("bf16")      # the choice for a bf16 model
    distilbert_jax.configure_cpu(backend="xla")   # explicit (wins over the variable and the rule)

at its start (the benchmarks and the train / nas CLIs do). It adds the chosen back end's flags to
`XLA_FLAGS` (replacing those an earlier call added) if XLA has not started yet; if it has, it changes
nothing and warns. Flags the user already
put in `XLA_FLAGS` win over ours. `python -m bench.gemm` measures every back end at the model's GEMM
shapes beside `torch.matmul` and says whether the rule's choice is the fastest on that CPU.

Back ends (checked against jaxlib 0.10.2: each flag set is accepted and changes the compiled dots as
described; `bench.gemm.lowering` reads it back from the compiled HLO):
- `xla`: XLA:CPU's default. In JAX 0.10 every dot becomes a YNNPACK fusion (`__ynn_fusion`, fusion type
  `individual_dot`); bf16 × bf16 → f32 dots run on bf16 operands.
- `onednn`: oneDNN fusions for dots whose operands and result share one dtype (fp32). The model's bf16 dots
  (bf16 in, f32 out) are not taken by oneDNN and stay on YNNPACK; bf16 → bf16 dots were converted to f32
  before oneDNN on our Zen 4 (AMX Xeons not measured).
- `eigen`: no library fusion (`--xla_cpu_experimental_ynn_fusion_type=`): XLA's own dot runtime (Eigen);
  bf16 dots are converted to f32 first.
- `ynn_dot`: YNNPACK fusion type `dot`; bf16 dots are converted to f32 first (half the bf16 rate).
- `mkl`: no flag; the model's 2-D matmuls (`modeling.matmul`, fp32 and bf16 → f32, forward and backward)
  become XLA FFI calls into Intel MKL (`distilbert_jax.mkl_gemm`: `cblas_gemm_bf16bf16f32` runs on the AMX
  tiles, `cblas_sgemm` on AVX-512). Needs the `mkl` wheel (`[mkl]` extra) and a C++ compiler (the handlers
  are compiled once into a cache). Attention's batched matmuls and everything else stay on XLA.
Not offered: `--xla_cpu_experimental_xnn_fusion_type=dot` (with or without YNNPACK off) is accepted but left
every dot unchanged in jaxlib 0.10.2 (no `__xnn_fusion` in the compiled HLO).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass

from .cpu import CpuInfo, read_cpu

ENV_VAR = "DISTILBERT_JAX_GEMM"


@dataclass(frozen=True)
class Backend:
    name: str
    flags: tuple[str, ...]
    what: str


BACKENDS = {b.name: b for b in (
    Backend("xla", (), "XLA:CPU default (YNNPACK individual-dot fusions)"),
    Backend("onednn", ("--xla_cpu_use_onednn=true", "--xla_cpu_experimental_onednn_fusion_type=dot"),
            "oneDNN fusions for same-dtype dots (fp32); bf16-in/f32-out dots stay on YNNPACK"),
    Backend("eigen", ("--xla_cpu_experimental_ynn_fusion_type=",), "no library fusion: XLA's own dot (Eigen), bf16 via f32"),
    Backend("ynn_dot", ("--xla_cpu_experimental_ynn_fusion_type=dot",), "YNNPACK fusion type dot (bf16 via f32)"),
    Backend("mkl", (), "the model's 2-D matmuls (fp32 and bf16 -> f32) as FFI calls into Intel MKL (AMX); "
                       "the rest XLA's default"),
)}  # fmt: skip
DTYPES = ("fp32", "bf16")
_ALIASES = {"float32": "fp32", "bfloat16": "bf16"}  # the train / nas configs' names
_NAMES = {v: k for k, v in _ALIASES.items()}  # "fp32" -> "float32": jnp dtype names


@dataclass(frozen=True)
class GemmChoice:
    """backend: a key of BACKENDS; source: "argument" | "env" | "rule"; reason: why (the rule's words);
    applied: whether its flags are in effect for this process's XLA (None until `configure_cpu`)."""

    backend: str
    source: str
    reason: str
    applied: bool | None = None

    @property
    def flags(self) -> tuple[str, ...]:
        return BACKENDS[self.backend].flags

    def describe(self) -> str:
        state = {None: "", True: "", False: " (NOT applied: XLA had already started)"}[self.applied]
        return f"GEMM back end {self.backend} ({self.source}: {self.reason}){state}"


def gemm_backend(cpu: CpuInfo, dtype: str = "fp32", mkl: bool = False) -> tuple[str, str]:
    """The rule: (back end, reason) for `cpu` and the model's matmul dtype ("fp32" | "bf16"). Pure.

    - AMD (measured on Zen 4 with AVX-512 BF16): `xla`. The default ran at the cores' FMA peak, fp32 and
      bf16; oneDNN gave the same per-core rates and `ynn_dot` halved bf16.
    - Intel with AVX-512 and MKL installed (`mkl`: `mkl_gemm.available()`), fp32: `mkl`. MKL's sgemm beat
      XLA's fp32 dots at every model shape and the model with it (2-core Xeon with AMX: base forward b1 57.4
      vs 67.9 ms, b8 329.6 vs 406.0; fp32 train step 2568 vs 3178 ms). fp32 GEMMs do not use AMX, so the same
      AVX-512 sgemm serves Xeons without AMX (not measured there).
    - Intel, bf16: `xla`, MKL or not. MKL's bf16 GEMMs (AMX) beat XLA's one by one (geomean 884 vs 787
      GFLOP/s) but not in the model, where XLA fuses the casts and bias adds around its dots (base forward b1
      29.8 vs 25.9 ms, b8 119.8 vs 116.4; bf16 train step 1149 vs 1193 ms: a tie).
    - Intel without MKL: `xla`. On the AMX Xeon oneDNN's fusions won some single fp32 GEMMs but lost the model
      (base forward fp32 b1 64.2 vs 51.5 ms, b8 397 vs 327 ms), and no flag changes the bf16 dots.
    - Anything else (no AVX-512, other vendors, unknown): `xla`, unmeasured — run `python -m bench.gemm`.
    """
    dtype = _ALIASES.get(dtype, dtype)
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES} (or {tuple(_ALIASES)}), got {dtype!r}")
    if cpu.is_amd:
        return "xla", "AMD: the default runs at the FMA peak (measured on Zen 4)"
    if cpu.is_intel and cpu.has_avx512:
        if dtype == "bf16":
            return "xla", "Intel bf16: XLA's fused bf16 dots tie MKL's AMX GEMMs in the model"
        if mkl:
            return "mkl", "Intel AVX-512 fp32: MKL's sgemm beat XLA's dots in the model"
        return "xla", "Intel fp32 without MKL: no XLA flag beat the default in the model (pip install distilbert_jax[mkl])"
    return "xla", "no measurement for this CPU type: default (run python -m bench.gemm)"


def choose(dtype: str = "fp32", backend: str | None = None, cpu: CpuInfo | None = None) -> GemmChoice:
    """The back end to use: `backend` if given, else `$DISTILBERT_JAX_GEMM`, else the rule ("auto" or ""
    in either place means the rule). Raises ValueError on an unknown name."""
    for source, name in (("argument", backend), ("env", os.environ.get(ENV_VAR))):
        if name and name != "auto":
            if name not in BACKENDS:
                where = "backend argument" if source == "argument" else f"${ENV_VAR}"
                raise ValueError(f"unknown GEMM back end {name!r} in {where}; choose one of {sorted(BACKENDS)} or 'auto'")
            return GemmChoice(name, source, BACKENDS[name].what)
    from . import mkl_gemm

    name, reason = gemm_backend(cpu or read_cpu(), dtype, mkl=mkl_gemm.available()[0])
    return GemmChoice(name, "rule", reason)


def merged_xla_flags(current: str, flags: tuple[str, ...]) -> str:
    """`current` XLA_FLAGS plus those of `flags` whose flag name it does not set already (the user's win)."""
    present = {f.split("=")[0] for f in current.split()}
    return " ".join([current.strip()] + [f for f in flags if f.split("=")[0] not in present]).strip()


_LIBRARY: dict[str, tuple[str, ...]] = {}  # "dtypes": the matmul dtypes configure_cpu routed to MKL in this process


def library_dot(dtype) -> bool:
    """Whether `modeling.matmul` runs its 2-D matmuls of `dtype` through the MKL FFI calls: the `mkl` back end
    was configured for that dtype in this process (the rule's `mkl` for the dtype it was chosen for, an explicit
    `backend="mkl"` or `$DISTILBERT_JAX_GEMM=mkl` for fp32 and bf16) and JAX computes on the CPU. Read at trace
    time: functions jitted before `configure_cpu` keep what they were traced with."""
    import jax
    import jax.numpy as jnp

    return jnp.dtype(dtype).name in _LIBRARY.get("dtypes", ()) and jax.default_backend() == "cpu"


@contextlib.contextmanager
def xla_dots():
    """Within this block, functions traced run every matmul as an XLA dot even where the `mkl` back end is
    configured: for a program exported to run elsewhere (StableHLO for IREE), which has no MKL FFI target."""
    saved = _LIBRARY.pop("dtypes", None)
    try:
        yield
    finally:
        if saved is not None:
            _LIBRARY["dtypes"] = saved


def xla_started() -> bool:
    """Whether this process's XLA backends have been initialised (then XLA_FLAGS is no longer read)."""
    from jax._src import xla_bridge

    return xla_bridge.backends_are_initialized()


_ADDED: list[str] = []  # the flags configure_cpu put into XLA_FLAGS in this process (a later call may replace them)


def configure_cpu(dtype: str = "fp32", backend: str | None = None, cpu: CpuInfo | None = None) -> GemmChoice:
    """Choose the GEMM back end (`choose`) and put its flags into `XLA_FLAGS` for this process, replacing those an
    earlier call put there, if XLA has not started yet. Once XLA has started, flags no longer take effect: it
    changes nothing and, unless the choice is already what XLA runs with, warns and returns applied=False."""
    choice = choose(dtype, backend, cpu)
    _LIBRARY.pop("dtypes", None)
    if choice.backend == "mkl":  # no XLA flag: the model's matmuls call MKL (library_dot)
        from . import mkl_gemm

        try:
            mkl_gemm.load()
        except mkl_gemm.MklUnavailable as e:
            if choice.source != "rule":
                raise
            warnings.warn(f"configure_cpu: {e}; using XLA's default GEMMs", stacklevel=2)
            choice = GemmChoice("xla", "rule", f"MKL unavailable ({e})")
        else:
            both = choice.source != "rule"
            _LIBRARY["dtypes"] = ("float32", "bfloat16") if both else (_NAMES[_ALIASES.get(dtype, dtype)],)
    current = os.environ.get("XLA_FLAGS", "")
    ours = [f for f in current.split() if f not in _ADDED]  # the user's flags
    merged = merged_xla_flags(" ".join(ours), choice.flags)
    if merged.split() == current.split():
        return GemmChoice(choice.backend, choice.source, choice.reason, True)
    if xla_started():
        warnings.warn(f"configure_cpu: XLA has already started with XLA_FLAGS={current!r}, so GEMM back end "
                      f"{choice.backend} {choice.flags} cannot take effect in this process; call "
                      "distilbert_jax.configure_cpu() before the first JAX computation", stacklevel=2)  # fmt: skip
        return GemmChoice(choice.backend, choice.source, choice.reason, False)
    _ADDED[:] = [f for f in choice.flags if f in merged.split()]
    os.environ["XLA_FLAGS"] = merged
    return GemmChoice(choice.backend, choice.source, choice.reason, True)
