"""plot_history renders a real PNG from a simulated Aioli run and rejects malformed history."""

from __future__ import annotations

import pytest

from streammix.composer.plot import plot_history
from streammix.mixing import make_policy
from streammix.mixing.simulate import run_policy, toy_losses

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def simulated_history(num_domains: int = 3) -> list[dict]:
    policy = make_policy("aioli", lp_rounds=1, lp_steps=5, update_steps=60)
    environment = toy_losses(num_domains)
    decisions, _ = run_policy(policy, num_domains, environment, 20)
    history, step = [], 0
    previous = None
    for decision in decisions:
        observation = environment(previous, step) if previous is not None else None
        history.append(
            {
                "step": step,
                "phase": decision.phase,
                "weights": decision.weights.tolist(),
                "train_loss": None if observation is None else observation.train_loss.tolist(),
                "val_loss": None
                if observation is None or observation.val_loss is None
                else observation.val_loss.tolist(),
            }
        )
        step += decision.num_steps
        previous = decision
    return history


def test_plot_history_writes_a_png(tmp_path) -> None:
    path = plot_history(
        simulated_history(), tmp_path / "plots" / "mix.png", domain_names=["web", "code", "books"]
    )
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 20_000


def test_plot_history_accepts_missing_losses(tmp_path) -> None:
    history = [
        {"step": 0, "phase": "static", "weights": [0.5, 0.5], "train_loss": None, "val_loss": None},
        {"step": 10, "phase": "static", "weights": [0.2, 0.8], "train_loss": [2.0, None]},
    ]
    assert plot_history(history, tmp_path / "small.png").stat().st_size > 5_000


@pytest.mark.parametrize(
    "history,names,match",
    [
        ([], None, "empty"),
        ([{"step": 0}], None, "lacks"),
        ([{"step": 0, "weights": [1.0]}], ["a", "b"], "2 domain names"),
        ([{"step": 5, "weights": [1.0]}, {"step": 1, "weights": [1.0]}], None, "non-decreasing"),
        ([{"step": 0, "weights": [1.0], "val_loss": [1.0, 2.0]}], None, "val_loss has 2"),
    ],
)
def test_plot_history_errors(tmp_path, history, names, match) -> None:
    with pytest.raises(ValueError, match=match):
        plot_history(history, tmp_path / "x.png", domain_names=names)


def test_plot_history_labels_axes_marks_probes_and_says_what_to_see() -> None:
    from streammix.composer.plot import CAPTION, history_figure

    history = simulated_history()
    figure = history_figure(history, domain_names=["web", "code", "books"])
    weight_ax, loss_ax = figure.axes
    assert "domain weight" in weight_ax.get_ylabel() and "loss" in loss_ax.get_ylabel()
    assert "step" in loss_ax.get_xlabel()
    probes = sum(str(r["phase"]).startswith("probe") for r in history)
    assert f"and {probes} probes" in weight_ax.get_title()
    assert "probe (not a decision)" in weight_ax.get_legend_handles_labels()[1]
    assert [t.get_text() for t in figure.texts] == [CAPTION]
    assert CAPTION.startswith("What to see:") and CAPTION.count(". ") == 0


def test_plot_history_end_step_leaves_out_decisions_that_never_trained() -> None:
    from streammix.composer.plot import history_figure

    history = simulated_history()
    end = history[-1]["step"]  # the last record starts where the run ends: it never trained
    full = history_figure(history, domain_names=["web", "code", "books"])
    cut = history_figure(history, domain_names=["web", "code", "books"], end_step=end)
    assert full.axes[0].get_xlim()[1] > end
    assert cut.axes[0].get_xlim() == (0.0, float(end))
    decisions = sum(not str(r["phase"]).startswith("probe") for r in history[:-1])
    assert cut.axes[0].get_title().startswith(f"online mixing: {decisions} decisions")
    with pytest.raises(ValueError, match="no decision starts before"):
        history_figure(history, end_step=0)
