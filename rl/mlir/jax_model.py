"""Tune a whole JAX model through IREE: export → dispatches → per-dispatch-group configs → one tuning spec.

    exp = export(ModelCase("base", batch=1))                 # jax.jit(f).lower(...) → StableHLO text
    res = tune_model(exp, budget=8)                          # IREE's dispatches, grouped and tuned
    vmfb = compile_model(exp.text, stablehlo=True, spec_text=res.spec_text, flags=res.flags)

1. `export` lowers our DistilBERT forward with `jax.jit(f).lower(params, ids, mask).as_text()`; the module
   is renamed `@module`, so the runtime finds its `main` where `rl.mlir.timer` looks.
2. `find_dispatches` compiles it with `iree-compile` (a subprocess with a time limit) for the host CPU,
   dumping every executable's configuration and a standalone benchmark module per dispatch. A dispatch's
   *root* is the op carrying the `distribution` level (matmul, batch matmul, the softmax / LayerNorm row
   reductions, the transposes, GELU's elementwise op fused into a matmul's dispatch rides on its matmul).
3. Dispatches are grouped by (root op name, operand types) — the key a tuning spec matches by, so identical
   layers share a group and a group's config reaches all of them. Per group, `budget` distinct random
   refinements of IREE's own config are drawn in `rl.mlir.refine`'s space (the space the shipped policy acts
   in: workgroup tiles ÷/× 2–4, register tiles, reduction tiles; every one masked to configs IREE takes).
4. Round r puts candidate r of *every* group into one spec and compiles the whole model once (a spec that
   breaks the compile is retried group by group); each dispatch's benchmark module is compiled and timed
   (`timing` "cpu": one thread's CPU time, minimum — stable on a shared machine). A candidate counts only if
   the dumped config is exactly the one asked for. IREE's default is always a candidate.
5. The fastest config per group goes into one spec; the whole model is recompiled with it, the configs are
   read back, the outputs are checked against `jax.jit`'s (≤ `ATOL`), and a group that breaks either is
   dropped. Data tiling is a whole-model flag: `tune_model(flags=refine.DT_FLAGS)` tunes the dispatches left
   to configure under it (matmuls become ukernel `mmt4d`, which keep IREE's config), and the caller keeps
   the faster whole model.
"""

from __future__ import annotations

import dataclasses
import glob
import logging
import os
import re
import subprocess
import tempfile
from typing import Any

import numpy as np

from distilbert_jax.gemm import xla_dots

from . import refine as R
from .measure import parse_pipeline
from .timer import TIMINGS, run_and_time

log = logging.getLogger("rl.mlir")
ATOL = 1e-4                      # max |IREE − jax.jit| accepted for a tuned model
SIZES = {"base": {}, "tiny": dict(vocab_size=1000, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                                  max_position_embeddings=128)}
# iree-compile CPU-time limits (whole model / one dispatch): CPU time, not wall time, so a loaded machine does
# not fail compiles; the wall-clock limit is WALL_FACTOR times longer
MODEL_COMPILE_S, DISPATCH_COMPILE_S, WALL_FACTOR = 40.0, 20.0, 20.0


class CompileError(RuntimeError):
    """iree-compile failed or ran past its time limit (the first error line is the message)."""


@dataclasses.dataclass(frozen=True)
class ModelCase:
    """Which model is exported: DistilBERT `size` (base | tiny), random init `seed`, input [batch, seq]."""

    size: str = "base"
    batch: int = 1
    seq: int = 128
    seed: int = 0

    def __post_init__(self):
        if self.size not in SIZES:
            raise ValueError(f"unknown model size {self.size!r}; expected one of {sorted(SIZES)}")
        if self.batch < 1 or self.seq < 1:
            raise ValueError(f"batch and seq must be ≥ 1, got batch {self.batch}, seq {self.seq}")


@dataclasses.dataclass
class Exported:
    """A lowered model: StableHLO `text` (module `@module`), its flat `inputs`, `jax.jit`'s `expected` output."""

    case: ModelCase
    text: str
    inputs: list
    expected: np.ndarray


