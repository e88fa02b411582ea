"""Ops of `rl.programs` as MLIR `linalg.generic` text, seeded inputs and a numpy reference.

Every op of a `ProgramTable` row becomes an `OpSpec` (kind, loop bounds, iterator types, affine access maps
read from the table's access matrices). `op_module(spec, perm)` emits a standalone function with one
`linalg.generic` whose iteration dims are the op's loops in the order `perm` (outer → inner): the
interchange action permutes the generic's dims, which is what `transform.structured.interchange` does.
Convolutions and poolings get an explicit unit batch loop first (NHWC with N = 1), the form IREE's dispatch
formation gives them anyway, so a lowering config written for the emitted op has the rank codegen sees.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..programs import OP_TYPES, ProgramTable

ELEMENTWISE_KINDS = ("bias_add", "bias_gelu", "relu", "residual_add")
REDUCTION_KINDS = ("row_sum", "exp_sum")
GELU_C = 0.7978845608028654   # sqrt(2/pi)


@dataclasses.dataclass(frozen=True)
class OpSpec:
    """One op as IREE sees it. `maps[t][d]` = ((loop, coef), ...) for dim d of tensor t (loads, then store)."""

    kind: str                                    # matmul | batch_matmul | conv2d | pooling | ELEMENTWISE | REDUCTION
    bounds: tuple[int, ...]                      # loops of the emitted generic (incl. a unit batch loop)
    reduction: tuple[bool, ...]
    maps: tuple[tuple[tuple[tuple[int, int], ...], ...], ...]
    batch_loop: bool = False                     # loop 0 is an added unit batch loop (conv2d / pooling)
    env_loops: tuple[int, ...] = ()              # env loop id of each emitted loop (-1: the batch loop)
    env_bounds: tuple[int, ...] = ()             # bounds of all the env's loops (incl. unit loops)

    def collapse_groups(self) -> list[tuple[int, ...]]:
        """Runs of consecutive loops IREE's dimension collapsing merges into one (for the original order):
        same iterator type, and every tensor indexes either none of them or all of them as consecutive
        plain dims (e.g. relu's two loops, a 1×1 convolution's output rows and columns)."""
        def joinable(a: int, b: int) -> bool:
            if self.reduction[a] != self.reduction[b] or (self.batch_loop and 0 in (a, b)):
                return False
            for dims in self.maps:
                pos = {d[0][0]: i for i, d in enumerate(dims) if len(d) == 1 and d[0][1] == 1}
                uses = {j for d in dims for j, _ in d}
                if (a in uses) != (b in uses):
                    return False
                if a in uses and not (a in pos and b in pos and pos[b] == pos[a] + 1):
                    return False
            return True

        groups = [[0]]
        for j in range(1, self.n_loops):
            if joinable(groups[-1][-1], j):
                groups[-1].append(j)
            else:
                groups.append([j])
        return [tuple(g) for g in groups]

    @property
    def n_loops(self) -> int:
        return len(self.bounds)

    def shape(self, t: int) -> tuple[int, ...]:
        """Static shape of tensor t: per dim Σ |coef| (bound − 1) + 1."""
        return tuple(sum(abs(c) * (self.bounds[j] - 1) for j, c in dim) + 1 for dim in self.maps[t])

    @property
    def name(self) -> str:
        return f"{self.kind}_" + "x".join(map(str, self.bounds))

    @property
    def flops(self) -> float:
        return float(np.prod(self.bounds))


def _kind(table: ProgramTable, p: int, k: int) -> str:
    op = OP_TYPES[int(table.op_type[p, k])]
    arith, valid = table.arith[p, k], table.tensor_valid[p, k]
    if op == "elementwise":
        if arith[4]:
            return "bias_gelu"
        if not valid[1]:
            return "relu"
        load1_rank = int(np.any(table.coef[p, k, 1] != 0, axis=1).sum())
        return "bias_add" if load1_rank == 1 else "residual_add"
    if op == "reduction":
        return "exp_sum" if arith[4] else "row_sum"
    return op


def op_spec(table: ProgramTable, p: int, k: int) -> OpSpec:
    """The `OpSpec` of op `k` of program `p` (raises for a padded op slot).

    Loops of bound 1 (e.g. the window of a 1×1 convolution) are left out, and tensor dims they alone
    index, as IREE's unit-dim folding would do anyway; `env_loops` maps emitted loops back to env loops.
    A convolution or pooling that keeps a window gets a dynamic unit batch loop 0.
    """
    if not table.op_valid[p, k]:
        raise ValueError(f"program {p} has no op {k}")
    n = int(table.n_loops[p, k])
    kind = _kind(table, p, k)
    keep = [j for j in range(n) if table.bounds[p, k, j] > 1]
    window = kind in ("conv2d", "pooling") and any(table.is_reduction[p, k, j] for j in keep
                                                    if j in (3, 4))
    new_id = {j: i + window for i, j in enumerate(keep)}
    maps = []
    for t in np.flatnonzero(table.tensor_valid[p, k]):
        rows = [tuple((new_id[j], int(c)) for j, c in enumerate(row[:n]) if c and j in new_id)
                for row in table.coef[p, k, t]]
        maps.append(tuple(r for r in rows if r))
    bounds = tuple(int(table.bounds[p, k, j]) for j in keep)
    env_bounds = tuple(int(b) for b in table.bounds[p, k, :n])
    red = tuple(bool(table.is_reduction[p, k, j]) for j in keep)
    if window:       # leading batch dim on input and output (and pooling's window operand)
        batch = (((0, 1),),)
        maps = [batch + m if t != 1 or kind == "pooling" else m for t, m in enumerate(maps)]
        if kind == "pooling":
            maps.insert(1, tuple(((new_id[j], 1),) for j in (3, 4) if j in new_id))
        return OpSpec(kind, (1,) + bounds, (False,) + red, tuple(maps), True, (-1,) + tuple(keep), env_bounds)
    return OpSpec(kind, bounds, red, tuple(maps), False, tuple(keep), env_bounds)


def program_specs(table: ProgramTable, p: int) -> list[OpSpec]:
    """`OpSpec` of every op of program `p`."""
    return [op_spec(table, p, k) for k in range(table.op_valid.shape[1]) if table.op_valid[p, k]]


def _ttype(shape: tuple[int, ...], dynamic_batch: bool = False) -> str:
    dims = ["?" if dynamic_batch and d == 0 else str(n) for d, n in enumerate(shape)]
    return "tensor<" + "x".join(dims) + "xf32>"


def _has_batch(spec: OpSpec, t: int) -> bool:
    return spec.batch_loop and spec.maps[t][0] == ((0, 1),)


def _affine(spec: OpSpec, t: int, pos: list[int]) -> str:
    """affine_map of tensor t with loops renamed to their position in the emitted order."""
    dims = ", ".join(f"d{i}" for i in range(spec.n_loops))
    exprs = []
    for dim in spec.maps[t]:
        terms = [(f"d{pos[j]}" if c == 1 else f"d{pos[j]} * {c}") for j, c in dim]
        exprs.append(" + ".join(terms))
    return f"affine_map<({dims}) -> ({', '.join(exprs)})>"


def _body(kind: str) -> list[str]:
    """Region body lines; block args %a (load0), %b (load1, if any), %o (init)."""
    if kind in ("matmul", "batch_matmul", "conv2d"):
        return ["%m = arith.mulf %a, %b : f32", "%r = arith.addf %o, %m : f32"]
    if kind == "pooling":
        return ["%r = arith.maximumf %o, %a : f32"]
    if kind in ("bias_add", "residual_add"):
        return ["%r = arith.addf %a, %b : f32"]
    if kind == "relu":
        return ["%z = arith.constant 0.0 : f32", "%r = arith.maximumf %a, %z : f32"]
    if kind == "bias_gelu":   # x = a + b; 0.5 x (1 + tanh(c (x + 0.044715 x^3)))
        return ["%x = arith.addf %a, %b : f32", "%x2 = arith.mulf %x, %x : f32", "%x3 = arith.mulf %x2, %x : f32",
                "%k = arith.constant 0.044715 : f32", "%kx3 = arith.mulf %k, %x3 : f32",
                "%in = arith.addf %x, %kx3 : f32", f"%c = arith.constant {GELU_C} : f32",
                "%u = arith.mulf %c, %in : f32", "%t = math.tanh %u : f32", "%one = arith.constant 1.0 : f32",
                "%h = arith.constant 0.5 : f32", "%s = arith.addf %one, %t : f32", "%hx = arith.mulf %h, %x : f32",
                "%r = arith.mulf %hx, %s : f32"]
    if kind == "row_sum":
        return ["%r = arith.addf %o, %a : f32"]
    if kind == "exp_sum":
        return ["%e = math.exp %a : f32", "%r = arith.addf %o, %e : f32"]
    raise ValueError(f"unknown op kind {kind!r}")


def init_value(kind: str) -> float | None:
    """Fill value of the output (None: the output is fully overwritten)."""
    if kind in ("matmul", "batch_matmul", "conv2d", "row_sum", "exp_sum"):
        return 0.0
    if kind == "pooling":
        return -3.0e38
    return None


def op_module(spec: OpSpec, perm: tuple[int, ...] | None = None, dynamic_batch: bool = True) -> str:
    """MLIR text of `func.func @main(loads...) -> store` computing `spec` with its loops in order `perm`.

    With `dynamic_batch` (used for scheduled ops) the unit batch dim of a convolution / pooling is dynamic:
    IREE folds a static unit dim away and its CPU configuration pipeline then rebuilds the batch-less
    convolution (`InsertBatchDimForBatchlessConvPass`, after the tuning spec ran) without its attributes,
    silently dropping the requested config. IREE's default codegen is measured on the static form."""
    return chain_module([spec], [perm], dynamic_batch)


