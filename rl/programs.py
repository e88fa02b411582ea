"""Benchmark programs for the scheduling environment: loop nests of realistic ops, padded to fixed maxima.

An *op* is a perfectly nested loop nest over `n_loops ≤ MAX_LOOPS` loops with up to two loaded tensors and
one stored tensor, each accessed through an affine map `index[d] = Σ_j coef[t, d, j] · i_j` (MLIR-RL's access
matrices). A *program* is a chain of up to `MAX_OPS` ops where op k's producer is op k-1 (e.g. matmul → bias
add + GELU). Shapes come from BERT/DistilBERT layers at several batch sizes / sequence lengths and from ResNet
convolutions; `train_programs()` and `test_programs()` are disjoint (held-out shapes).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

MAX_LOOPS = 6        # L
MAX_DIMS = 4         # D (tensor rank, left-padded with size-1 dims)
N_TENSORS = 3        # load0, load1, store
MAX_OPS = 3          # ops per program
N_ARITH = 5          # + - * / exp counts per innermost iteration
OP_TYPES = ("matmul", "batch_matmul", "conv2d", "pooling", "elementwise", "reduction")


class Op(NamedTuple):
    """One loop nest (numpy arrays; stacked into [P, MAX_OPS, ...] for a program table)."""

    op_type: int            # index into OP_TYPES
    n_loops: int
    bounds: np.ndarray      # [L] int, 1 for padded loops
    is_reduction: np.ndarray  # [L] bool
    coef: np.ndarray        # [N_TENSORS, D, L] int affine access coefficients
    tensor_valid: np.ndarray  # [N_TENSORS] bool
    arith: np.ndarray       # [N_ARITH] op counts per innermost iteration


class ProgramTable(NamedTuple):
    """A set of P programs padded to MAX_OPS ops (every field has leading dims [P, MAX_OPS])."""

    op_valid: np.ndarray
    op_type: np.ndarray
    n_loops: np.ndarray
    bounds: np.ndarray
    is_reduction: np.ndarray
    coef: np.ndarray
    tensor_valid: np.ndarray
    arith: np.ndarray
    names: tuple = ()


def make_op(op_type: str, bounds: list[int], reduction: list[int], tensors: list[list[dict[int, int]]],
            arith: tuple[int, int, int, int, int]) -> Op:
    """Build an `Op`. `tensors` = [load0, (load1), store]; each is a list of dims, each dim {loop: coef}."""
    n = len(bounds)
    if n > MAX_LOOPS:
        raise ValueError(f"{op_type}: {n} loops > MAX_LOOPS={MAX_LOOPS}")
    b = np.ones(MAX_LOOPS, np.int32)
    b[:n] = bounds
    red = np.zeros(MAX_LOOPS, bool)
    red[list(reduction)] = True
    coef = np.zeros((N_TENSORS, MAX_DIMS, MAX_LOOPS), np.int32)
    valid = np.zeros(N_TENSORS, bool)
    slots = [0, 2] if len(tensors) == 2 else [0, 1, 2]
    for slot, dims in zip(slots, tensors):
        valid[slot] = True
        for d, expr in enumerate(dims):
            for loop, c in expr.items():
                coef[slot, MAX_DIMS - len(dims) + d, loop] = c
    return Op(OP_TYPES.index(op_type), n, b, red, coef, valid, np.asarray(arith, np.int32))


def matmul(m: int, n: int, k: int) -> Op:
    """C[i,j] += A[i,k] * B[k,j]; loops (i, j, k)."""
    return make_op("matmul", [m, n, k], [2], [[{0: 1}, {2: 1}], [{2: 1}, {1: 1}], [{0: 1}, {1: 1}]], (1, 0, 1, 0, 0))


def batch_matmul(b: int, m: int, n: int, k: int, transpose_b: bool = False) -> Op:
    """C[b,i,j] += A[b,i,k] * B[b,k,j] (or B[b,j,k]); loops (b, i, j, k)."""
    bt = [{0: 1}, {2: 1}, {3: 1}] if transpose_b else [{0: 1}, {3: 1}, {2: 1}]
    return make_op("batch_matmul", [b, m, n, k], [3],
                   [[{0: 1}, {1: 1}, {3: 1}], bt, [{0: 1}, {1: 1}, {2: 1}]], (1, 0, 1, 0, 0))


def conv2d(oh: int, ow: int, f: int, kh: int, kw: int, c: int, stride: int = 1) -> Op:
    """O[oh,ow,f] += I[s·oh+kh, s·ow+kw, c] * W[kh,kw,c,f] (NHWC, batch 1); loops (oh, ow, f, kh, kw, c)."""
    return make_op("conv2d", [oh, ow, f, kh, kw, c], [3, 4, 5],
                   [[{0: stride, 3: 1}, {1: stride, 4: 1}, {5: 1}], [{3: 1}, {4: 1}, {5: 1}, {2: 1}],
                    [{0: 1}, {1: 1}, {2: 1}]], (1, 0, 1, 0, 0))


def pooling(oh: int, ow: int, c: int, k: int, stride: int) -> Op:
    """O[oh,ow,c] = max I[s·oh+kh, s·ow+kw, c]; loops (oh, ow, c, kh, kw)."""
    return make_op("pooling", [oh, ow, c, k, k], [3, 4],
                   [[{0: stride, 3: 1}, {1: stride, 4: 1}, {2: 1}], [{0: 1}, {1: 1}, {2: 1}]], (1, 0, 0, 0, 0))


def elementwise(m: int, n: int, kind: str = "bias_add") -> Op:
    """O[i,j] = f(A[i,j], b[j]): bias_add (+), bias_gelu (tanh-GELU ≈ + * exp /), relu (max)."""
    arith = {"bias_add": (1, 0, 0, 0, 0), "bias_gelu": (3, 0, 4, 1, 1), "relu": (1, 0, 0, 0, 0),
             "residual_add": (1, 0, 0, 0, 0)}[kind]
    second = [{1: 1}] if kind in ("bias_add", "bias_gelu") else [{0: 1}, {1: 1}]
    if kind == "relu":
        return make_op("elementwise", [m, n], [], [[{0: 1}, {1: 1}], [{0: 1}, {1: 1}]], arith)
    return make_op("elementwise", [m, n], [], [[{0: 1}, {1: 1}], second, [{0: 1}, {1: 1}]], arith)


def reduction(m: int, k: int, with_exp: bool = False) -> Op:
    """O[i] += f(A[i,k]) (row sum, or softmax denominator with exp); loops (i, k)."""
    return make_op("reduction", [m, k], [1], [[{0: 1}, {1: 1}], [{0: 1}]], (1, 0, 0, 0, int(with_exp)))


def stack_programs(programs: list[tuple[str, list[Op]]]) -> ProgramTable:
    """Pad each program to MAX_OPS ops and stack into a `ProgramTable`."""
    empty = elementwise(1, 1, "relu")
    fields = {name: [] for name in Op._fields}
    valid = []
    for name, ops in programs:
        if not 1 <= len(ops) <= MAX_OPS:
            raise ValueError(f"program {name!r} has {len(ops)} ops; need 1..{MAX_OPS}")
        padded = list(ops) + [empty] * (MAX_OPS - len(ops))
        valid.append([True] * len(ops) + [False] * (MAX_OPS - len(ops)))
        for f in Op._fields:
            fields[f].append([np.asarray(getattr(op, f)) for op in padded])
    arrays = {f: np.asarray(v) for f, v in fields.items()}
    return ProgramTable(op_valid=np.asarray(valid), names=tuple(n for n, _ in programs), **arrays)


def _bert(batch: int, seq: int, tag: str) -> list[tuple[str, list[Op]]]:
    m, h, ffn, heads = batch * seq, 768, 3072, 12
    return [
        (f"{tag}qkv_b{batch}s{seq}", [matmul(m, h, h), elementwise(m, h, "bias_add")]),
        (f"{tag}ffn1_b{batch}s{seq}", [matmul(m, ffn, h), elementwise(m, ffn, "bias_gelu")]),
        (f"{tag}ffn2_b{batch}s{seq}", [matmul(m, h, ffn), elementwise(m, h, "bias_add"),
                                       elementwise(m, h, "residual_add")]),
        (f"{tag}scores_b{batch}s{seq}", [batch_matmul(batch * heads, seq, seq, 64, transpose_b=True),
                                         reduction(batch * heads * seq, seq, with_exp=True)]),
        (f"{tag}context_b{batch}s{seq}", [batch_matmul(batch * heads, seq, 64, seq)]),
    ]


def _resnet(layers: list[tuple[int, int, int, int, int, int]], tag: str) -> list[tuple[str, list[Op]]]:
    out = []
    for hw, c, f, k, s, pool in layers:
        o = hw // s
        ops = [conv2d(o, o, f, k, k, c, s), elementwise(o * o, f, "relu")]
        if pool:
            ops.append(pooling(o // 2, o // 2, f, 3, 2))
        out.append((f"{tag}conv{k}x{k}_{hw}x{c}->{f}s{s}", ops))
    return out


def train_programs() -> ProgramTable:
    """Training set: BERT layers at (batch, seq) ∈ {(1,128),(8,128),(4,64),(1,512)} + ResNet-18 convs."""
    progs = []
    for b, s in [(1, 128), (8, 128), (4, 64), (1, 512)]:
        progs += _bert(b, s, "bert_")
    progs += _resnet([(56, 64, 64, 3, 1, 0), (28, 128, 128, 3, 1, 0), (14, 256, 256, 3, 1, 0),
                      (7, 512, 512, 3, 1, 0), (56, 64, 128, 3, 2, 0), (112, 64, 64, 1, 1, 1)], "r18_")
    progs += [("gap_7x7x512", [reduction(512, 49)]), ("pool_112", [pooling(56, 56, 64, 3, 2)])]
    return stack_programs(progs)


def test_programs() -> ProgramTable:
    """Held-out set: unseen (batch, seq) BERT shapes and ResNet-50 bottleneck convs."""
    progs = []
    for b, s in [(2, 128), (4, 256)]:
        progs += _bert(b, s, "bert_")
    progs += _resnet([(56, 64, 256, 1, 1, 0), (56, 256, 64, 1, 1, 0), (28, 128, 512, 1, 1, 0),
                      (14, 256, 1024, 1, 1, 0), (28, 256, 256, 3, 2, 0), (7, 512, 2048, 1, 1, 0)], "r50_")
    progs += [("gap_7x7x2048", [reduction(2048, 49)]), ("pool_56", [pooling(28, 28, 256, 3, 2)])]
    return stack_programs(progs)


def select_programs(table: ProgramTable, names: list[str] | None) -> ProgramTable:
    """The programs of `table` named in `names`, in that order (None: all); an unknown name raises a
    `ValueError` listing the known ones."""
    if not names:
        return table
    unknown = [n for n in names if n not in table.names]
    if unknown:
        raise ValueError(f"unknown program(s) {unknown}; known: {list(table.names)}")
    idx = [table.names.index(n) for n in names]
    return table._replace(names=tuple(names), **{f: getattr(table, f)[idx] for f in table._fields if f != "names"})
