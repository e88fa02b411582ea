"""Compile a scheduled op with IREE for the host CPU, verify the config reached codegen, check, time, cache.

`measure_op(spec, sched)` → `Measurement` with `status`:
* `ok`: compiled, the dumped executable configuration carries exactly the requested tile sizes, the result
  equals the numpy reference, timed (median of `repeats` runs after `warmup`, the minimum with "cpu" timing;
  `spread` = (max − min) / that time; an op whose first run exceeds `timer.SLOW_S` = 0.5 s is timed by that one run);
* `slow` (only with a `deadline_s`): compiled and verified, but its first run took longer than the deadline,
  so it was stopped (`lower_bound_s` = the deadline; not numpy-checked) — used by random search, where a
  schedule slower than the best so far cannot be the best of k;
* `rejected`: IREE refused the config (compile error) — an illegal action for the env;
* `unverified`: compiled but the dumped config differs from the request (IREE rewrote it) — not scored;
* `wrong`: the result differs from numpy — reported, never scored.
`sched=None` measures IREE's own default codegen (no config; its dumped choice is recorded).
Results are cached on disk (JSON, one file per key) keyed by (op, schedule, device, IREE version); the cache
directory is `$RL_MLIR_CACHE` or `~/.cache/rl_mlir`.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import logging
import os
import platform
import re
import tempfile
import time

import numpy as np

from .cache import read_entry, write_entry
from .emit import OpSpec, chain_module, op_inputs, op_module, reference, tolerance
from .schedule import NotRepresentable, OpSchedule, emitted_perm, lowering_config, tuning_spec
from .timer import TIMINGS, run_and_time, run_with_deadline

log = logging.getLogger("rl.mlir")
STATUSES = ("ok", "slow", "rejected", "unverified", "wrong")


@dataclasses.dataclass
class Measurement:
    """Outcome of one (op, schedule) measurement; `time_s` is the median — the minimum with "cpu" timing —
    (nan unless status == "ok")."""

    status: str
    time_s: float = float("nan")
    spread: float = float("nan")
    times: list = dataclasses.field(default_factory=list)
    config: dict | None = None            # the lowering config codegen used (read back from the dump)
    max_abs_err: float = float("nan")
    error: str = ""
    compile_s: float = float("nan")
    lower_bound_s: float = 0.0            # status "slow": the run took longer than this

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def device_id() -> str:
    """Cache key part naming this machine: CPU model, core count, IREE version."""
    import iree.compiler

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{cpu}|{os.cpu_count()}cpu|iree-{getattr(iree.compiler, '__version__', '?')}"


def cache_dir() -> str:
    return os.environ.get("RL_MLIR_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "rl_mlir"))


def _key(src: str, spec_text: str, repeats: int) -> str:
    """Cache key: the exact MLIR compiled, the tuning spec, the repeat count and the device."""
    return hashlib.sha1(json.dumps([src, spec_text, repeats, device_id()]).encode()).hexdigest()


_CFG_RE = re.compile(r"linalg\.generic[^\n]*?lowering_config = #iree_cpu\.lowering_config<([^>]*)>")
_MAPS_RE = re.compile(r"linalg\.generic \{indexing_maps = \[(.*?)\], iterator_types = \[([^\]]*)\]")


def generic_maps(text: str) -> str | None:
    """Indexing maps + iterator types of the first `linalg.generic` in `text` (spaces removed)."""
    m = _MAPS_RE.search(text)
    return None if m is None else re.sub(r"\s", "", m.group(1) + "|" + m.group(2))


_PIPE_RE = re.compile(r"pipeline = #iree_cpu\.pipeline<(\w+)>")


def parse_pipeline(text: str) -> str | None:
    """Codegen pipeline of the (last) dispatch in a dumped executable configuration."""
    found = _PIPE_RE.findall(text)
    return found[-1] if found else None


_OPERANDS_RE = re.compile(r"linalg\.generic \{[^\n]*?\} ins\(([^)]*)\) outs\(([^)]*)\)")


def parse_operand_types(text: str) -> list[str] | None:
    """Operand types (ins, then outs) of the last `linalg.generic` carrying a lowering config in a dump: the
    op as codegen sees it (after IREE collapsed dims), which is what a tuning spec must match."""
    found = [m for m in _OPERANDS_RE.finditer(text) if "lowering_config" in text[m.end():m.end() + 200]]
    if not found:
        return None
    ins, outs = found[-1].groups()
    return [t.strip() for part in (ins, outs) for t in part.split(":", 1)[1].split(",")]


def parse_config(text: str) -> dict[str, list[int]] | None:
    """Lowering config of the dispatch's `linalg.generic` in a dumped executable configuration."""
    m = _CFG_RE.search(text)
    if m is None:
        return None
    return {k: [int(x) for x in v.split(",") if x.strip()] for k, v in re.findall(r"(\w+) = \[([^\]]*)\]", m.group(1))}


