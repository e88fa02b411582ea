"""AutoTinyBERT's search over the candidates of a latency constraint: `random`, `fast` (only "efficient"
ratios) and `evolved` (population 25, explore rate 0.5, roulette-selected parents mutated by grid
steps), each seeded and with a budget of distinct fitness evaluations. Fitness is any `arch -> loss`
callable (lower is better); `fitness.load_search_setup` gives the SuperNet's held-out masked-LM loss.

Differences from the original's `searcher.py` (its bugs, not its method): mutation retries are capped
(then a fresh candidate is taken and counted), exploring draws from the not-yet-evaluated candidates
instead of looping until it finds one, "already evaluated" compares archs (the original compares dict
strings whose key order differs, so it never matches), the attention grid is the space's (the original's
MLM list lacks 12 heads), the roulette does not degenerate when all parents tie, and the first generation
is drawn here (the original seeds `Evolved` with a separate `Random` run)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .candidates import CandidateSet
from .fitness import Fitness
from .space import Arch, ArchError, SearchSpace

log = logging.getLogger(__name__)

METHODS = ("random", "fast", "evolved")
POPULATION = 25  # the original's `popularity` (= its generation size)
EXPLORE_RATE = 0.5
MAX_RETRIES = 100  # mutation retries before a fresh candidate is taken instead


class SearchError(ValueError):
    """Candidates the search cannot use (outside the SuperNet's space, none efficient) or a bad budget."""


@dataclasses.dataclass(frozen=True)
class Mutation:
    """Per dimension: (probability of moving, largest grid step); the step is drawn uniformly from
    -k..k (0 included) and a move off the grid leaves the dimension unchanged. The defaults are the
    original's `Evolver.mutation` with prob_m = 0.25: layers (0.25, ±1), hidden (0.5, ±1), FFN (0.5,
    ±2), attention — heads in mlm mode, qkv in kd mode — (0.25, ±2)."""

    layers: tuple[float, int] = (0.25, 1)
    hidden: tuple[float, int] = (0.5, 1)
    ffn: tuple[float, int] = (0.5, 2)
    attention: tuple[float, int] = (0.25, 2)


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """One evaluated arch: its place in the run (`order` 0.., `generation`), predicted latency and fitness."""

    order: int
    generation: int
    arch: Arch
    fitness: float
    predicted_ms: float
    speedup: float

    def to_json(self) -> dict[str, Any]:
        return {"order": self.order, "generation": self.generation, "arch": self.arch.to_json(),
                "autotinybert": str(self.arch.to_autotinybert()), "fitness": self.fitness,
                "predicted_ms": self.predicted_ms, "speedup": self.speedup}  # fmt: skip


@dataclasses.dataclass
class SearchResult:
    """A run of one method: every evaluation in order, the mutation fallbacks and notes."""

    method: str
    seed: int
    budget: int
    evaluations: list[Evaluation]
    window_ms: tuple[float, float]
    fallbacks: int = 0  # evolved: mutations that hit the retry cap and took a fresh candidate
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def best(self) -> Evaluation:
        """The lowest fitness (the earliest on ties)."""
        return min(self.evaluations, key=lambda e: (e.fitness, e.order))

    def best_so_far(self) -> np.ndarray:
        """[n] the best fitness after each evaluation."""
        return np.minimum.accumulate([e.fitness for e in self.evaluations])


def _efficient_ffn(arch: Arch) -> bool:
    return all(1.6 * arch.hidden <= f <= 1.9 * arch.hidden for f in arch.layer_ffn)


def _efficient_qkv(arch: Arch) -> bool:
    return all(0.7 * arch.hidden <= q <= arch.hidden for q in arch.layer_qkv)


def is_efficient(arch: Arch) -> bool:
    """AutoTinyBERT's "efficient" ratios: 1.6·H <= FFN <= 1.9·H and 0.7·H <= qkv <= H (in every layer)."""
    return _efficient_ffn(arch) and _efficient_qkv(arch)


def check_candidates(candidates: CandidateSet, space: SearchSpace) -> None:
    """Raise `SearchError` naming (some of) the candidates outside `space` and their count."""
    try:
        space.check_all(candidates.archs)  # all at once when they fit (the usual case)
        return
    except ArchError:
        pass
    bad = []
    for arch in candidates.archs:
        try:
            space.check(arch)
        except ArchError as e:
            bad.append(str(e))
    if bad:
        shown = "\n  ".join(bad[:5]) + ("\n  ..." if len(bad) > 5 else "")
        raise SearchError(f"{len(bad)} of {len(candidates)} candidates lie outside the SuperNet's search space "
                          f"(candidates for space {candidates.meta.get('space')}, SuperNet space {space.to_dict()}); "
                          f"write the candidates for this SuperNet:\n  {shown}")  # fmt: skip


def efficient_indices(candidates: CandidateSet) -> np.ndarray:
    """Indices of the `fast` method's candidates; `SearchError` with the counts when there are none."""
    keep = np.flatnonzero([is_efficient(a) for a in candidates.archs])
    if keep.size == 0:
        ffn_ok = sum(map(_efficient_ffn, candidates.archs))
        qkv_ok = sum(map(_efficient_qkv, candidates.archs))
        raise SearchError(f"method 'fast': none of the {len(candidates)} candidates has efficient ratios "
                          f"(1.6·hidden <= ffn <= 1.9·hidden: {ffn_ok} candidates; 0.7·hidden <= qkv <= hidden: "
                          f"{qkv_ok}; both: 0); use --method random or evolved, or another constraint")  # fmt: skip
    return keep


def resolve_budget(generations: int | None, evaluations: int | None, population: int = POPULATION) -> int:
    """Distinct fitness evaluations of a run: `evaluations`, or `generations` x `population` (default 10
    generations)."""
    if generations is not None and evaluations is not None:
        raise SearchError("give --generations or --evaluations, not both")
    budget = evaluations if evaluations is not None else population * (10 if generations is None else generations)
    if not isinstance(budget, (int, np.integer)) or budget < 1:
        raise SearchError(f"the budget must be at least one evaluation, got generations={generations} "
                          f"evaluations={evaluations}")  # fmt: skip
    return int(budget)


class _Pool:
    """Candidates not yet used by a run, drawn uniformly (rejection while few are used, else exactly)."""

    def __init__(self, indices: np.ndarray, rng: np.random.Generator):
        self.indices, self.rng, self.used = np.asarray(indices), rng, set()

    def remaining(self) -> int:
        return len(self.indices) - len(self.used)

    def add(self, i: int) -> None:
        """A candidate found during the run (an admitted mutant)."""
        self.indices = np.append(self.indices, i)

    def take(self, i: int) -> int:
        self.used.add(int(i))
        return int(i)

    def draw(self) -> int | None:
        if self.remaining() == 0:
            return None
        for _ in range(16):
            i = int(self.indices[self.rng.integers(len(self.indices))])
            if i not in self.used:
                return i
        free = [int(i) for i in self.indices if int(i) not in self.used]
        return free[self.rng.integers(len(free))]


def roulette(losses: Sequence[float], rng: np.random.Generator) -> int:
    """Fitness-proportional selection on losses: weight max(loss) - loss, the original's `perf - min(perf)`
    with perf = -loss (shift- and scale-free; the worst parent gets weight 0); uniform when all tie."""
    w = np.max(losses) - np.asarray(losses, np.float64)
    if not np.isfinite(w).all() or w.sum() <= 0:
        return int(rng.integers(len(losses)))
    return int(rng.choice(len(losses), p=w / w.sum()))


def mutate(arch: Arch, space: SearchSpace, rng: np.random.Generator, mutation: Mutation = Mutation()) -> Arch:
    """`arch` with each dimension moved by a random grid step with its probability (see `Mutation`). In a
    heterogeneous space the FFN width and the attention choice move per layer (each layer with the
    dimension's probability), and layers added by a move copy the last layer."""

    def move(values: Sequence, current: Any, rule: tuple[float, int]) -> Any:
        prob, k = rule
        i = list(values).index(current)
        if rng.random() < prob:
            j = i + int(rng.integers(-k, k + 1))
            if 0 <= j < len(values):
                return values[j]
        return current

    layers = move(space.layer_values, arch.layers, mutation.layers)
    hidden = move(space.hidden_values, arch.hidden, mutation.hidden)
    if not space.heterogeneous:
        ffn = move(space.ffn_values, arch.ffn, mutation.ffn)
        heads, qkv = move(space.attention_choices(), (arch.heads, arch.qkv), mutation.attention)
        return Arch(layers, hidden, heads, qkv, ffn)
    keep = lambda v: (tuple(v) + (v[-1],) * layers)[:layers]  # noqa: E731
    ffn = tuple(move(space.ffn_values, f, mutation.ffn) for f in keep(arch.layer_ffn))
    attention = [move(space.attention_choices(), hq, mutation.attention)
                 for hq in keep(list(zip(arch.layer_heads, arch.layer_qkv)))]  # fmt: skip
    return Arch(layers, hidden, tuple(h for h, _ in attention), tuple(q for _, q in attention), ffn)


def search(method: str, candidates: CandidateSet, fitness: Fitness, *, budget: int, seed: int = 0,
           space: SearchSpace | None = None, population: int = POPULATION, explore_rate: float = EXPLORE_RATE,
           mutation: Mutation = Mutation(), max_retries: int = MAX_RETRIES, progress: bool = True,
           predict: Any = None) -> SearchResult:  # fmt: skip
    """Run `method` ("random" | "fast" | "evolved") over `candidates` for `budget` distinct fitness
    evaluations (fewer if the method's candidates run out: noted), seeded by `seed`. `space` (default the
    candidates' own) is checked to hold every candidate and gives the mutation grid. `predict` (archs ->
    ms; default for a heterogeneous space: the predictor of the candidates' latency directory) lets
    `evolved` take a mutant that is not among the candidates when its predicted latency lies in the
    window: a heterogeneous space's candidates are a sample of its archs (`SearchSpace.scored_archs`)."""
    if method not in METHODS:
        raise SearchError(f"method must be one of {METHODS}, got {method!r}")
    space = space or candidates.space
    check_candidates(candidates, space)
    rng = np.random.default_rng(seed)
    pool_indices = efficient_indices(candidates) if method == "fast" else np.arange(len(candidates))
    result = SearchResult(method, seed, budget, [], candidates.window_ms)
    if budget > len(pool_indices):
        result.notes.append(f"budget {budget} > {len(pool_indices)} {method} candidates: evaluating all of them")
        budget = len(pool_indices)
    index = candidates.index()
    pool = _Pool(pool_indices, rng)
    bar = tqdm(total=budget, desc=f"{method} seed {seed}", unit="arch", disable=not progress, leave=False)
    archs, predicted = list(candidates.archs), list(candidates.predicted_ms)
    if predict is None and method == "evolved" and space.heterogeneous:
        predict = _candidates_predictor(candidates)

    def admit(arch: Arch) -> int | None:
        # the candidate index of `arch`; with `predict`, a new arch whose predicted latency is in the window
        i = index.get(arch)
        if i is None and predict is not None:
            ms = float(predict([arch])[0])
            lo, hi = candidates.window_ms
            if lo <= ms <= hi:
                i = index[arch] = len(archs)
                archs.append(arch)
                predicted.append(ms)
                pool.add(i)
        return i

    def evaluate(i: int, generation: int) -> None:
        arch = archs[i]
        ms = float(predicted[i])
        loss = float(fitness(arch))
        result.evaluations.append(Evaluation(len(result.evaluations), generation, arch, loss, ms,
                                             float(candidates.speedup(ms))))  # fmt: skip
        bar.update(1)

    generation = 0
    while len(result.evaluations) < budget and pool.remaining():
        size = min(population, budget - len(result.evaluations))
        if method != "evolved" or generation == 0:
            chosen = [pool.take(pool.draw()) for _ in range(size)]
        else:
            chosen = _next_generation(result, admit, space, pool, rng, size, population, explore_rate, mutation,
                                      max_retries)  # fmt: skip
        for i in chosen:
            evaluate(i, generation)
        generation += 1
    bar.close()
    if result.fallbacks:
        result.notes.append(f"{result.fallbacks} mutation(s) found no new candidate in {max_retries} tries: "
                            "took a fresh candidate instead")  # fmt: skip
    for note in result.notes:
        log.info("%s seed %d: %s", method, seed, note)
    return result


def _candidates_predictor(candidates: CandidateSet) -> Any:
    # the predictor of the latency directory the candidates came from, or None
    from .latency import PREDICTOR_DIR
    from .predictor import PredictorError, load_predictor

    latency_dir = candidates.meta.get("latency_dir")
    try:
        return load_predictor(os.path.join(latency_dir, PREDICTOR_DIR)) if latency_dir else None
    except PredictorError:
        return None


def _next_generation(result: SearchResult, admit: Any, space: SearchSpace, pool: _Pool, rng: np.random.Generator, size: int, population: int, explore_rate: float,
                     mutation: Mutation, max_retries: int) -> list[int]:  # fmt: skip
    # the `population` best evaluated so far are the parents; each new individual is a fresh candidate
    # (prob. explore_rate) or a mutant of a roulette-selected parent that is a candidate not yet used
    ranked = sorted(result.evaluations, key=lambda e: (e.fitness, e.order))[:population]
    losses = [e.fitness for e in ranked]
    chosen: list[int] = []
    while len(chosen) < size and pool.remaining():
        pick = None
        if rng.random() >= explore_rate:
            parent = ranked[roulette(losses, rng)].arch
            for _ in range(max_retries):
                i = admit(mutate(parent, space, rng, mutation))
                if i is not None and i not in pool.used:
                    pick = i
                    break
            else:
                result.fallbacks += 1
                log.debug("no new candidate among %d mutants of %s: a fresh one instead", max_retries, parent)
        chosen.append(pool.take(pool.draw() if pick is None else pick))
    return chosen


# ---- outputs ----------------------------------------------------------------------------------------------
def summary_row(result: SearchResult) -> dict[str, str]:
    """One row of the summary table: method, seed, evaluations, best arch, fitness, predicted ms, speedup."""
    b = result.best
    return {"method": result.method, "seed": str(result.seed), "evaluations": str(len(result.evaluations)),
            "best arch": str(b.arch), "fitness": f"{b.fitness:.4f}", "predicted ms": f"{b.predicted_ms:.3f}",
            "speedup": f"{b.speedup:.2f}x"}  # fmt: skip


def write_search(out_dir: str | os.PathLike, result: SearchResult, candidates: CandidateSet) -> dict[str, str]:
    """Write evaluated.jsonl (every evaluation), best_arch.txt (AutoTinyBERT's string), best.json and
    pareto.png to `out_dir`; returns their paths."""
    from .search_plots import plot_pareto

    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    paths = {n: os.path.join(out_dir, n) for n in ("evaluated.jsonl", "best_arch.txt", "best.json", "pareto.png")}
    with open(paths["evaluated.jsonl"], "w", encoding="utf-8") as f:
        for e in result.evaluations:
            f.write(json.dumps(e.to_json()) + "\n")
    best = result.best
    with open(paths["best_arch.txt"], "w", encoding="utf-8") as f:
        f.write(str(best.arch.to_autotinybert()) + "\n")
    info = {"method": result.method, "seed": result.seed, "evaluations": len(result.evaluations),
            "budget": result.budget, "fallbacks": result.fallbacks, "notes": result.notes, **best.to_json(),
            "constraint": candidates.meta.get("constraint"), "window_ms": list(result.window_ms),
            "reference_ms": candidates.meta.get("reference_ms"), "device": candidates.meta.get("device")}  # fmt: skip
    with open(paths["best.json"], "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2)
        f.write("\n")
    plot_pareto(result, paths["pareto.png"])
    return paths


def compare_methods(candidates: CandidateSet, fitness: Fitness, *, evaluations: int, seeds: Sequence[int],
                    methods: Sequence[str] = METHODS, space: SearchSpace | None = None,
                    progress: bool = True, **options: Any) -> list[SearchResult]:  # fmt: skip
    """Every method at the same budget of `evaluations` for each seed (`options`: `search`'s). A method
    that cannot run (fast without efficient candidates) raises."""
    return [search(m, candidates, fitness, budget=evaluations, seed=s, space=space, progress=progress, **options)
            for m in methods for s in seeds]  # fmt: skip


def compare_rows(results: Sequence[SearchResult]) -> list[dict[str, str]]:
    """Per method: best fitness mean ± std over seeds, min, max, and evaluations per run."""
    rows = []
    for method in dict.fromkeys(r.method for r in results):
        runs = [r for r in results if r.method == method]
        best = np.array([r.best.fitness for r in runs])
        evals = sorted({len(r.evaluations) for r in runs})
        rows.append({"method": method, "seeds": str(len(runs)), "evaluations": "/".join(map(str, evals)),
                     "best fitness mean ± std": f"{best.mean():.4f} ± {best.std(ddof=1) if len(best) > 1 else 0.0:.4f}",
                     "min": f"{best.min():.4f}", "max": f"{best.max():.4f}"})  # fmt: skip
    return rows
