"""The search space of AutoTinyBERT-style architecture search and the `Arch` of one sub-network.

An arch is uniform over its layers (as AutoTinyBERT's samplers): layer count, hidden size, heads,
attention (q/k/v) width and FFN width. Two modes, as the original:

- "mlm": heads vary, qkv = head_size (64) × heads;
- "kd":  heads fixed (`kd_heads`, 12), qkv varies on its grid.

Read from a JSON object like AutoTinyBERT's `super_config` (see `SearchSpace.from_dict`)."""

from __future__ import annotations

import ast
import dataclasses
import itertools
import json
from collections.abc import Iterator
from typing import Any

import numpy as np

MODES = ("mlm", "kd")
AUTOTINYBERT_KEYS = ("sample_layer_num", "sample_hidden_size", "sample_num_attention_heads", "sample_qkv_sizes",
                     "sample_intermediate_sizes")  # fmt: skip
# upper bounds of every space: the original's maxima (its space: layers 1–8, hidden 128–768, qkv 180–768,
# FFN 128–3072, heads 1–12 — the defaults below); minima may go lower, for tiny test SuperNets
LIMITS = {"layers": (1, 8), "hidden": (1, 768), "qkv": (1, 768), "ffn": (1, 3072), "heads": (1, 12)}


class ArchError(ValueError):
    """An arch (or search space) that is malformed or outside the space; the message names the field."""


@dataclasses.dataclass(frozen=True, order=True)
class Arch:
    """One sub-network: `layers` blocks, each with hidden size `hidden`, `heads` attention heads over an
    attention width `qkv` (head size qkv / heads) and FFN width `ffn`."""

    layers: int
    hidden: int
    heads: int
    qkv: int
    ffn: int

    def to_autotinybert(self) -> dict[str, Any]:
        """AutoTinyBERT's dict: {'sample_layer_num': L, 'sample_num_attention_heads': [h]*L, …}."""
        n = self.layers
        return {"sample_layer_num": n, "sample_num_attention_heads": [self.heads] * n,
                "sample_qkv_sizes": [self.qkv] * n, "sample_hidden_size": self.hidden,
                "sample_intermediate_sizes": [self.ffn] * n}  # fmt: skip

    def to_json(self) -> dict[str, int]:
        """{"layers": …, "hidden": …, "heads": …, "qkv": …, "ffn": …}."""
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        return f"L{self.layers}_H{self.hidden}_A{self.heads}_Q{self.qkv}_F{self.ffn}"


def _uniform(value: Any, field: str, layers: int) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise ArchError(f"{field} must be an int or a list of {layers} ints, got {value!r}")
    if len(value) != layers:
        raise ArchError(f"{field} has {len(value)} entries but sample_layer_num is {layers}: one per layer")
    if len(set(value)) > 1:
        raise ArchError(f"{field} = {list(value)} differs between layers; layers must be uniform (one value)")
    return value[0]


def arch_from_dict(data: dict[str, Any]) -> Arch:
    """An `Arch` from AutoTinyBERT's dict (lists per layer, uniform) or from {"layers", "hidden", "heads",
    "qkv", "ffn"}."""
    if not isinstance(data, dict):
        raise ArchError(f"an arch must be a dict, got {type(data).__name__}")
    ours = [f.name for f in dataclasses.fields(Arch)]
    keys = AUTOTINYBERT_KEYS if any(k.startswith("sample_") for k in data) else tuple(ours)
    missing, unknown = [k for k in keys if k not in data], sorted(set(data) - set(keys))
    if missing or unknown:
        raise ArchError(f"arch keys: missing {missing}, unknown {unknown}; expected {list(keys)}")
    if keys == tuple(ours):
        values = {k: _uniform(data[k], k, 1) if not isinstance(data[k], int) else data[k] for k in ours}
        return Arch(**values)
    layers = data["sample_layer_num"]
    if not isinstance(layers, int) or isinstance(layers, bool) or layers < 1:
        raise ArchError(f"sample_layer_num must be a positive int, got {layers!r}")
    return Arch(layers=layers, hidden=_uniform(data["sample_hidden_size"], "sample_hidden_size", 1),
                heads=_uniform(data["sample_num_attention_heads"], "sample_num_attention_heads", layers),
                qkv=_uniform(data["sample_qkv_sizes"], "sample_qkv_sizes", layers),
                ffn=_uniform(data["sample_intermediate_sizes"], "sample_intermediate_sizes", layers))  # fmt: skip