def build(case: ModelCase) -> tuple[Any, Any, np.ndarray, np.ndarray]:
    """(model, variables, input ids [B, S], mask [B, S]) of `case`: seeded random init; row b > 0 of the
    mask pads its last 8·b positions, so masking is exercised."""
    from distilbert_jax.config import DistilBertConfig, small_config
    from distilbert_jax.heads import build_model, init_params

    config = small_config(**SIZES[case.size]) if SIZES[case.size] else DistilBertConfig()
    if case.seq > config.max_position_embeddings:
        raise ValueError(f"seq {case.seq} exceeds the model's {config.max_position_embeddings} positions")
    model = build_model(config)
    variables = init_params(model, case.seed)
    rng = np.random.default_rng(case.seed)
    ids = rng.integers(0, config.vocab_size, (case.batch, case.seq), dtype=np.int32)
    mask = np.ones((case.batch, case.seq), np.int32)
    for b in range(1, case.batch):
        mask[b, max(case.seq - 8 * b, 1):] = 0
    return model, variables, ids, mask


def export(case: ModelCase) -> Exported:
    """Lower the jitted forward (last hidden state) of `case` to StableHLO and run it once with XLA."""
    import jax

    model, variables, ids, mask = build(case)
    f = jax.jit(lambda v, i, m: model.apply(v, i, m).last_hidden_state)
    with xla_dots():  # traced with plain dots, also where the mkl back end is configured: IREE has no MKL target
        expected = np.asarray(f(variables, ids, mask))
        lowered = f.lower(variables, ids, mask).as_text()
    text = re.sub(r"^module @\w+", "module @module", lowered, count=1, flags=re.M)
    inputs = [np.asarray(x) for x in jax.tree_util.tree_leaves((variables, ids, mask))]
    return Exported(case, text, inputs, expected)


# ---- iree-compile --------------------------------------------------------------------------------------
def _iree_compile_tool() -> str:
    from iree.compiler.tools.binaries import find_tool

    return find_tool("iree-compile")


def compile_model(src: str, stablehlo: bool, flags: tuple[str, ...] = (), spec_text: str = "",
                  dump_dir: str | None = None, timeout_s: float = MODEL_COMPILE_S) -> bytes:
    """`iree-compile` `src` (StableHLO or IREE's own input) for the host CPU in a subprocess stopped after
    `timeout_s` of CPU time, with extra `flags` and a tuning spec; `dump_dir` gets `cfg/` (executable
    configurations) and `bench/` (one benchmark module per dispatch). Raises `CompileError`."""
    import shutil

    with tempfile.TemporaryDirectory(prefix="rl_jax_model_") as tmp:
        inp, out = os.path.join(tmp, "in.mlir"), os.path.join(tmp, "out.vmfb")
        with open(inp, "w") as f:
            f.write(src)
        # the CPU-time limit via util-linux `prlimit` (a preexec_fn would fork a multithreaded JAX process)
        limit = [shutil.which("prlimit"), f"--cpu={int(timeout_s)}"] if shutil.which("prlimit") else []
        cmd = [*limit, _iree_compile_tool(), inp, "--iree-hal-target-backends=llvm-cpu", "--iree-llvmcpu-target-cpu=host",
               *(["--iree-input-type=stablehlo"] if stablehlo else []), *flags, "-o", out]
        if spec_text:
            spec = os.path.join(tmp, "spec.mlir")
            with open(spec, "w") as f:
                f.write(spec_text)
            cmd.append(f"--iree-codegen-tuning-spec-path={spec}")
        if dump_dir:
            cmd += [f"--iree-hal-dump-executable-configurations-to={os.path.join(dump_dir, 'cfg')}",
                    f"--iree-hal-dump-executable-benchmarks-to={os.path.join(dump_dir, 'bench')}"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s * WALL_FACTOR)
        except subprocess.TimeoutExpired:
            raise CompileError(f"iree-compile ran past {timeout_s * WALL_FACTOR:.0f} s") from None
        if proc.returncode < 0:                               # prlimit execs iree-compile: its signal
            raise CompileError(f"iree-compile stopped (exit status {proc.returncode}; CPU-time limit {timeout_s:.0f} s)")
        if proc.returncode != 0:
            lines = proc.stderr.splitlines() or [f"exit status {proc.returncode}"]
            raise CompileError(next((ln.strip() for ln in lines if "error:" in ln), lines[0])[:500])
        with open(out, "rb") as f:
            return f.read()