def sources(spec: OpSpec | list[OpSpec], sched: OpSchedule | None) -> tuple[str, str]:
    """(MLIR module, tuning spec) compiled for `spec` under `sched` ("" = no spec: IREE's default).
    A list of specs is a producer → consumer chain fused into one dispatch (TF): the config goes on the
    producer (the root, matched as the op with a reduction loop) and IREE tiles the consumer with it.
    Raises `NotRepresentable` when IREE's form of the op cannot carry the schedule."""
    specs = spec if isinstance(spec, list) else [spec]
    if sched is None:
        return chain_module(specs, [None] * len(specs), dynamic_batch=False), ""
    perm = emitted_perm(specs[0], sched)
    if len(specs) > 1:
        if not any(specs[0].reduction):
            raise NotRepresentable(f"{specs[0].name}: tiled fusion needs a producer with a reduction loop")
        try:
            src = chain_module(specs, [perm] + [None] * (len(specs) - 1))
        except ValueError as e:
            raise NotRepresentable(str(e)) from None
        return src, tuning_spec(lowering_config(specs[0], sched), root_only=True)
    return op_module(specs[0], perm), tuning_spec(lowering_config(specs[0], sched))


def compile_dump(src: str, spec_text: str = "", flags: tuple[str, ...] = ()) -> tuple[bytes, str, int]:
    """IREE-compile `src` for the host CPU (with a tuning spec and extra flags) → (vmfb, the dumped
    executable configurations, number of dispatches)."""
    import iree.compiler as ic

    with tempfile.TemporaryDirectory(prefix="rl_mlir_") as tmp:
        args = ["--iree-llvmcpu-target-cpu=host", f"--iree-hal-dump-executable-configurations-to={tmp}", *flags]
        if spec_text:
            path = os.path.join(tmp, "spec.mlir")
            with open(path, "w") as f:
                f.write(spec_text)
            args.append(f"--iree-codegen-tuning-spec-path={path}")
        vmfb = ic.compile_str(src, target_backends=["llvm-cpu"], extra_args=args)
        files = sorted(glob.glob(os.path.join(tmp, "configured_*.mlir")))
        text = "".join(open(f).read() for f in files)
    return vmfb, text, len(files)


def compile_op(spec: OpSpec, src: str, spec_text: str, flags: tuple[str, ...] = ()) -> tuple[bytes, dict | None, bool, int]:
    """IREE-compile for the host CPU → (vmfb, dumped config of the (root) generic, whether codegen kept
    the emitted loop order: the dumped op has the emitted indexing maps, number of dispatches)."""
    vmfb, text, n_files = compile_dump(src, spec_text, flags)
    merged = any(len(g) > 1 for g in spec.collapse_groups())   # IREE's form has fewer loops: configs compared
    return vmfb, parse_config(text), merged or generic_maps(src) == generic_maps(text), n_files