def chain_module(specs: list[OpSpec], perms: list[tuple[int, ...] | None], dynamic_batch: bool = True) -> str:
    """`op_module` for a producer → consumer chain: op i > 0 reads op i−1's result as its first operand
    (the arguments are op 0's loads, then every later op's other loads); returns the last result."""
    args, body, prev = [], [], None
    for i, (spec, perm) in enumerate(zip(specs, perms)):
        perm = tuple(range(spec.n_loops)) if perm is None else tuple(perm)
        if sorted(perm) != list(range(spec.n_loops)):
            raise ValueError(f"{spec.name}: perm {perm} is not a permutation of {spec.n_loops} loops")
        pos = [perm.index(j) for j in range(spec.n_loops)]
        n_in = len(spec.maps) - 1
        dyn = dynamic_batch and spec.batch_loop
        ins = [_ttype(spec.shape(t), dyn and _has_batch(spec, t)) for t in range(n_in)]
        out = _ttype(spec.shape(n_in), dyn)
        x = "" if i == 0 else f"_{i}"        # op 0's names as in a one-op module (stable cache keys)
        names = []
        for t in range(n_in):
            if t == 0 and prev is not None:
                if prev[1] != ins[0]:
                    raise ValueError(f"{spec.name} cannot read {specs[i - 1].name}'s result: {prev[1]} != {ins[0]}")
                names.append(prev[0])
            else:
                names.append(f"%in{len(args)}")
                args.append(f"{names[-1]}: {ins[t]}")
        if dyn:
            body += [f"  %i0{x} = arith.constant 0 : index", f"  %n{x} = tensor.dim {names[0]}, %i0{x} : {ins[0]}",
                     f"  %empty{x} = tensor.empty(%n{x}) : {out}"]
        else:
            body.append(f"  %empty{x} = tensor.empty() : {out}")
        init = f"%empty{x}"
        if init_value(spec.kind) is not None:
            body.append(f"  %cst{x} = arith.constant {init_value(spec.kind):e} : f32")
            body.append(f"  %init{x} = linalg.fill ins(%cst{x} : f32) outs(%empty{x} : {out}) -> {out}")
            init = f"%init{x}"
        maps = ", ".join(_affine(spec, t, pos) for t in range(n_in + 1))
        iters = ", ".join('"reduction"' if spec.reduction[j] else '"parallel"' for j in perm)
        block = ", ".join([f"%{'ab'[t]}: f32" for t in range(n_in)] + ["%o: f32"])
        body += [f"  %res{x} = linalg.generic {{indexing_maps = [{maps}], iterator_types = [{iters}]}}",
                 f"      ins({', '.join(names)} : {', '.join(ins)}) outs({init} : {out}) {{",
                 f"  ^bb0({block}):"]
        body += [f"    {line}" for line in _body(spec.kind)]
        body += ["    linalg.yield %r : f32", f"  }} -> {out}"]
        prev = (f"%res{x}", out)
    lines = [f"func.func @main({', '.join(args)}) -> {prev[1]} {{"] + body + [f"  return {prev[0]} : {prev[1]}", "}"]
    return "\n".join(lines) + "\n"