# ---- dispatches ------------------------------------------------------------------------------------------
_ROOT_RE = re.compile(r"= (linalg\.\w+)(.*?)lowering_config = #iree_cpu\.lowering_config<(distribution[^>]*)>")
_MAP_RE = re.compile(r"affine_map<\(([^)]*)\) -> \(([^)]*)\)>")
_NAMED_LOOPS = {  # named op -> (default operand maps, iterator types)
    "linalg.matmul": ([["d0", "d2"], ["d2", "d1"], ["d0", "d1"]], ["parallel", "parallel", "reduction"]),
    "linalg.batch_matmul": ([["d0", "d1", "d3"], ["d0", "d3", "d2"], ["d0", "d1", "d2"]],
                            ["parallel", "parallel", "parallel", "reduction"]),
}


@dataclasses.dataclass
class Dispatch:
    """One dispatch of the compiled model: its root op (None: no DoubleTiling root, e.g. a ukernel or a
    copy), the root's operand types, IREE's config, and the standalone benchmark module."""

    name: str
    op: str | None
    default: R.DefaultConfig | None
    bench: str

    @property
    def key(self) -> tuple:
        return (self.op, tuple(self.default.operand_types)) if self.default else (None, self.name)

    @property
    def tunable(self) -> bool:
        return self.default is not None and self.default.refinable


def parse_root(text: str) -> tuple[str, R.DefaultConfig] | None:
    """(root op name, IREE's config as a `refine.DefaultConfig`) of a dumped executable configuration: the
    op carrying `distribution`; its loop bounds come from its indexing maps and operand shapes."""
    line = next((ln for ln in text.splitlines() if _ROOT_RE.search(ln)), None)
    if line is None:
        return None
    op, head, cfg = _ROOT_RE.search(line).groups()
    levels = {k: [int(x) for x in v.split(",") if x.strip()] for k, v in re.findall(r"(\w+) = \[([^\]]*)\]", cfg)}
    types = _signature(line)
    if not types:
        return None
    maps = [[e.strip() for e in res.split(",")] for _, res in _MAP_RE.findall(head)] or None
    iters = re.findall(r'"(parallel|reduction)"', head)
    if op in _NAMED_LOOPS:
        maps = maps or _NAMED_LOOPS[op][0]
        iters = _NAMED_LOOPS[op][1]
    n = len(iters)
    if not maps or not n or len(maps) != len(types):
        return None
    bounds = [0] * n
    for m, t in zip(maps, types):
        shape = [int(s) for s in re.findall(r"(\d+)x", t)]
        for pos, e in enumerate(m):
            if re.fullmatch(r"d\d+", e) and pos < len(shape):
                bounds[int(e[1:])] = shape[pos]
    same = [ln for ln in text.splitlines() if f"= {op}" in ln and _signature(ln) == types]
    red = tuple(i == "reduction" for i in iters)
    rd = max((i for i, r in enumerate(red) if r), default=None)
    cache_red_ok = not (op == "linalg.batch_matmul" and rd is not None and maps[1][-1] != f"d{rd}")
    d = R.DefaultConfig(parse_pipeline(text) or "?", levels, tuple(bounds), red, False, tuple(types), cache_red_ok)
    # a matcher by op and operand types would also configure a twin in the same dispatch (LayerNorm's two
    # row reductions): IREE rejects two configured roots, so such a dispatch is left alone
    return op, d if all(bounds) and len(same) == 1 else dataclasses.replace(d, levels={})


def _signature(line: str) -> list[str]:
    io = re.search(r"ins\(([^)]*)\) outs\(([^)]*)\)", line)
    return [t for part in io.groups() for t in re.findall(r"tensor<[^<>]*>", part)] if io else []


