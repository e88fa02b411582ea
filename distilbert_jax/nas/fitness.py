"""One-shot fitness for the search: the SuperNet's held-out masked-LM loss at an arch (lower is better),
on the same batches for every arch, one jitted evaluation per arch (one program per bucket)."""

from __future__ import annotations

import dataclasses
import itertools
import os
import time
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp

from .space import Arch

Fitness = Callable[[Arch], float]  # arch -> a loss to minimise


class SearchSetupError(ValueError):
    """A path that is neither a SuperNet run directory nor a SuperNet directory inside one."""


@dataclasses.dataclass
class SearchSetup:
    """A trained SuperNet with its held-out batches, materialised once: `fitness(arch)` is the masked-LM
    loss at `arch` on `batches`, the same data for every arch."""

    supernet: Any  # SuperNet
    params: dict
    batches: list[dict]  # held-out MLM batches (input_ids, attention_mask, labels), on device
    evaluator: Any  # ArchEvaluator
    run_dir: str
    supernet_dir: str

    def metrics(self, arch: Arch | str | dict) -> dict[str, float]:
        """{"loss", "accuracy", "perplexity"} of the SuperNet at `arch` on the held-out batches."""
        return self.evaluator(self.params, arch, self.batches)

    def fitness(self, arch: Arch) -> float:
        """The held-out masked-LM loss at `arch` (lower is better)."""
        return self.metrics(arch)["loss"]


def _resolve(path: str) -> tuple[str, str]:
    from .io import SPACE_FILE, find_supernet_dir

    supernet_dir = find_supernet_dir(path)
    run_dir = os.path.dirname(os.path.abspath(supernet_dir)) if supernet_dir else path
    if supernet_dir and os.path.isfile(os.path.join(run_dir, "nas_config.json")):
        return run_dir, supernet_dir
    parent = os.path.dirname(os.path.abspath(path))
    has_config = any(os.path.isfile(os.path.join(d, "nas_config.json")) for d in (path, parent))
    raise SearchSetupError(
        f"{path}: expected a SuperNet run directory (the --out-dir of `python -m distilbert_jax.nas train`, holding "
        f"nas_config.json and supernet/{SPACE_FILE}) or its supernet/ directory; "
        f"found nas_config.json: {has_config}, {SPACE_FILE}: {supernet_dir is not None}")  # fmt: skip


def load_search_setup(path: str | os.PathLike, eval_batches: int | None = None) -> SearchSetup:
    """The SuperNet of a training run and its held-out batches. `path`: the run directory (holding
    nas_config.json and supernet/) or the SuperNet directory inside it. The batches are rebuilt from the
    run's resolved config (`make_sources(cfg).make_eval()`, `eval_batches` of them, default the run's),
    tokenized with the SuperNet directory's tokenizer when the config names none."""
    from distilbert_jax.jsonfile import read_json_object
    from distilbert_jax.train.sources import make_sources
    from distilbert_jax.train.tasks import mlm_max_predictions

    from .config import nas_config_from_dict
    from .io import load_supernet
    from .step import ArchEvaluator

    run_dir, supernet_dir = _resolve(os.fspath(path))
    _, cfg = nas_config_from_dict(read_json_object(os.path.join(run_dir, "nas_config.json"), SearchSetupError))
    changes: dict[str, Any] = {"out_dir": run_dir}
    if not cfg.tokenizer and os.path.isfile(os.path.join(supernet_dir, "tokenizer.json")):
        changes["tokenizer"] = supernet_dir
    cfg = cfg.replace(**changes)
    supernet, params = load_supernet(supernet_dir)
    n = cfg.eval_batches if eval_batches is None else eval_batches
    if n < 1:
        raise SearchSetupError(f"eval_batches must be >= 1, got {n}")
    data = make_sources(cfg)
    if data.vocab_size != supernet.base.vocab_size:
        raise SearchSetupError(f"{run_dir}: the held-out data's vocabulary ({data.vocab_size}) is not the SuperNet's "
                               f"({supernet.base.vocab_size})")  # fmt: skip
    batches = [{k: jnp.asarray(v) for k, v in b.items()} for b in itertools.islice(data.make_eval(), n)]
    if not batches:
        raise SearchSetupError(f"{run_dir}: the run's evaluation data yields no batches")
    evaluator = ArchEvaluator(supernet, mlm_max_predictions(cfg))
    return SearchSetup(supernet, params, batches, evaluator, run_dir, supernet_dir)


class CachedFitness:
    """`fitness` memoised per arch (fitness is deterministic, so runs may share it); `seconds` holds the
    wall time of each computed (not cached) value, in order."""

    def __init__(self, fitness: Fitness):
        self.fitness = fitness
        self.cache: dict[Arch, float] = {}
        self.seconds: list[float] = []

    def __call__(self, arch: Arch) -> float:
        if arch not in self.cache:
            start = time.perf_counter()
            self.cache[arch] = float(self.fitness(arch))
            self.seconds.append(time.perf_counter() - start)
        return self.cache[arch]
