"""What the demo prints: decisions training used, never a probe or an unrun decision."""

from __future__ import annotations

from types import SimpleNamespace

from composer.core import Event

from streammix.composer.experiment import PrintDecisions
from streammix.demo.run import _report

NAMES = ["code", "junk"]


def _history() -> list[dict]:
    def record(step, phase, weights, val, count=None, num_steps=4, info=None):
        return {"step": step, "phase": phase, "num_steps": num_steps, "weights": weights,
                "train_loss": None, "train_count": count, "val_loss": val, "info": info or {}}

    return [
        record(0, "probe:0", [0.7, 0.3], [8.0, 8.0]),
        record(4, "probe:1", [0.3, 0.7], [7.0, 6.0], [11, 5]),
        record(8, "train", [0.6, 0.4], [6.5, 5.5], [5, 11], num_steps=12,
               info={"abar_colsum_0": 0.6, "abar_colsum_1": 0.4}),
        record(20, "probe:1", [0.3, 0.7], [5.0, 5.4], [38, 26]),
        record(24, "train", [0.8, 0.2], [4.8, 5.4], [5, 11], num_steps=16),
        record(40, "probe:0", [0.7, 0.3], [4.0, 5.3], [52, 12]),  # the run ends at 40
    ]


def test_print_decisions_shows_trained_decisions_only(capsys) -> None:
    history = _history()
    mixing = SimpleNamespace(_dataset=SimpleNamespace(domain_names=NAMES), history=history)
    PrintDecisions(mixing, max_steps=40).run_event(Event.BATCH_END, None, None)
    out = capsys.readouterr().out
    assert "step     8 train decision after 2 probes, used for steps 8-20" in out
    assert "step    24 train decision after 1 probes, used for steps 24-40" in out
    assert "probe effect   code 0.600 | junk 0.400" in out
    assert "probe:" not in out and "step    40" not in out


def test_report_prints_the_mixture_training_used_last(capsys) -> None:
    result = {"policy": "aioli", "held_out_loss": {"code": 4.0, "junk": 5.35},
              "history": _history()}
    _report(result, steps=40)
    out = capsys.readouterr().out
    assert "final mixture (trained on from step 24 to 40): code 0.800 | junk 0.200" in out
    assert "change since step 8" in out and "change since step 24" in out
    samples = {"code": 11 + 5 + 38 + 5 + 52, "junk": 5 + 11 + 26 + 11 + 12}
    share = samples["junk"] / sum(samples.values())
    assert f"junk got {share:.0%} of the samples" in out
    assert "the weights moved away from junk" in out


def test_a_packed_run_reports_token_shares(capsys) -> None:
    result = {"policy": "aioli", "held_out_loss": {"code": 4.0, "junk": 5.35},
              "history": _history(), "packed": True}
    _report(result, steps=40)
    out = capsys.readouterr().out
    assert "share of tokens trained" in out and "of the samples" not in out
    assert "final mixture (token shares, trained on from step 24 to 40)" in out
    assert "junk got" in out and "of the tokens" in out
