"""Search over the candidates of a latency constraint: budgets, seeds, candidates only, the mutation cap,
bad candidates, one compilation per bucket (never per arch), and the search / compare CLI."""

import dataclasses
import json

import numpy as np
import pytest

import distilbert_jax as dj
from distilbert_jax.nas import Arch, SearchSpace, SuperNet, save_supernet
from distilbert_jax.nas.candidates import CandidateSet, read_candidates, select_candidates, write_candidates
from distilbert_jax.nas.cli import main
from distilbert_jax.nas.config import nas_config_from_dict
from distilbert_jax.nas.fitness import CachedFitness, SearchSetupError, load_search_setup
from distilbert_jax.nas.search import SearchError, is_efficient, mutate, search
from distilbert_jax.nas.search_plots import pareto_front
from distilbert_jax.train import enable_compile_cache

from .conftest import TINY_SPACE, noisy

enable_compile_cache()

# the small config's space (1872 archs) for the synthetic-fitness tests; a tiny one with efficient archs for
# the real SuperNet
SMALL_SPACE = SearchSpace.from_dict({"layer_num_space": [1, 4], "hidden_size_space": [128, 256], "head_num_space": [1, 4],
                                     "intermediate_size_space": [128, 512]})  # fmt: skip
TINY_EFF = {"layer_num_space": [1, 2], "hidden_size_space": [32, 64], "hidden_step": 16, "head_num_space": [1, 4],
            "head_size": 16, "intermediate_size_space": [32, 128], "intermediate_step": 8}  # fmt: skip


def predict(archs):  # a synthetic latency predictor: proportional to the encoder's weights
    return np.array([a.layers * a.hidden * (a.qkv + a.ffn) for a in archs], np.float64) / 1000


def candidates_of(space, constraint, window=(0.85, 1.1)):
    return select_candidates(space, predict, constraint, 100.0, window, meta={"device": "synthetic"})