def chain_inputs(specs: list[OpSpec], seed: int = 0) -> list[np.ndarray]:
    """Arguments of `chain_module(specs)`: op 0's loads, then each later op's loads but the first."""
    return op_inputs(specs[0], seed) + [x for s in specs[1:] for x in op_inputs(s, seed)[1:]]


def chain_reference(specs: list[OpSpec], inputs: list[np.ndarray]) -> np.ndarray:
    n0 = len(specs[0].maps) - 1
    out, rest = reference(specs[0], inputs[:n0]), inputs[n0:]
    for s in specs[1:]:
        k = len(s.maps) - 2
        out, rest = reference(s, [out] + rest[:k]), rest[k:]
    return out


def measure_op(spec: OpSpec | list[OpSpec], sched: OpSchedule | None, repeats: int = 5, warmup: int = 2,
               use_cache: bool = True, deadline_s: float | None = None, timing: str = "wall") -> Measurement:
    """Compile, verify, check and time `spec` under `sched` (None = IREE default); cached on disk. A list
    of specs is a chain fused into its producer's dispatch (`sources`). With `deadline_s`, the runs happen in
    a worker process that is stopped when the first run takes longer: status "slow" (a cached "slow" entry
    is reused only for a deadline no larger than the one it was stopped at). `timing`: see `timer.TIMINGS`."""
    specs = spec if isinstance(spec, list) else [spec]
    label = "+".join(s.name for s in specs) + f" schedule {sched.key() if sched else 'IREE-default'}"
    try:
        src, spec_text = sources(specs, sched)
    except NotRepresentable as e:
        log.warning("IREE cannot take %s: %s", label, e)
        return Measurement("rejected", error=str(e))
    want = None if sched is None else lowering_config(specs[0], sched)
    return measure_source(specs, label, src, spec_text, want, repeats=repeats, warmup=warmup,
                          use_cache=use_cache, deadline_s=deadline_s, timing=timing)


def measure_source(specs: list[OpSpec], label: str, src: str, spec_text: str, want: dict | None,
                   flags: tuple[str, ...] = (), repeats: int = 5, warmup: int = 2, use_cache: bool = True,
                   deadline_s: float | None = None, timing: str = "wall") -> Measurement:
    """`measure_op` for given sources: compile `src` with the tuning spec `spec_text` ("" = none) and extra
    compiler `flags`, check that codegen used `want` (None: IREE's own choice, not checked), check the result
    against numpy and time it (`timing`: see `timer.TIMINGS`); cached on disk by (source, spec, flags,
    repeats, timing, device)."""
    spec = specs[0]
    extra = "".join(f"\n// flag {f}" for f in flags) + ("" if timing == "wall" else f"\n// timing {timing}/min")
    key = _key(src, spec_text + extra, repeats)
    path = os.path.join(cache_dir(), key[:2], key + ".json")
    entry = read_entry(path, _FIELDS, STATUSES) if use_cache else None
    if entry is not None:
        cached = Measurement(**entry)
        if cached.status != "slow" or (deadline_s is not None and deadline_s <= cached.lower_bound_s):
            return cached
    t0 = time.perf_counter()
    try:
        vmfb, got, same_order, n_dispatch = compile_op(spec, src, spec_text, flags)
    except Exception as e:  # noqa: BLE001  (IREE raises CompilerToolError with the diagnostics)
        msg = next((ln.strip() for ln in str(e).splitlines() if "error:" in ln), str(e).splitlines()[0])
        log.warning("IREE rejected %s: %s", label, msg[:300])
        m = Measurement("rejected", error=msg[:2000])
    else:
        compile_s = time.perf_counter() - t0
        if want is not None and (got != want or not same_order or (len(specs) > 1 and n_dispatch != 1)):
            why = (f"requested {want}, codegen has {got}" + ("" if same_order else "; IREE re-ordered the loops")
                   + ("" if len(specs) == 1 or n_dispatch == 1 else f"; not fused ({n_dispatch} dispatches)"))
            log.warning("config did not reach codegen for %s: %s", label, why)
            m = Measurement("unverified", config=got, compile_s=compile_s, error=why)
        else:
            inputs = chain_inputs(specs)
            if deadline_s is None:
                run = run_and_time(vmfb, inputs, warmup, repeats, timing=timing)
            else:
                run = run_with_deadline(vmfb, inputs, warmup, repeats, max(deadline_s, 0.0), timing)
            if run is None:
                log.info("stopped %s after %.3g s (slower than the deadline)", label, deadline_s)
                m = Measurement("slow", config=got, compile_s=compile_s, lower_bound_s=max(deadline_s, 0.0))
                _store(path, m, use_cache)
                return m
            out, times = run
            ref = chain_reference(specs, inputs)
            err = float(np.abs(out.astype(np.float64) - ref).max()) if out.shape == ref.shape else float("inf")
            t = float(TIMINGS[timing][2](times))            # the timing's estimator (median / min)
            if not err <= tolerance(spec, ref):
                log.warning("wrong result for %s: max |err| %.3g", label, err)
                m = Measurement("wrong", config=got, max_abs_err=err, compile_s=compile_s, times=times,
                                error=f"max |err| {err:.3g} > tol {tolerance(spec, ref):.3g}")
            else:
                m = Measurement("ok", t, float((max(times) - min(times)) / t), times, got, err,
                                compile_s=compile_s)
    _store(path, m, use_cache)
    return m


