"""A picture of an online-mixing run: domain weights and per-domain losses over steps.

The mixing callback logs one record per policy decision::

    {"step": int, "phase": str, "weights": [floats],
     "train_loss": [floats] | None, "val_loss": [floats] | None}   (+ optional "num_steps")

``weights`` hold from ``step`` until the next record's step, so the top panel draws them as
a stacked step area (the last record is extended by its ``num_steps``, or by the previous
gap). Records whose phase starts with ``probe`` (Aioli's LearnParams rounds: a few steps
on a mixture tilted towards one domain, to measure its effect) are hatched, so a reader
does not take their short bumps for decisions. ``train_loss`` is the mean over the steps
before the decision and ``val_loss`` the loss measured at the decision; the bottom panel
plots both at the record's step (solid and dashed, one colour per domain). A one-sentence
caption under the panels says what to look at. Rendering uses matplotlib's Agg canvas
directly, so the process-wide backend is left alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _vector(value: Any, num_domains: int, what: str) -> np.ndarray:
    if value is None:
        return np.full(num_domains, np.nan)
    array = np.array([np.nan if v is None else v for v in value], dtype=np.float64)
    if array.shape != (num_domains,):
        raise ValueError(f"{what} has {array.size} entries but there are {num_domains} domains")
    return array


def _columns(history: Sequence[dict]) -> dict[str, np.ndarray]:
    if not history:
        raise ValueError("history is empty; nothing to plot")
    for i, record in enumerate(history):
        missing = {"step", "weights"} - set(record)
        if missing:
            raise ValueError(f"history record {i} lacks {sorted(missing)}")
    num_domains = len(history[0]["weights"])
    steps = np.array([int(r["step"]) for r in history], dtype=np.int64)
    if np.any(np.diff(steps) < 0):
        raise ValueError("history steps must be non-decreasing")
    return {
        "steps": steps,
        "weights": np.stack([_vector(r["weights"], num_domains, "weights") for r in history]),
        "train": np.stack(
            [_vector(r.get("train_loss"), num_domains, "train_loss") for r in history]
        ),
        "val": np.stack([_vector(r.get("val_loss"), num_domains, "val_loss") for r in history]),
    }


def _end_step(history: Sequence[dict], steps: np.ndarray) -> int:
    last = history[-1]
    if last.get("num_steps"):
        return int(steps[-1] + last["num_steps"])
    gaps = np.diff(steps)
    gaps = gaps[gaps > 0]
    return int(steps[-1] + (gaps[-1] if gaps.size else 1))


CAPTION = (
    "What to see: how the policy splits each batch among the domains as training goes (top;"
    " hatched spans are short probes that measure each domain, not decisions) and the"
    " per-domain losses it reacts to (bottom), so weight should move towards domains whose"
    " loss still falls and away from those that stopped improving."
)


def _draw_weights(
    ax: Any,
    steps: np.ndarray,
    end: int,
    weights: np.ndarray,
    names: list[str],
    colors: list,
    probes: np.ndarray,
) -> None:
    x = np.append(steps, end)
    y = np.vstack([weights, weights[-1:]])
    lower = np.zeros(len(x))
    for d, name in enumerate(names):
        upper = lower + y[:, d]
        ax.fill_between(
            x, lower, upper, step="post", color=colors[d], alpha=0.85, label=name, linewidth=0
        )
        lower = upper
    label = "probe (not a decision)"
    for i in np.flatnonzero(probes):
        if x[i + 1] > x[i]:
            ax.axvspan(
                x[i], x[i + 1], facecolor="white", alpha=0.45, hatch="///", edgecolor="0.3",
                linewidth=0, label=label,
            )
            label = None
    ax.set_ylim(0.0, 1.0)
    ax.set_xlim(x[0], x[-1])
    ax.set_ylabel("domain weight\n(share of each batch)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")


def _draw_losses(
    ax: Any, steps: np.ndarray, train: np.ndarray, val: np.ndarray, names: list[str], colors: list
) -> None:
    for d, name in enumerate(names):
        if np.any(np.isfinite(train[:, d])):
            seen = np.isfinite(train[:, d])
            ax.plot(
                steps[seen], train[seen, d], color=colors[d], linewidth=1.2, label=f"{name} train"
            )
        if np.any(np.isfinite(val[:, d])):
            seen = np.isfinite(val[:, d])
            ax.plot(
                steps[seen],
                val[seen, d],
                color=colors[d],
                linestyle="--",
                marker=".",
                markersize=3,
                linewidth=1.0,
                label=f"{name} val",
            )
    ax.set_xlabel("optimizer step (batch)")
    ax.set_ylabel("loss per token\n(solid: training, dashed: held-out)")
    if ax.lines:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")


def plot_history(
    history: list[dict],
    path: str | Path,
    *,
    domain_names: list[str] | None = None,
    end_step: int | None = None,
) -> Path:
    """Render ``history`` to a PNG at ``path`` (parents created) and return the path."""
    figure = history_figure(history, domain_names=domain_names, end_step=end_step)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path


def history_figure(
    history: list[dict], *, domain_names: list[str] | None = None, end_step: int | None = None
) -> Figure:
    """The figure :func:`plot_history` saves: weights, losses and a caption.

    ``end_step``: the step training stopped at. Decisions made at or after it never trained
    (a run that ends after a round has already asked for the next round's first probe):
    their weights are left out and the weight panel ends there; the losses measured at
    that step are still drawn.
    """
    columns = _columns(history)
    trained = np.ones(len(history), dtype=bool)
    if end_step is not None:
        trained = columns["steps"] < end_step
        if not trained.any():
            raise ValueError(f"no decision starts before end_step={end_step}")
    num_domains = columns["weights"].shape[1]
    names = (
        list(domain_names)
        if domain_names is not None
        else [f"domain {d}" for d in range(num_domains)]
    )
    if len(names) != num_domains:
        raise ValueError(f"{len(names)} domain names given but there are {num_domains} domains")
    figure = Figure(figsize=(10, 7), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    figure.get_layout_engine().set(rect=(0.0, 0.07, 1.0, 0.93))  # room for the caption
    weight_ax, loss_ax = figure.subplots(2, 1, sharex=True)
    colors = _palette(num_domains)
    used = [r for r, keep in zip(history, trained) if keep]
    end = _end_step(used, columns["steps"][trained])
    if end_step is not None:
        end = min(end, end_step)
    probes = np.array([str(r.get("phase", "")).startswith("probe") for r in used])
    _draw_weights(weight_ax, columns["steps"][trained], end, columns["weights"][trained], names,
                  colors, probes)
    _draw_losses(loss_ax, columns["steps"], columns["train"], columns["val"], names, colors)
    decisions = len(used) - int(probes.sum())
    weight_ax.set_title(
        f"online mixing: {decisions} decisions"
        + (f" and {int(probes.sum())} probes" if probes.any() else "")
        + f", steps {columns['steps'][0]}..{end}"
    )
    figure.text(0.01, 0.01, CAPTION, ha="left", va="bottom", wrap=True, fontsize="small")
    return figure


def _palette(num_domains: int) -> list:
    size = 10 if num_domains <= 10 else 20
    cmap = colormaps[f"tab{size}"]
    return [cmap(d % size) for d in range(num_domains)]
