"""Pictures of a SampleMix plan: quality and diversity per domain, and the resulting plan.

One PNG with three panels: the distribution of normalized quality per domain, the
distribution of diversity per domain (each annotated with its distinct values and the
share of the most common value), and each domain's share of the token budget before
(natural proportions) and after the plan, with the share of its samples never drawn.
Rendering uses matplotlib's Agg canvas directly; the process-wide backend is untouched.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from streammix.build.samplemix_plan import BuildPlan, score_spread


def _annotate_spread(axis, names, scores) -> None:
    """Distinct values and the most common value's share per domain, in the panel's corner."""
    text = "\n".join(
        f"{name}: {s['distinct']} distinct, top {s['top_share']:.0%}"
        for name, s in zip(names, map(score_spread, scores))
    )
    axis.text(0.02, 0.98, text, transform=axis.transAxes, va="top", fontsize="x-small")


def plot_plan(result: BuildPlan, path: str | os.PathLike) -> Path:
    figure = Figure(figsize=(13, 4), layout="constrained")
    FigureCanvasAgg(figure)
    quality_ax, diversity_ax, plan_ax = figure.subplots(1, 3)
    bins = np.linspace(0.0, 1.0, 21)
    for name, quality, diversity in zip(result.names, result.quality, result.diversity):
        quality_ax.hist(quality, bins=bins, histtype="step", density=True, label=name)
        diversity_ax.hist(diversity, bins=bins, histtype="step", density=True, label=name)
    quality_ax.set(title="quality (normalized)", xlabel="score", ylabel="density")
    diversity_ax.set(title="diversity", xlabel="score")
    quality_ax.legend(fontsize="small")
    _annotate_spread(quality_ax, result.names, result.quality)
    _annotate_spread(diversity_ax, result.names, result.diversity)
    tokens = [int(t.sum()) for t in result.num_tokens]
    planned = [int(np.dot(result.counts_of(n), t)) for n, t in zip(result.names, result.num_tokens)]
    before = np.array(tokens) / max(1, sum(tokens))
    after = np.array(planned) / max(1, sum(planned))
    never = [float((result.counts_of(n) == 0).mean()) for n in result.names]
    x = np.arange(len(result.names))
    plan_ax.bar(x - 0.2, before, width=0.4, label="natural share")
    plan_ax.bar(x + 0.2, after, width=0.4, label="planned share")
    for xi, value in zip(x, never):
        plan_ax.annotate(
            f"{value:.0%} never drawn",
            (xi, 0),
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            fontsize="x-small",
        )
    plan_ax.set_xticks(x, result.names)
    plan_ax.set(title=f"share of {result.token_unit}", ylim=(0, 1))
    plan_ax.legend(fontsize="small")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path