SMALL_CANDS = candidates_of(SMALL_SPACE, "300ms")
OPTIMUM = SMALL_CANDS.archs[len(SMALL_CANDS) // 3]


def synthetic_loss(arch):
    """A deterministic landscape: 1 + the L1 distance in grid steps to OPTIMUM (its minimum, 1.0)."""
    s = SMALL_SPACE
    idx = lambda a: np.array([s.layer_values.index(a.layers), s.hidden_values.index(a.hidden),  # noqa: E731
                              s.head_values.index(a.heads), s.ffn_values.index(a.ffn)], float)  # fmt: skip
    return 1.0 + float(np.abs(idx(arch) - idx(OPTIMUM)).sum())


class Counting:
    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __call__(self, arch):
        self.calls.append(arch)
        return self.fn(arch)


@pytest.mark.parametrize("method", ["random", "fast", "evolved"])
def test_methods_respect_budget_seed_and_candidates(method):
    assert len(SMALL_CANDS) == 288 and sum(map(is_efficient, SMALL_CANDS.archs)) == 12
    fitness, n = Counting(synthetic_loss), 12 if method == "fast" else 60  # all 12 efficient candidates
    result = search(method, SMALL_CANDS, fitness, budget=n, seed=3, population=10, progress=False)
    archs = [e.arch for e in result.evaluations]
    assert len(archs) == n and len(set(archs)) == n and fitness.calls == archs  # one call per distinct arch
    index = SMALL_CANDS.index()
    assert all(a in index for a in archs)
    assert all(e.predicted_ms == SMALL_CANDS.predicted_ms[index[e.arch]] for e in result.evaluations)
    if method == "fast":
        assert all(map(is_efficient, archs))
    assert [e.generation for e in result.evaluations] == [i // 10 for i in range(n)]
    assert result.best.fitness == min(map(synthetic_loss, archs)) and result.best_so_far()[-1] == result.best.fitness
    again = search(method, SMALL_CANDS, synthetic_loss, budget=n, seed=3, population=10, progress=False)
    assert again.evaluations == result.evaluations
    other = search(method, SMALL_CANDS, synthetic_loss, budget=n, seed=4, population=10, progress=False)
    assert [e.arch for e in other.evaluations] != archs


def test_budget_beyond_the_candidates_evaluates_each_once():
    fast = sum(map(is_efficient, SMALL_CANDS.archs))
    result = search("fast", SMALL_CANDS, synthetic_loss, budget=10_000, progress=False)
    assert len(result.evaluations) == fast and "evaluating all of them" in result.notes[0]


def test_evolved_finds_a_better_arch_than_random_at_equal_budget():
    # 3 generations of 25 over 30 fixed seeds: deterministic (no timing, no unseeded draw); evolved found the
    # optimum 14 times, random 6 (mean best 1.7 vs 2.0) when written
    def best(method, seed):
        return search(method, SMALL_CANDS, synthetic_loss, budget=75, seed=seed, progress=False).best.fitness

    evolved, random = [best("evolved", s) for s in range(30)], [best("random", s) for s in range(30)]
    assert np.mean(evolved) < np.mean(random)
    assert sum(f == 1.0 for f in evolved) >= 2 * sum(f == 1.0 for f in random) > 0


def test_pareto_front_keeps_archs_no_other_beats_on_both():
    ms, loss = [3.0, 1.0, 2.0, 4.0, 2.0, 5.0], [4.0, 5.0, 3.0, 1.0, 2.0, 1.0]
    assert pareto_front(ms, loss).tolist() == [1, 4, 3]


def test_mutation_moves_on_the_grid():
    rng = np.random.default_rng(0)
    arch = Arch(2, 192, 2, 128, 320)
    mutants = {mutate(arch, SMALL_SPACE, rng) for _ in range(300)}
    assert arch in mutants and len(mutants) > 20
    for m in mutants:
        SMALL_SPACE.check(m)
        assert abs(m.layers - 2) <= 1 and abs(m.hidden - 192) <= 16 and abs(m.ffn - 320) <= 64 and abs(m.heads - 2) <= 2


def test_evolved_terminates_when_mutants_never_land_in_the_candidates():
    # isolated candidates: every mutant of one is either itself (already evaluated) or not a candidate
    s = SMALL_SPACE
    archs = tuple(Arch(layers, s.hidden_values[h], heads, 64 * heads, s.ffn_values[f]) for layers in (1, 4)
                  for h in (0, 4, 8) for heads in (1, 4) for f in (0, 5, 10))  # fmt: skip
    cands = CandidateSet(archs, np.ones(len(archs)), SMALL_CANDS.meta)
    result = search("evolved", cands, synthetic_loss, budget=30, population=6, max_retries=20, progress=False)
    assert len({e.arch for e in result.evaluations}) == 30 and result.fallbacks > 0
    assert "took a fresh candidate instead" in result.notes[-1]


def test_bad_candidates_give_clear_errors(tmp_path):
    tiny = SearchSpace.from_dict(TINY_SPACE)
    no_efficient = candidates_of(tiny, "20ms", (0.2, 5.0))
    with pytest.raises(SearchError, match=r"none of the \d+ candidates has efficient ratios .*: \d+ candidates; "):
        search("fast", no_efficient, synthetic_loss, budget=5, progress=False)
    # candidates of another (larger) space than the SuperNet's
    with pytest.raises(SearchError, match=r"\d+ of \d+ candidates lie outside the SuperNet's search space.*\n  arch L"):
        search("random", SMALL_CANDS, synthetic_loss, budget=5, space=tiny, progress=False)
    with pytest.raises(SearchError, match="method must be one of"):
        search("bayes", SMALL_CANDS, synthetic_loss, budget=5)
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ValueError, match="is empty"):
        read_candidates(tmp_path / "empty.jsonl")


@pytest.fixture(scope="module")
def supernet_run(tmp_path_factory):
    """A SuperNet run directory (nas_config.json + supernet/) over TINY_EFF, and its candidates file."""
    root = tmp_path_factory.mktemp("search")
    settings, cfg = nas_config_from_dict({
        "space": TINY_EFF, "buckets": 2, "model": {"vocab_size": 100, "max_position_embeddings": 32},
        "eval_batches": 2, "out_dir": str(root / "run"),
        "data": {"source": "synthetic", "batch_size": 4, "seq_len": 16, "vocab_size": 100}})  # fmt: skip
    supernet = SuperNet(settings.space, dj.small_config(vocab_size=100, max_position_embeddings=32), 2)
    save_supernet(root / "run" / "supernet", supernet, noisy(supernet.init(0)))
    nas = dataclasses.asdict(settings) | {"space": settings.space.to_dict()}
    (root / "run" / "nas_config.json").write_text(json.dumps({**nas, **cfg.to_dict()}))
    # candidates in two buckets (hidden <= 48, ffn <= 80; qkv <= 32 or <= 64), four of them efficient
    sub = dataclasses.replace(settings.space, hidden_size_space=(32, 48), intermediate_size_space=(32, 80))
    write_candidates(root / "cands.jsonl", candidates_of(sub, "5ms", (0.2, 5.0)))
    return root


def test_supernet_fitness_compiles_once_per_bucket(supernet_run):
    setup = load_search_setup(supernet_run / "run" / "supernet")  # the SuperNet dir or its run dir
    assert load_search_setup(supernet_run / "run").run_dir == setup.run_dir and len(setup.batches) == 2
    with pytest.raises(SearchSetupError, match="expected a SuperNet run directory"):
        load_search_setup(supernet_run)
    cands = read_candidates(supernet_run / "cands.jsonl")
    fitness = CachedFitness(setup.fitness)
    result = search("evolved", cands, fitness, budget=12, population=4, space=setup.supernet.space, progress=False)
    buckets = {setup.supernet.bucket(e.arch) for e in result.evaluations}
    assert setup.evaluator.compilations() == len(buckets) == 2  # 12 archs, one program per bucket
    assert len(result.evaluations) == len(fitness.seconds) == 12
    e = result.evaluations[5]
    assert e.fitness == setup.fitness(e.arch) and np.isfinite(e.fitness)  # the same data for every call


def test_cli_search_and_compare(supernet_run, capsys):
    run, cands, out = supernet_run / "run", supernet_run / "cands.jsonl", supernet_run / "out"
    assert main(["search", "--method", "evolved", "--supernet", str(run), "--candidates", str(cands),
                 "--evaluations", "5", "--seed", "1", "--out", str(out / "evolved")]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert "best arch" in text and "fitness evaluations computed" in text
    rows = [json.loads(line) for line in (out / "evolved" / "evaluated.jsonl").read_text().splitlines()]
    best = min(rows, key=lambda r: r["fitness"])
    assert len(rows) == 5 and {"arch", "predicted_ms", "speedup", "fitness", "order", "generation"} <= set(rows[0])
    assert (out / "evolved" / "best_arch.txt").read_text().strip() == best["autotinybert"]
    assert (out / "evolved" / "pareto.png").stat().st_size > 0
    assert json.loads((out / "evolved" / "best.json").read_text())["fitness"] == best["fitness"]

    assert main(["compare", "--supernet", str(run), "--candidates", str(cands), "--evaluations", "3",
                 "--seeds", "3", "--out", str(out / "cmp")]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert "best fitness mean ± std" in text and all(m in text for m in ("random", "fast", "evolved"))
    assert (out / "cmp" / "compare.png").stat().st_size > 0 and (out / "cmp" / "fast-seed2" / "best_arch.txt").exists()

    (supernet_run / "empty.jsonl").write_text("")
    assert main(["search", "--method", "random", "--supernet", str(run), "--candidates",
                 str(supernet_run / "empty.jsonl")]) == 2  # fmt: skip
    assert "is empty" in capsys.readouterr().err