def parse_arch(text: str | dict | Arch) -> Arch:
    """An `Arch` from AutoTinyBERT's string (a Python dict literal, single quotes), plain JSON, a dict
    or an `Arch`. Not validated against a space: see `SearchSpace.check`."""
    if isinstance(text, Arch):
        return text
    if isinstance(text, dict):
        return arch_from_dict(text)
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        try:
            data = ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError) as e:
            raise ArchError(f"malformed arch string {text!r}: neither JSON nor a Python dict literal ({e})") from None
    return arch_from_dict(data)


def _grid(lo: int, hi: int, step: int) -> tuple[int, ...]:
    return tuple(range(lo, hi + 1, step))


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """Ranges (inclusive) and grid steps of each dimension; see the module docstring for the modes."""

    mode: str = "mlm"
    layer_num_space: tuple[int, int] = (1, 8)
    hidden_size_space: tuple[int, int] = (128, 768)
    intermediate_size_space: tuple[int, int] = (128, 3072)
    head_num_space: tuple[int, int] = (1, 12)  # mlm mode: the heads' range
    qkv_size_space: tuple[int, int] = (180, 768)  # kd mode: the attention width's range
    hidden_step: int = 16
    intermediate_step: int = 32
    qkv_step: int = 12
    head_size: int = 64  # mlm mode: qkv = head_size × heads
    kd_heads: int = 12  # kd mode: the fixed head count

    def __post_init__(self):
        p = []
        if self.mode not in MODES:
            p.append(f"mode must be one of {MODES}, got {self.mode!r}")
        for name, limit in (("layer_num_space", "layers"), ("hidden_size_space", "hidden"),
                            ("intermediate_size_space", "ffn"), ("head_num_space", "heads"),
                            ("qkv_size_space", "qkv")):  # fmt: skip
            value = getattr(self, name)
            if (not isinstance(value, (tuple, list)) or len(value) != 2
                    or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)):  # fmt: skip
                p.append(f"{name} must be [min, max] ints, got {value!r}")
                continue
            object.__setattr__(self, name, tuple(value))
            lo, hi = LIMITS[limit]
            if not lo <= value[0] <= value[1] <= hi:
                p.append(f"{name} {list(value)} must satisfy {lo} <= min <= max <= {hi}")
        for name in ("hidden_step", "intermediate_step", "qkv_step", "head_size", "kd_heads"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                p.append(f"{name} must be a positive int, got {v!r}")
        if not p:
            for name, step in (("hidden_size_space", self.hidden_step), ("intermediate_size_space", self.intermediate_step),
                               ("qkv_size_space", self.qkv_step)):  # fmt: skip
                lo, hi = getattr(self, name)
                if (hi - lo) % step:
                    p.append(f"{name} max {hi} is not on the grid {lo} + k*{step} (the SuperNet is the grid's max)")
            if self.mode == "kd" and any(q % self.kd_heads for q in self.qkv_values):
                p.append(f"kd mode: every qkv size must be divisible by kd_heads={self.kd_heads}; "
                         f"qkv_size_space {list(self.qkv_size_space)} step {self.qkv_step} is not")  # fmt: skip
        if p:
            raise ArchError("invalid search space: " + "; ".join(p))

    # ---- the grids ----------------------------------------------------------------------------------
    @property
    def layer_values(self) -> tuple[int, ...]:
        return _grid(*self.layer_num_space, 1)

    @property
    def hidden_values(self) -> tuple[int, ...]:
        return _grid(*self.hidden_size_space, self.hidden_step)

    @property
    def ffn_values(self) -> tuple[int, ...]:
        return _grid(*self.intermediate_size_space, self.intermediate_step)

    @property
    def qkv_values(self) -> tuple[int, ...]:
        if self.mode == "mlm":
            return tuple(self.head_size * h for h in self.head_values)
        return _grid(*self.qkv_size_space, self.qkv_step)

    @property
    def head_values(self) -> tuple[int, ...]:
        return _grid(*self.head_num_space, 1) if self.mode == "mlm" else (self.kd_heads,)

    def attention_choices(self) -> tuple[tuple[int, int], ...]:
        """The (heads, qkv) pairs of the mode."""
        if self.mode == "mlm":
            return tuple((h, self.head_size * h) for h in self.head_values)
        return tuple((self.kd_heads, q) for q in self.qkv_values)

    def size(self) -> int:
        """How many archs the space holds."""
        return len(self.layer_values) * len(self.hidden_values) * len(self.ffn_values) * len(self.attention_choices())

    def smallest(self) -> Arch:
        (h, q) = self.attention_choices()[0]
        return Arch(self.layer_values[0], self.hidden_values[0], h, q, self.ffn_values[0])

    def largest(self) -> Arch:
        (h, q) = self.attention_choices()[-1]
        return Arch(self.layer_values[-1], self.hidden_values[-1], h, q, self.ffn_values[-1])

    def sample(self, rng: np.random.Generator) -> Arch:
        """A uniformly random arch (each dimension drawn uniformly from its grid)."""
        h, q = self.attention_choices()[rng.integers(len(self.attention_choices()))]
        pick = lambda values: int(values[rng.integers(len(values))])  # noqa: E731
        return Arch(pick(self.layer_values), pick(self.hidden_values), h, q, pick(self.ffn_values))

    def arch_at(self, seed: int, index: int) -> Arch:
        """Arch `index` of the seeded stream: a pure function of (seed, index), so a resumed run draws
        the same archs as an uninterrupted one."""
        return self.sample(np.random.default_rng((seed, index)))

    def archs(self) -> Iterator[Arch]:
        """Every arch of the space (layers, hidden, attention, ffn order)."""
        for layers, hidden, (h, q), ffn in itertools.product(self.layer_values, self.hidden_values,
                                                            self.attention_choices(), self.ffn_values):  # fmt: skip
            yield Arch(layers, hidden, h, q, ffn)

    # ---- checking -----------------------------------------------------------------------------------
    def check(self, arch: Arch | str | dict) -> Arch:
        """`arch` parsed and checked: raises `ArchError` naming each field outside the space and its range."""
        arch = parse_arch(arch)
        p = []

        def on_grid(field: str, value: int, values: tuple[int, ...], desc: str) -> None:
            if value not in values:
                p.append(f"{field}={value} is not in the search space ({desc})")

        on_grid("layers (sample_layer_num)", arch.layers, self.layer_values, "{}..{}".format(*self.layer_num_space))
        on_grid("hidden (sample_hidden_size)", arch.hidden, self.hidden_values,
                "{}..{} step {}".format(*self.hidden_size_space, self.hidden_step))
        on_grid("ffn (sample_intermediate_sizes)", arch.ffn, self.ffn_values,
                "{}..{} step {}".format(*self.intermediate_size_space, self.intermediate_step))
        if arch.heads < 1 or arch.qkv % arch.heads:
            p.append(f"heads={arch.heads} must divide qkv={arch.qkv} (sample_num_attention_heads / sample_qkv_sizes)")
        elif self.mode == "mlm":
            on_grid("heads (sample_num_attention_heads)", arch.heads, self.head_values,
                    "{}..{}".format(*self.head_num_space))
            if arch.qkv != self.head_size * arch.heads:
                p.append(f"qkv (sample_qkv_sizes)={arch.qkv}: mlm mode needs qkv = {self.head_size} x heads "
                         f"= {self.head_size * arch.heads}")  # fmt: skip
        else:
            if arch.heads != self.kd_heads:
                p.append(f"heads (sample_num_attention_heads)={arch.heads}: kd mode fixes heads at {self.kd_heads}")
            on_grid("qkv (sample_qkv_sizes)", arch.qkv, self.qkv_values,
                    "{}..{} step {}".format(*self.qkv_size_space, self.qkv_step))
        if p:
            raise ArchError(f"arch {arch} is outside the search space: " + "; ".join(p))
        return arch

    # ---- JSON -----------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SearchSpace":
        """From a dict like AutoTinyBERT's `super_config`: `layer_num_space`, `hidden_size_space`,
        `intermediate_size_space`, `head_num_space`, `qkv_size_space` ([min, max] each), the steps and `mode`."""
        if not isinstance(data, dict):
            raise ArchError(f"a search space must be a JSON object, got {type(data).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ArchError(f"unknown search-space key(s) {unknown}; expected some of {names}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}