def find_dispatches(exp: Exported, flags: tuple[str, ...] = (), spec_text: str = "") -> list[Dispatch]:
    """Compile the whole model (with `flags` and the tuning spec) and read every dispatch back."""
    with tempfile.TemporaryDirectory(prefix="rl_jax_dump_") as tmp:
        compile_model(exp.text, True, flags, spec_text, dump_dir=tmp)
        out = []
        for path in sorted(glob.glob(os.path.join(tmp, "cfg", "configured_*.mlir"))):
            stem = os.path.basename(path)[len("configured_"):-len(".mlir")]
            bench = glob.glob(os.path.join(tmp, "bench", f"{stem}_*benchmark.mlir"))
            if not bench:
                continue
            with open(path) as f:
                root = parse_root(f.read())
            with open(bench[0]) as f:
                out.append(Dispatch(stem, root[0] if root else None, root[1] if root else None, f.read()))
    return out


def time_dispatches(benches: list[str], timing: str = "cpu", repeats: int = 5) -> list[float]:
    """Seconds per run of each dispatch benchmark module (nan: it did not compile): compiled in parallel
    subprocesses, then timed one after the other (`time_dispatch`)."""
    import concurrent.futures

    def build(bench):
        try:
            return compile_model(bench, False, timeout_s=DISPATCH_COMPILE_S)
        except CompileError as e:
            log.warning("dispatch benchmark did not compile: %s", e)
            return None

    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        vmfbs = list(pool.map(build, benches))
    return [float("nan") if v is None else time_dispatch(v, b, timing, repeats) for v, b in zip(vmfbs, benches)]


def time_dispatch(vmfb: bytes, bench: str, timing: str = "cpu", repeats: int = 5, min_run_s: float = 0.02) -> float:
    """Seconds per run of a compiled dispatch benchmark module `bench` (`timing`: see `timer.TIMINGS`); each
    timed call repeats the dispatch enough times to last about `min_run_s`."""
    import iree.runtime as rt

    fn_name = re.search(r"util\.func public @(\w+)\(%arg0: i32\)", bench).group(1)
    driver, clock, est = TIMINGS[timing]
    ctx = rt.SystemContext(config=rt.Config(driver))
    ctx.add_vm_module(rt.VmModule.copy_buffer(ctx.instance, vmfb))
    fn = ctx.modules.module[fn_name]
    fn(1)
    t0 = clock()
    fn(1)
    n = int(min(max(min_run_s / max(clock() - t0, 1e-6), 1), 1000))
    times = []
    for _ in range(repeats):
        t0 = clock()
        fn(n)
        times.append((clock() - t0) / n)
    return float(est(times))


# ---- tuning ----------------------------------------------------------------------------------------------
@dataclasses.dataclass
class GroupResult:
    """A dispatch group (one tuning-spec matcher): its dispatches, IREE's config and time (summed over the
    group's distinct dispatches), the measured candidates (nan: rejected, or the config did not reach
    codegen) and the chosen one."""

    op: str
    default: R.DefaultConfig
    dispatches: list
    default_s: float
    candidates: list = dataclasses.field(default_factory=list)      # [(Refinement, seconds)]
    chosen: R.Refinement = R.Refinement("keep")
    chosen_s: float = float("nan")

    @property
    def entry(self) -> tuple:
        """This group's tuning-spec entry for its chosen config."""
        return self.spec_entry(self.chosen)

    def spec_entry(self, r: R.Refinement) -> tuple:
        return (list(self.default.operand_types), R.lowering_levels(self.default, r), self.default.pipeline, self.op)

    @property
    def label(self) -> str:
        return f"{self.op.removeprefix('linalg.')} {' '.join(t[7:-1] for t in self.default.operand_types)}"


@dataclasses.dataclass
class TuneResult:
    """Tuned groups under compiler `flags`, the dispatches nobody can tune, and the final spec."""

    flags: tuple
    groups: list
    untunable: list
    spec_text: str = ""
    dropped: list = dataclasses.field(default_factory=list)     # group labels removed by the final checks


