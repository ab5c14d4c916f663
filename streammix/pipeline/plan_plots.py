"""Pictures of a SampleMix plan: quality and diversity per domain, and the resulting plan.

One PNG with three panels: the distribution of normalized quality per domain, the
distribution of diversity per domain (each bar the share of the domain's samples in a bin
of width 0.05, annotated with its distinct values and the share of the most common value), and each domain's share of the tokens before (natural proportions) and
after the plan, with the share of its samples never drawn; a one-sentence caption under the
panels says what to look at.

Tall single bars in the two distributions are **ties**, not a plotting artefact: both scores
are rank-normalized over the build with average ranks, so every sample with the same raw
score gets one value. The two large ties of a typical build are the documents that pass
every heuristic quality rule (raw quality 1) and the documents with no near neighbour at
all (alone in their topic cluster, no nearby cluster: the largest raw diversity); their
shared rank is the average of the ranks they span, e.g. 0.62 when 76% of the build ties at
the top. Each tie that holds at least ``TIE_SHARE`` of the build is marked and labelled.
Rendering uses matplotlib's Agg canvas directly; the process-wide backend is untouched.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from streammix.pipeline.samplemix_plan import BuildPlan, score_spread


def _annotate_spread(axis, names, scores) -> None:
    """Distinct values and the most common value's share per domain, in the panel's corner."""
    text = "\n".join(
        f"{name}: {s['distinct']} distinct, top {s['top_share']:.0%}"
        for name, s in zip(names, map(score_spread, scores))
    )
    axis.text(0.98, 0.98, text, transform=axis.transAxes, va="top", ha="right",
              fontsize="x-small")


TIE_SHARE = 0.1  # a value shared by this share of the build's samples is marked as a tie


def caption(alpha: float) -> str:
    """The sentence under the plan plot: what a reader should see in it."""
    return (
        f"What to see: the plan draws each sample in proportion to {alpha:g} \u00d7 diversity +"
        f" {1 - alpha:g} \u00d7 quality, so a domain whose samples score higher (left, middle)"
        " gains share of the tokens (right), and a tall single bar is a tie, samples with equal"
        " raw scores (passing every quality rule, or without any near neighbour) that share"
        " one average rank."
    )


def _distribution(
    ax: Any, values: tuple[np.ndarray, ...], names: tuple[str, ...], xlabel: str, title: str
) -> None:
    bins = np.linspace(0.0, 1.0, 21)
    for name, data in zip(names, values):
        weights = np.full(len(data), 1.0 / max(1, len(data)))
        ax.hist(data, bins=bins, weights=weights, histtype="step", linewidth=1.4, label=name)
    top = max((patch.get_path().vertices[:, 1].max() for patch in ax.patches), default=1.0)
    ax.set_ylim(0.0, 1.3 * top)  # headroom for the tie labels
    everything = np.concatenate(values) if values else np.zeros(0)
    if everything.size:
        tied, counts = np.unique(everything, return_counts=True)
        for value, count in zip(tied, counts):
            share = count / everything.size
            if share >= TIE_SHARE:
                ax.axvline(value, color="0.35", linestyle=":", linewidth=1.0)
                ax.annotate(
                    f"tie: {share:.0%} of samples\nshare the value {value:.2f}",
                    (value, 1.0),
                    xycoords=("data", "axes fraction"),
                    xytext=(-5, -3),
                    textcoords="offset points",
                    ha="right",
                    va="top",
                    fontsize="x-small",
                    color="0.25",
                )
    ax.set(title=title, xlabel=xlabel, ylabel="share of the domain's samples", xlim=(0.0, 1.0))


def plot_plan(result: BuildPlan, path: str | os.PathLike) -> Path:
    """Save :func:`plan_figure` as a PNG at ``path`` (parents created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    plan_figure(result).savefig(path, dpi=110)
    return path


def plan_figure(result: BuildPlan) -> Figure:
    """Quality and diversity per domain, the natural and planned shares, and a caption."""
    figure = Figure(figsize=(14, 4.8), layout="constrained")
    FigureCanvasAgg(figure)
    figure.get_layout_engine().set(rect=(0.0, 0.08, 1.0, 0.92))  # room for the caption
    quality_ax, diversity_ax, plan_ax = figure.subplots(1, 3)
    _distribution(
        quality_ax,
        result.quality,
        result.names,
        "normalized quality (rank over the build: 0 worst, 1 best)",
        "quality",
    )
    _distribution(
        diversity_ax,
        result.diversity,
        result.names,
        "diversity (rank over the build: 0 most crowded, 1 most isolated)",
        "diversity",
    )
    quality_ax.legend(fontsize="small", loc="upper left")
    _annotate_spread(quality_ax, result.names, result.quality)
    _annotate_spread(diversity_ax, result.names, result.diversity)
    tokens = [int(t.sum()) for t in result.num_tokens]
    planned = [int(np.dot(result.counts_of(n), t)) for n, t in zip(result.names, result.num_tokens)]
    before = np.array(tokens) / max(1, sum(tokens))
    after = np.array(planned) / max(1, sum(planned))
    never = [float((result.counts_of(n) == 0).mean()) for n in result.names]
    x = np.arange(len(result.names))
    plan_ax.bar(x - 0.2, before, width=0.4, label="natural share (the build)")
    plan_ax.bar(x + 0.2, after, width=0.4, label="planned share (after SampleMix)")
    for xi, value, height in zip(x, never, np.maximum(before, after)):
        plan_ax.annotate(
            f"{value:.0%} of its samples\nnever drawn",
            (xi, height),
            xytext=(0, 4),
            textcoords="offset points",
            ha="center",
            fontsize="x-small",
        )
    unit = result.token_unit
    budget = int(result.plan.report.get("token_budget", sum(planned)))
    plan_ax.set_xticks(x, result.names)
    plan_ax.set(
        title=f"the plan: {budget:,} {unit}",
        xlabel="domain",
        ylabel=f"share of the {unit}",
        ylim=(0, 1),
    )
    plan_ax.legend(fontsize="small", loc="upper right")
    alpha = float(result.plan.report.get("alpha", 0.8))
    figure.text(0.01, 0.01, caption(alpha), ha="left", va="bottom", wrap=True, fontsize="small")
    return figure
