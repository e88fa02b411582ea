"""pareto.png: the legend covers no point, and the colour bar has one band and one tick per generation (issue 21,
item 7: with 2 generations it ran continuously from 0 to 1)."""

import numpy as np

from distilbert_jax.nas.search import Evaluation, SearchResult
from distilbert_jax.nas.search_plots import pareto_figure, plot_pareto
from distilbert_jax.nas.space import Arch


def result(generations: int) -> SearchResult:
    rng = np.random.default_rng(0)
    evs = [Evaluation(i, i * generations // 30, Arch(layers=2, hidden=128 + 16 * (i % 8), heads=2, qkv=128, ffn=256),
                      float(5.7 + 0.1 * rng.random()), float(1.1 + 0.4 * rng.random()), 100.0)
           for i in range(30)]  # fmt: skip
    return SearchResult("evolved", 0, 30, evs, (1.12, 1.45))


def test_legend_covers_no_point_and_colour_bar_is_per_generation(tmp_path):
    for gens in (2, 5):
        res = result(gens)
        fig = pareto_figure(res)
        fig.canvas.draw()
        ax = fig.axes[0]
        box = ax.get_legend().get_window_extent()
        points = ax.transData.transform([(e.predicted_ms, e.fitness) for e in res.evaluations])
        assert not any(box.contains(x, y) for x, y in points)
        bar = fig.axes[1]  # the colour bar's axes
        lo, hi = sorted(bar.get_ylim())
        assert (lo, hi) == (-0.5, gens - 0.5)  # one band per generation, not a 0–1 continuum
        ticks = [t for t in bar.get_yticks() if lo <= t <= hi]
        assert ticks == list(range(gens))
    assert plot_pareto(result(2), tmp_path / "p.png") and (tmp_path / "p.png").stat().st_size > 0