def group_dispatches(dispatches: list[Dispatch]) -> tuple[list[GroupResult], list[Dispatch]]:
    """Tunable dispatches grouped by (root op, operand types), in order of first appearance; the rest."""
    groups: dict[tuple, GroupResult] = {}
    rest = []
    for d in dispatches:
        if not d.tunable:
            rest.append(d)
        elif d.key in groups:
            groups[d.key].dispatches.append(d)
        else:
            groups[d.key] = GroupResult(d.op, d.default, [d], float("nan"))
    for key, g in list(groups.items()):     # one matcher, two loop structures: a config cannot fit both
        if any(d.default != g.default for d in g.dispatches):
            rest += g.dispatches
            del groups[key]
    return list(groups.values()), rest


def simd_ok(d: R.DefaultConfig, r: R.Refinement) -> bool:
    """The innermost parallel register tile stays at least IREE's (≤ one SIMD register of lanes): narrower
    ones scalarise the op — measured 10–40× slower, and LLVM then takes minutes on the unrolled code."""
    if r.vector_common_parallel is None or not d.par_dims:
        return True
    inner = d.par_dims[-1]
    return r.vector_common_parallel[inner] >= min(d.level("vector_common_parallel")[inner], 16)


def candidates(d: R.DefaultConfig, budget: int, rng: np.random.Generator) -> list[R.Refinement]:
    """Up to `budget` distinct random config refinements of IREE's config (`refine.random_refinement`) that
    keep the op vectorised (`simd_ok`)."""
    out: list[R.Refinement] = []
    for _ in range(50 * budget):
        r = R.random_refinement(d, rng)
        if r.mode == "config" and r.key() != "cfg:" and r not in out and simd_ok(d, r):   # "cfg:": IREE's own
            out.append(r)
            if len(out) == budget:
                break
    return out


def _levels_match(g: GroupResult, r: R.Refinement, d: Dispatch) -> bool:
    want = R.lowering_levels(g.default, r)
    return {k: v for k, v in d.default.levels.items() if k in want} == want


def _time_groups(jobs: list[tuple[GroupResult, R.Refinement | None]], found: list[Dispatch], timing: str,
                 repeats: int) -> list[float]:
    """Per (group, refinement): summed time of `found`'s dispatches of the group (nan: one is missing, is not
    configured as the refinement asks (None: IREE's own config, not checked), or fails to compile). All the
    benchmark modules are compiled in parallel, then timed one by one."""
    mine = [[d for d in found if d.key == (g.op, tuple(g.default.operand_types))] for g, _ in jobs]
    ok = [len(m) == len(g.dispatches) and (r is None or all(_levels_match(g, r, d) for d in m))
          for m, (g, r) in zip(mine, jobs)]
    times = iter(time_dispatches([d.bench for m, good in zip(mine, ok) if good for d in m], timing, repeats))
    return [float(sum(next(times) for _ in m)) if good else float("nan") for m, good in zip(mine, ok)]


def _round(exp: Exported, flags: tuple, jobs: list[tuple[GroupResult, R.Refinement]], timing: str,
           repeats: int) -> list[float]:
    """Times of one candidate per group, all in one spec (one whole-model compile); group by group when
    that spec breaks the compile."""
    try:
        found = find_dispatches(exp, flags, R.tuning_spec([g.spec_entry(r) for g, r in jobs]))
        return _time_groups(jobs, found, timing, repeats)
    except CompileError as e:
        if len(jobs) == 1:
            log.warning("%s %s rejected: %s", jobs[0][0].label, jobs[0][1].key(), e)
            return [float("nan")]
        # the error names the dispatch it failed in: drop that group's candidate and retry; else bisect
        bad = [i for i, (g, _) in enumerate(jobs) if any(f"configured_{d.name}.mlir" in str(e) for d in g.dispatches)]
        if len(bad) == 1:
            g, r = jobs[bad[0]]
            log.warning("%s %s rejected: %s", g.label, r.key(), e)
            rest = _round(exp, flags, jobs[:bad[0]] + jobs[bad[0] + 1:], timing, repeats)
            return rest[:bad[0]] + [float("nan")] + rest[bad[0]:]
        half = len(jobs) // 2
        return _round(exp, flags, jobs[:half], timing, repeats) + _round(exp, flags, jobs[half:], timing, repeats)


