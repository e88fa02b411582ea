"""The search space of AutoTinyBERT-style architecture search and the `Arch` of one sub-network.

An arch is a layer count, a hidden size, and per layer the heads, the attention (q/k/v) width and the FFN
width. A space is uniform by default (every layer alike, as AutoTinyBERT's samplers); `heterogeneous: true`
lets heads / qkv and FFN width differ between layers (hidden stays shared, as HAT). Two modes, as the
original:

- "mlm": heads vary, qkv = head_size (64) × heads;
- "kd":  heads fixed (`kd_heads`, 12), qkv varies on its grid.

Read from a JSON object like AutoTinyBERT's `super_config` (see `SearchSpace.from_dict`)."""

from __future__ import annotations

import ast
import dataclasses
import functools
import itertools
import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

MODES = ("mlm", "kd")
AUTOTINYBERT_KEYS = ("sample_layer_num", "sample_hidden_size", "sample_num_attention_heads", "sample_qkv_sizes",
                     "sample_intermediate_sizes")  # fmt: skip
# upper bounds of every space: the original's maxima (its space: layers 1–8, hidden 128–768, qkv 180–768,
# FFN 128–3072, heads 1–12 — the defaults below), layers up to BERT-base's 12 (configs/supernet_base.json);
# minima may go lower, for tiny test SuperNets
LIMITS = {"layers": (1, 12), "hidden": (1, 768), "qkv": (1, 768), "ffn": (1, 3072), "heads": (1, 12)}


class ArchError(ValueError):
    """An arch (or search space) that is malformed or outside the space; the message names the field."""


PER_LAYER = ("heads", "qkv", "ffn")  # the fields an arch may vary between layers (hidden is shared)
_SHORT = re.compile(r"L(\d+)_H(\d+)_A(\d+(?:-\d+)*)_Q(\d+(?:-\d+)*)_F(\d+(?:-\d+)*)", re.IGNORECASE)
ARCH_FORMATS = (
    "accepted arch formats:\n"
    "  short form (as the tables print it):  L4_H256_A4_Q256_F512\n"
    "    per layer (a value per layer, joined by '-'):  L2_H256_A2-4_Q128-256_F512-1024\n"
    "  AutoTinyBERT's dict (a Python literal):  {'sample_layer_num': 2, 'sample_hidden_size': 256, "
    "'sample_num_attention_heads': [4, 4], 'sample_qkv_sizes': [256, 256], 'sample_intermediate_sizes': [512, 512]}\n"
    "  JSON:  {\"layers\": 2, \"hidden\": 256, \"heads\": 4, \"qkv\": 256, \"ffn\": 512}  "
    "(heads / qkv / ffn may be lists, one value per layer)"
)


