"""PNG plots of searches: one run's latency-vs-fitness Pareto plot, and best-so-far fitness per method."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from distilbert_jax.train.reporting import pyplot


def pareto_front(ms: Sequence[float], fitness: Sequence[float]) -> np.ndarray:
    """Indices of the points no other point beats on both latency and fitness (lower is better), by
    increasing latency."""
    ms, fitness = np.asarray(ms, np.float64), np.asarray(fitness, np.float64)
    front, best = [], np.inf
    for i in np.lexsort((fitness, ms)):
        if fitness[i] < best:
            front.append(i)
            best = fitness[i]
    return np.asarray(front, np.int64)


def pareto_figure(result):
    """The figure of `plot_pareto`: predicted latency vs fitness of every evaluated arch of a `SearchResult`
    (colour: generation, one discrete colour and colour-bar tick per generation), the Pareto front, the
    chosen arch and the constraint's latency window (shaded); the legend sits below the axes, off the points."""
    plt = pyplot()
    from matplotlib.colors import BoundaryNorm
    from matplotlib.ticker import MaxNLocator

    ev = result.evaluations
    ms = np.array([e.predicted_ms for e in ev])
    fit = np.array([e.fitness for e in ev])
    gens = np.array([e.generation for e in ev])
    fig, ax = plt.subplots(figsize=(7, 5.5))
    lo, hi = result.window_ms
    ax.axvspan(lo, hi, color="tab:green", alpha=0.08, label=f"latency window {lo:.3g}–{hi:.3g} ms")
    n_gen = int(gens.max()) + 1 if len(gens) else 1
    cmap = plt.get_cmap("viridis", max(n_gen, 2))
    norm = BoundaryNorm(np.arange(-0.5, max(n_gen, 2) + 0.5), cmap.N)  # generation g -> the colour of bin g
    points = ax.scatter(ms, fit, c=gens, cmap=cmap, norm=norm, s=18, alpha=0.8, label="evaluated")
    if n_gen > 1:
        bar = fig.colorbar(points, ax=ax, label="generation", boundaries=np.arange(-0.5, n_gen + 0.5))
        bar.ax.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=min(n_gen, 10)))
    front = pareto_front(ms, fit)
    ax.step(ms[front], fit[front], where="post", color="tab:red", lw=1.2, label="Pareto front")
    ax.scatter(ms[front], fit[front], facecolors="none", edgecolors="tab:red", s=40)
    b = result.best
    ax.scatter([b.predicted_ms], [b.fitness], marker="*", s=220, color="tab:orange", edgecolors="k", zorder=5,
               label=f"chosen {b.arch} ({b.fitness:.4f})")  # fmt: skip
    ax.set_xlabel("predicted latency (ms)")
    ax.set_ylabel("fitness: held-out loss (lower is better)")
    ax.set_title(f"{result.method} search, seed {result.seed}: {len(ev)} evaluations")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_pareto(result, path: str | os.PathLike) -> str:
    """Write `pareto_figure(result)` to `path` (PNG); returns the path."""
    plt = pyplot()
    fig = pareto_figure(result)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return os.fspath(path)


def plot_best_so_far(results: Sequence, path: str | os.PathLike) -> str:
    """Best-so-far fitness vs evaluations per method: the mean over seeds, the seeds' range shaded (a method
    with fewer candidates than the budget stops early)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = ["-", "--", "-.", ":"]
    for k, method in enumerate(dict.fromkeys(r.method for r in results)):
        curves = [r.best_so_far() for r in results if r.method == method]
        n = min(len(c) for c in curves)
        stack = np.stack([c[:n] for c in curves])
        x = np.arange(1, n + 1)
        (line,) = ax.plot(x, stack.mean(0), styles[k % 4], lw=1.6, label=f"{method} (mean of {len(curves)} seeds)")
        ax.fill_between(x, stack.min(0), stack.max(0), color=line.get_color(), alpha=0.15)
    ax.set_xlabel("fitness evaluations")
    ax.set_ylabel("best fitness so far (held-out loss)")
    ax.set_title("search methods at equal evaluations")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return os.fspath(path)