def op_inputs(spec: OpSpec, seed: int = 0) -> list[np.ndarray]:
    """Seeded float32 inputs (normal; uniform in [-1, 1] for exp reductions)."""
    rng = np.random.default_rng(seed)
    shapes = [spec.shape(t) for t in range(len(spec.maps) - 1)]
    if spec.kind == "pooling":
        return [rng.standard_normal(shapes[0]).astype(np.float32), np.zeros(shapes[1], np.float32)]
    if spec.kind == "exp_sum":
        return [rng.uniform(-1, 1, s).astype(np.float32) for s in shapes]
    return [rng.standard_normal(s).astype(np.float32) for s in shapes]


def _windows(x: np.ndarray, spec: OpSpec) -> np.ndarray:
    """[1,H,W,C] input → [OH, OW, C, KH, KW] windows at the op's stride."""
    stride = dict(spec.maps[0][1])[1]
    kh, kw = spec.bounds[4:6]
    win = np.lib.stride_tricks.sliding_window_view(x[0], (kh, kw), axis=(0, 1))
    return win[::stride, ::stride][: spec.bounds[1], : spec.bounds[2]]


def reference(spec: OpSpec, inputs: list[np.ndarray]) -> np.ndarray:
    """numpy result of `spec` on `inputs` (float64 accumulation, returned as float32)."""
    x = [np.asarray(a, np.float64) for a in inputs]
    k = spec.kind
    if k in ("matmul", "batch_matmul") or (k == "conv2d" and not spec.batch_loop):
        letters = "abcdefgh"
        sub = lambda t: "".join(letters[dim[0][0]] for dim in spec.maps[t])  # noqa: E731
        a = x[0][tuple(slice(0, None, dim[0][1]) for dim in spec.maps[0])]    # strided 1×1 convolution
        r = np.einsum(f"{sub(0)},{sub(1)}->{sub(2)}", a, x[1], optimize=True)
    elif k == "conv2d":
        r = np.einsum("hwcyx,yxcf->hwf", _windows(x[0], spec), x[1], optimize=True)[None]
    elif k == "pooling":
        r = _windows(x[0], spec).max(axis=(-2, -1))[None]
    elif k in ("bias_add", "residual_add"):
        r = x[0] + x[1]
    elif k == "relu":
        r = np.maximum(x[0], 0)
    elif k == "bias_gelu":
        v = x[0] + x[1]
        r = 0.5 * v * (1 + np.tanh(GELU_C * (v + 0.044715 * v ** 3)))
    elif k == "row_sum":
        r = x[0].sum(-1)
    elif k == "exp_sum":
        r = np.exp(x[0]).sum(-1)
    else:
        raise ValueError(f"unknown op kind {k!r}")
    return r.astype(np.float32)


def tolerance(spec: OpSpec, ref: np.ndarray) -> float:
    """Absolute tolerance for comparing an fp32 result with the reference (grows with the reduction size)."""
    red = int(np.prod([b for b, r in zip(spec.bounds, spec.reduction) if r])) if any(spec.reduction) else 1
    return 1e-4 * np.sqrt(red) * max(1.0, float(np.abs(ref).max()))