def _store(path: str, m: Measurement, use_cache: bool) -> None:
    if use_cache:
        write_entry(path, dataclasses.asdict(m))


_FIELDS = [f.name for f in dataclasses.fields(Measurement)]


@dataclasses.dataclass
class ProgramMeasurement:
    """A program's measured time: the sum of its dispatches' medians (each op is its own IREE dispatch,
    except an op fused (TF) into its producer's; `ops` has one measurement per dispatch)."""

    status: str                 # "ok", or the status of the first op that was not ("slow": stopped at a deadline)
    time_s: float
    spread: float               # Σ (max − min) over ops / Σ medians
    ops: list
    lower_bound_s: float = 0.0            # status "slow": the program takes longer than this

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def measure_program(specs: list[OpSpec], schedules: list[OpSchedule | None] | None, repeats: int = 5,
                    use_cache: bool = True, deadline_s: float | None = None) -> ProgramMeasurement:
    """Measure every op of a program (`schedules=None`: IREE's default codegen for every op). With
    `deadline_s`, each op gets what is left of it after the ops before; once one is stopped ("slow") the
    rest are not measured and the program is "slow" with `lower_bound_s` = the deadline."""
    schedules = [None] * len(specs) if schedules is None else schedules
    if len(schedules) != len(specs):
        raise ValueError(f"{len(schedules)} schedules for a program of {len(specs)} ops")
    groups = []                                   # [op ids] per dispatch: a fused (TF) op joins its producer's
    for k, sc in enumerate(schedules):
        if k > 0 and sc is not None and sc.fused:
            groups[-1].append(k)
        else:
            groups.append([k])
    ops, spent = [], 0.0
    for g in groups:
        left = None if deadline_s is None else deadline_s - spent
        if left is not None and left <= 0:            # the ops before already took longer: not run
            ops.append(Measurement("slow", lower_bound_s=0.0))
            break
        ops.append(measure_op([specs[k] for k in g] if len(g) > 1 else specs[g[0]], schedules[g[0]], repeats,
                              use_cache=use_cache, deadline_s=left))
        spent += ops[-1].time_s if ops[-1].ok else 0.0
        if ops[-1].status == "slow":
            break
    bad = next((m.status for m in ops if not m.ok), None)
    if bad == "slow":
        return ProgramMeasurement(bad, float("nan"), float("nan"), ops, float(deadline_s))
    if bad is not None:
        return ProgramMeasurement(bad, float("nan"), float("nan"), ops)
    total = sum(m.time_s for m in ops)
    return ProgramMeasurement("ok", total, sum(max(m.times) - min(m.times) for m in ops) / total, ops)