def check_model(exp: Exported, groups: list[GroupResult], flags: tuple) -> tuple[bool, str]:
    """Compile the model with `groups`' chosen configs, check every config reached codegen and the output
    equals `jax.jit`'s within `ATOL` → (ok, why not)."""
    spec = R.tuning_spec([g.entry for g in groups]) if groups else ""
    try:
        with tempfile.TemporaryDirectory(prefix="rl_jax_check_") as tmp:
            vmfb = compile_model(exp.text, True, flags, spec, dump_dir=tmp)
            found = []
            for path in glob.glob(os.path.join(tmp, "cfg", "configured_*.mlir")):
                with open(path) as f:
                    root = parse_root(f.read())
                if root:
                    found.append(Dispatch(path, root[0], root[1], ""))
    except CompileError as e:
        return False, str(e)
    for g in groups:
        mine = [d for d in found if d.key == (g.op, tuple(g.default.operand_types))]
        if not mine or not all(_levels_match(g, g.chosen, d) for d in mine):
            return False, f"{g.label}: the config did not reach codegen"
    err = max_abs_diff(run_model(vmfb, exp.inputs, "cpu", 1)[0], exp.expected)
    return (False, f"max |IREE − jax.jit| {err:.3g} > {ATOL}") if err > ATOL else (True, "")


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(np.asarray(a, np.float64) - b).max()) if np.shape(a) == np.shape(b) else float("inf")


def run_model(vmfb: bytes, inputs: list, timing: str = "wall", repeats: int = 5, warmup: int = 2) -> tuple:
    """(output, run times) of a compiled model (`timer.run_and_time`: IREE's driver of `timing`)."""
    return run_and_time(vmfb, inputs, warmup, repeats, timing=timing)


def tune_model(exp: Exported, flags: tuple[str, ...] = (), budget: int = 8, seed: int = 0, timing: str = "cpu",
               repeats: int = 5, progress: bool = True) -> TuneResult:
    """Tune every dispatch group of the model compiled with `flags` (see the module docstring)."""
    from tqdm import tqdm

    groups, rest = group_dispatches(find_dispatches(exp, flags))
    rng = np.random.default_rng(seed)
    cands = [candidates(g.default, budget, rng) for g in groups]
    bar = tqdm(total=len(groups) + sum(map(len, cands)), desc=f"tuning {'data-tiled ' if flags else ''}dispatches",
               unit="cfg", disable=not progress)
    for g, t in zip(groups, _time_groups([(g, None) for g in groups], [d for g in groups for d in g.dispatches],
                                         timing, repeats)):
        g.default_s = t
    bar.update(len(groups))
    for i in reversed(range(len(groups))):       # IREE's own dispatch could not be timed: left alone
        if not np.isfinite(groups[i].default_s):
            log.warning("%s: IREE's own dispatch could not be timed; not tuned", groups[i].label)
            rest += groups[i].dispatches
            del groups[i], cands[i]
    for r in range(max(map(len, cands), default=0)):
        jobs = [(g, c[r]) for g, c in zip(groups, cands) if r < len(c)]
        for (g, c), t in zip(jobs, _round(exp, flags, jobs, timing, repeats)):
            g.candidates.append((c, t))
        bar.update(len(jobs))
    bar.close()
    for g in groups:
        ok = [(c, t) for c, t in g.candidates if not np.isnan(t)]
        g.chosen, g.chosen_s = min([(R.Refinement("keep"), g.default_s)] + ok, key=lambda o: o[1])
    res = TuneResult(tuple(flags), groups, rest)
    tuned = [g for g in groups if g.chosen.mode == "config"]
    ok, why = check_model(exp, tuned, flags)
    if not ok:                                  # drop the groups that break the model on their own
        log.warning("the tuned model failed its check (%s): checking group by group", why)
        for g in list(tuned):
            if not check_model(exp, [g], flags)[0]:
                tuned.remove(g)
                res.dropped.append(g.label)
        if not check_model(exp, tuned, flags)[0]:
            res.dropped += [g.label for g in tuned]
            tuned = []
        for g in groups:
            if g.label in res.dropped:
                g.chosen, g.chosen_s = R.Refinement("keep"), g.default_s
    res.spec_text = R.tuning_spec([g.entry for g in tuned]) if tuned else ""
    return res