@functools.total_ordering
@dataclasses.dataclass(frozen=True, eq=True)
class Arch:
    """One sub-network: `layers` blocks of hidden size `hidden`, each with `heads` attention heads over an
    attention width `qkv` (head size qkv / heads) and FFN width `ffn`. `heads`, `qkv` and `ffn` are ints
    (uniform layers, as AutoTinyBERT) or tuples of one value per layer (heterogeneous layers, as HAT); a
    tuple whose values are all equal is stored as the int, so every arch has one spelling."""

    layers: int
    hidden: int
    heads: int | tuple[int, ...]
    qkv: int | tuple[int, ...]
    ffn: int | tuple[int, ...]

    def __post_init__(self):
        for name in PER_LAYER:
            value = getattr(self, name)
            if isinstance(value, (list, tuple)):
                value = tuple(value)
                if len(value) != self.layers:
                    raise ArchError(f"{name} has {len(value)} per-layer values but layers is {self.layers}: one per layer")
                object.__setattr__(self, name, value[0] if len(set(value)) == 1 else value)

    def per_layer(self, name: str) -> tuple[int, ...]:
        """`heads`, `qkv` or `ffn` as one value per layer."""
        value = getattr(self, name)
        return value if isinstance(value, tuple) else (value,) * self.layers

    @property
    def layer_heads(self) -> tuple[int, ...]:
        return self.per_layer("heads")

    @property
    def layer_qkv(self) -> tuple[int, ...]:
        return self.per_layer("qkv")

    @property
    def layer_ffn(self) -> tuple[int, ...]:
        return self.per_layer("ffn")

    @property
    def uniform(self) -> bool:
        """Whether every layer has the same heads, qkv and FFN width."""
        return not any(isinstance(getattr(self, n), tuple) for n in PER_LAYER)

    def _key(self) -> tuple:
        return (self.layers, self.hidden, self.layer_heads, self.layer_qkv, self.layer_ffn)

    def __lt__(self, other: "Arch") -> bool:
        if not isinstance(other, Arch):
            return NotImplemented
        return self._key() < other._key()

    def to_autotinybert(self) -> dict[str, Any]:
        """AutoTinyBERT's dict: {'sample_layer_num': L, 'sample_num_attention_heads': [h]*L, …}."""
        return {"sample_layer_num": self.layers, "sample_num_attention_heads": list(self.layer_heads),
                "sample_qkv_sizes": list(self.layer_qkv), "sample_hidden_size": self.hidden,
                "sample_intermediate_sizes": list(self.layer_ffn)}  # fmt: skip

    def to_json(self) -> dict[str, int | list[int]]:
        """{"layers": …, "hidden": …, "heads": …, "qkv": …, "ffn": …} (lists for per-layer values)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def __str__(self) -> str:
        """The short form: L2_H224_A2_Q128_F128; per-layer values joined by '-': L2_H224_A2-4_Q128-256_F128-512."""
        j = lambda v: "-".join(map(str, v)) if isinstance(v, tuple) else str(v)  # noqa: E731
        return f"L{self.layers}_H{self.hidden}_A{j(self.heads)}_Q{j(self.qkv)}_F{j(self.ffn)}"


def _ints(value: Any, field: str, layers: int, layers_field: str = "sample_layer_num") -> int | tuple[int, ...]:
    # an int (every layer) or a list of `layers` ints (one per layer)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise ArchError(f"{field} must be an int or a list of {layers} ints (one per layer), got {value!r}")
    if len(value) != layers:
        raise ArchError(f"{field} has {len(value)} entries but {layers_field} is {layers}: one per layer")
    return tuple(value)


def _positive_layers(layers: Any, field: str) -> int:
    if not isinstance(layers, int) or isinstance(layers, bool) or layers < 1:
        raise ArchError(f"{field} must be a positive int, got {layers!r}")
    return layers


def arch_from_dict(data: dict[str, Any]) -> Arch:
    """An `Arch` from AutoTinyBERT's dict (lists per layer) or from {"layers", "hidden", "heads", "qkv",
    "ffn"} (ints, or lists of one value per layer for heads / qkv / ffn)."""
    if not isinstance(data, dict):
        raise ArchError(f"an arch must be a dict, got {type(data).__name__}")
    ours = [f.name for f in dataclasses.fields(Arch)]
    keys = AUTOTINYBERT_KEYS if any(k.startswith("sample_") for k in data) else tuple(ours)
    missing, unknown = [k for k in keys if k not in data], sorted(set(data) - set(keys))
    if missing or unknown:
        raise ArchError(f"arch keys: missing {missing}, unknown {unknown}; expected {list(keys)}")
    if keys == tuple(ours):
        layers = _positive_layers(data["layers"], "layers")
        hidden = _ints(data["hidden"], "hidden", 1)
        return Arch(layers, hidden[0] if isinstance(hidden, tuple) else hidden,
                    *(_ints(data[k], k, layers, "layers") for k in PER_LAYER))  # fmt: skip
    layers = _positive_layers(data["sample_layer_num"], "sample_layer_num")
    hidden = _ints(data["sample_hidden_size"], "sample_hidden_size", 1)
    return Arch(layers=layers, hidden=hidden[0] if isinstance(hidden, tuple) else hidden,
                heads=_ints(data["sample_num_attention_heads"], "sample_num_attention_heads", layers),
                qkv=_ints(data["sample_qkv_sizes"], "sample_qkv_sizes", layers),
                ffn=_ints(data["sample_intermediate_sizes"], "sample_intermediate_sizes", layers))  # fmt: skip


def arch_from_short(text: str) -> Arch | None:
    """The arch of a short-form string (`L2_H224_A2_Q128_F128`, per layer `L2_H224_A2-4_Q128-256_F128-512`),
    or None when `text` is not in that form."""
    m = _SHORT.fullmatch(text.strip())
    if m is None:
        return None
    layers, hidden = int(m.group(1)), int(m.group(2))
    values = []
    for letter, name, group in zip("AQF", PER_LAYER, m.groups()[2:]):
        parts = tuple(int(v) for v in group.split("-"))
        if len(parts) not in (1, layers):
            raise ArchError(f"arch {text.strip()!r}: {letter}{group} ({name}) has {len(parts)} values but L{layers} "
                            f"has {layers} layers: give one value (every layer) or {layers}, joined by '-'\n{ARCH_FORMATS}")
        values.append(parts[0] if len(parts) == 1 else parts)
    return Arch(layers, hidden, *values)


def parse_arch(text: str | dict | Arch) -> Arch:
    """An `Arch` from the short form the tables print (`L2_H224_A2_Q128_F128`; per layer
    `L2_H224_A2-4_Q128-256_F128-512`), AutoTinyBERT's string (a Python dict literal, single quotes), plain
    JSON, a dict or an `Arch`. Not validated against a space: see `SearchSpace.check`. A malformed string
    raises `ArchError` listing the accepted formats with an example of each."""
    if isinstance(text, Arch):
        return text
    if isinstance(text, dict):
        return arch_from_dict(text)
    if not isinstance(text, str):
        raise ArchError(f"an arch must be a string, a dict or an Arch, got {type(text).__name__}\n{ARCH_FORMATS}")
    short = arch_from_short(text)
    if short is not None:
        return short
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        try:
            data = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            raise ArchError(f"malformed arch string {text!r}: neither the short form, JSON nor a Python dict "
                            f"literal\n{ARCH_FORMATS}") from None  # fmt: skip
    if not isinstance(data, dict):
        raise ArchError(f"malformed arch string {text!r}: it is a {type(data).__name__}, not an arch\n{ARCH_FORMATS}")
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
    heterogeneous: bool = False  # True: heads / qkv and FFN width may differ between layers (HAT)

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
        if not isinstance(self.heterogeneous, bool):
            p.append(f"heterogeneous must be true or false, got {self.heterogeneous!r}")
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
        """How many archs the space holds (heterogeneous: every per-layer combination)."""
        per_layer = len(self.ffn_values) * len(self.attention_choices())
        if not self.heterogeneous:
            return len(self.layer_values) * len(self.hidden_values) * per_layer
        return len(self.hidden_values) * sum(per_layer**n for n in self.layer_values)

    def smallest(self) -> Arch:
        (h, q) = self.attention_choices()[0]
        return Arch(self.layer_values[0], self.hidden_values[0], h, q, self.ffn_values[0])

    def largest(self) -> Arch:
        (h, q) = self.attention_choices()[-1]
        return Arch(self.layer_values[-1], self.hidden_values[-1], h, q, self.ffn_values[-1])

    def sample(self, rng: np.random.Generator) -> Arch:
        """A random arch: each dimension drawn uniformly from its grid (heterogeneous: each layer's
        attention and FFN width drawn independently)."""
        h, q = self.attention_choices()[rng.integers(len(self.attention_choices()))]
        pick = lambda values: int(values[rng.integers(len(values))])  # noqa: E731
        arch = Arch(pick(self.layer_values), pick(self.hidden_values), h, q, pick(self.ffn_values))
        if not self.heterogeneous:
            return arch
        choices = self.attention_choices()
        attention = [choices[rng.integers(len(choices))] for _ in range(arch.layers)]
        ffn = tuple(pick(self.ffn_values) for _ in range(arch.layers))
        return Arch(arch.layers, arch.hidden, tuple(a[0] for a in attention), tuple(a[1] for a in attention), ffn)

    def arch_at(self, seed: int, index: int) -> Arch:
        """Arch `index` of the seeded stream: a pure function of (seed, index), so a resumed run draws
        the same archs as an uninterrupted one."""
        return self.sample(np.random.default_rng((seed, index)))

    def archs(self) -> Iterator[Arch]:
        """Every arch of the space (layers, hidden, attention, ffn order; heterogeneous: every per-layer
        combination, `size()` of them — enumerate only small spaces, else see `uniform_archs`)."""
        if not self.heterogeneous:
            yield from self.uniform_archs()
            return
        layer = list(itertools.product(self.attention_choices(), self.ffn_values))
        for layers, hidden in itertools.product(self.layer_values, self.hidden_values):
            for combo in itertools.product(layer, repeat=layers):
                yield Arch(layers, hidden, tuple(a[0] for a, _ in combo), tuple(a[1] for a, _ in combo),
                           tuple(f for _, f in combo))  # fmt: skip

    def scored_archs(self, limit: int = 200_000, seed: int = 0) -> list[Arch]:
        """The archs a latency constraint is applied to: every arch of the space, or — a heterogeneous space
        of more than `limit` — every uniform arch plus distinct seeded random per-layer ones, `limit` in all."""
        if not self.heterogeneous or self.size() <= limit:
            return list(self.archs())
        chosen = dict.fromkeys(self.uniform_archs())
        rng = np.random.default_rng(seed)
        while len(chosen) < limit:
            chosen.setdefault(self.sample(rng))
        return list(chosen)

    def uniform_archs(self) -> Iterator[Arch]:
        """Every arch whose layers are alike (all of a uniform space)."""
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
        if not arch.uniform and not self.heterogeneous:
            for name, key in zip(PER_LAYER, ("sample_num_attention_heads", "sample_qkv_sizes", "sample_intermediate_sizes")):
                if isinstance(getattr(arch, name), tuple):
                    p.append(f"{key} = {list(getattr(arch, name))} differs between layers; this search space is uniform "
                             "(one value per arch; set \"heterogeneous\": true in the space for per-layer sizes)")
            raise ArchError(f"arch {arch} is outside the search space: " + "; ".join(p))
        for i in range(arch.layers):
            at = f" of layer {i}" if not arch.uniform else ""
            heads, qkv, ffn = arch.layer_heads[i], arch.layer_qkv[i], arch.layer_ffn[i]
            on_grid(f"ffn (sample_intermediate_sizes){at}", ffn, self.ffn_values,
                    "{}..{} step {}".format(*self.intermediate_size_space, self.intermediate_step))
            if heads < 1 or qkv % heads:
                p.append(f"heads={heads} must divide qkv={qkv}{at} (sample_num_attention_heads / sample_qkv_sizes)")
            elif self.mode == "mlm":
                on_grid(f"heads (sample_num_attention_heads){at}", heads, self.head_values,
                        "{}..{}".format(*self.head_num_space))
                if qkv != self.head_size * heads:
                    p.append(f"qkv (sample_qkv_sizes){at}={qkv}: mlm mode needs qkv = {self.head_size} x heads "
                             f"= {self.head_size * heads}")  # fmt: skip
            else:
                if heads != self.kd_heads:
                    p.append(f"heads (sample_num_attention_heads){at}={heads}: kd mode fixes heads at {self.kd_heads}")
                on_grid(f"qkv (sample_qkv_sizes){at}", qkv, self.qkv_values,
                        "{}..{} step {}".format(*self.qkv_size_space, self.qkv_step))
            if arch.uniform:
                break
        if p:
            raise ArchError(f"arch {arch} is outside the search space: " + "; ".join(p))
        return arch

    def check_all(self, archs: Iterable[Arch | str | dict]) -> list[Arch]:
        """`check` of each arch (the first bad one raises `ArchError`); uniform `Arch`es are checked at once
        (a whole space's archs in well under a second), the others one by one."""
        archs = list(archs)
        rows = np.array([(a.layers, a.hidden, a.heads, a.qkv, a.ffn) if isinstance(a, Arch) and a.uniform else (0,) * 5
                         for a in archs], np.int64).reshape(-1, 5)  # fmt: skip
        pairs = [h * 100_000 + q for h, q in self.attention_choices()]
        ok = (np.isin(rows[:, 0], self.layer_values) & np.isin(rows[:, 1], self.hidden_values)
              & np.isin(rows[:, 2] * 100_000 + rows[:, 3], pairs) & np.isin(rows[:, 4], self.ffn_values))  # fmt: skip
        return [a if good else self.check(a) for a, good in zip(archs, ok)]

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
