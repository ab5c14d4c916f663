"""DoReMi: the update against a hand computation of the paper's equations, both forms, the
in-run reference phase, and no collapse: a starved domain recovers in a long simulation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from streammix.mixing import Observation, make_policy
from streammix.mixing.doremi import reference_from_history
from streammix.mixing.simulate import power_law_loss, power_law_losses, run_policy

C = 1e-3


def observe(step: int, losses, counts=None, **kw) -> Observation:
    return Observation(step=step, train_loss=losses, train_count=counts, **kw)


def paper_step(alpha: np.ndarray, excess: np.ndarray, eta: float = 1.0) -> np.ndarray:
    """Algorithm 1: alpha' = alpha exp(eta lambda); alpha = (1-c) alpha'/sum + c/m."""
    raised = alpha * np.exp(eta * excess)
    return (1 - C) * raised / raised.sum() + C / alpha.size


def test_two_updates_and_average_by_hand() -> None:
    policy = make_policy("doremi", reference_loss=[2.0, 2.5, 1.0], eta=1.0, interval=10)
    state = policy.init(3)
    decision, state = policy.start(state)
    assert decision.weights.tolist() == [1 / 3] * 3 and decision.phase == "doremi"
    decision, state = policy.update(state, observe(10, [3.0, 2.0, 1.5], [30, 30, 20]))
    alpha1 = paper_step(np.full(3, 1 / 3), np.array([1.0, 0.0, 0.5]))
    np.testing.assert_allclose(decision.weights, alpha1, rtol=1e-12)
    assert [decision.info[f"excess_{i}"] for i in range(3)] == [1.0, 0.0, 0.5]
    decision, state = policy.update(state, observe(20, [2.25, 3.0, 1.0], [40, 20, 20]))
    alpha2 = paper_step(alpha1, np.array([0.25, 0.5, 0.0]))
    np.testing.assert_allclose(decision.weights, alpha2, rtol=1e-12)
    average = (alpha1 + alpha2) / 2  # equation (5): mean over the updates
    np.testing.assert_allclose(policy.average_weights(state), average, rtol=1e-12)
    np.testing.assert_allclose(
        [decision.info[f"avg_weight_{i}"] for i in range(3)], average, rtol=1e-12
    )
    assert decision.weights[0] > 1 / 3 and decision.weights[2] > decision.weights[1] - 0.2


def test_per_token_excess_is_used_when_the_observation_carries_it() -> None:
    policy = make_policy("doremi", reference_loss=[2.0, 2.0], eta=2.0)
    _, state = policy.start(policy.init(2))
    # domain means are below the reference, but some tokens are above it: (1) uses the tokens
    decision, _ = policy.update(
        state, observe(10, [1.9, 1.8], [40, 40], excess_loss=[0.3, 0.1])
    )
    np.testing.assert_allclose(
        decision.weights, paper_step(np.full(2, 0.5), np.array([0.3, 0.1]), eta=2.0), rtol=1e-12
    )
    with pytest.raises(ValueError, match="excess_loss must be >= 0"):
        observe(10, [1.0, 1.0], excess_loss=[-0.1, 0.0])


def test_unobserved_domain_keeps_its_last_excess() -> None:
    policy = make_policy("doremi", reference_loss=[1.0, 1.0, 1.0])
    _, state = policy.start(policy.init(3))
    # domain 2 never seen yet: it gets the update's largest excess (0.8), not 0
    decision, state = policy.update(state, observe(10, [1.8, 1.2, float("nan")], [50, 30, 0]))
    assert [decision.info[f"excess_{i}"] for i in range(3)] == pytest.approx([0.8, 0.2, 0.8])
    assert decision.info["observed_2"] == 0.0 and decision.info["observed_0"] == 1.0
    # next: domains 0 and 2 seen, domain 1 absent (count 0) keeps 0.2
    alpha = decision.weights
    decision, state = policy.update(state, observe(20, [1.1, 1.5, 1.3], [50, 0, 30]))
    assert [decision.info[f"excess_{i}"] for i in range(3)] == pytest.approx([0.1, 0.2, 0.3])
    np.testing.assert_allclose(
        decision.weights, paper_step(alpha, np.array([0.1, 0.2, 0.3])), rtol=1e-12
    )
    text = json.dumps(policy.state_dict(state), allow_nan=False)  # carried NaN -> null
    restored = policy.load_state_dict(json.loads(text))
    np.testing.assert_array_equal(restored["excess"], state["excess"])


def test_no_collapse_a_starved_domain_recovers_in_a_long_run() -> None:
    """eta 1, interval 10, 20k steps; each domain's loss falls with the samples it gets.

    Early on the hardest domain takes almost everything and domain 1 sits at the smoothing
    floor; as the leader's excess shrinks, the starved domains come back. Treating a domain
    without samples as excess 0 kept the others at ~0.02-0.03 in the second half here."""
    floor, scale = np.array([1.0, 2.0, 1.5]), np.array([3.0, 1.0, 2.0])
    steps, interval, batch = 20_000, 10, 8
    reference = power_law_loss(floor, scale, np.full(3, steps * batch / 3))
    policy = make_policy("doremi", reference_loss=reference.tolist(), interval=interval)
    decisions, state = run_policy(
        policy, 3, power_law_losses(floor, scale, batch_size=batch), steps // interval
    )
    weights = np.array([d.weights for d in decisions])
    assert weights.min() >= C / 3 - 1e-15  # the smoothing floor holds
    assert weights[:100, 1].min() < 0.01  # domain 1 was starved ...
    assert weights[300:, 1].max() > 0.3  # ... and recovered
    assert weights[1000:].min() > 0.1  # no domain stuck in the second half
    average = policy.average_weights(state)
    assert np.all(average > 0.2) and abs(average.sum() - 1) < 1e-12


def test_reweighting_form_samples_the_reference_mixture_and_weights_losses() -> None:
    floor, scale = np.array([1.0, 2.0, 1.5]), np.array([3.0, 1.0, 2.0])
    reference = power_law_loss(floor, scale, np.full(3, 4000.0))
    initial = np.array([0.5, 0.3, 0.2])
    policy = make_policy("doremi", reference_loss=reference.tolist(), form="reweight")
    decisions, state = run_policy(
        policy, 3, power_law_losses(floor, scale), 300, initial_weights=initial
    )
    assert all(np.allclose(d.weights, initial, rtol=0, atol=1e-15) for d in decisions)
    multipliers = policy.loss_weights(state)
    np.testing.assert_allclose(multipliers, state["weights"] / initial, rtol=1e-15)
    assert initial @ multipliers == pytest.approx(1.0)  # a batch from p weighs sum alpha_i L_i
    last = decisions[-1]
    np.testing.assert_allclose(
        [last.info[f"loss_weight_{i}"] for i in range(3)], multipliers, rtol=1e-15
    )
    # the domain weights still follow the excess: the hardest domain leads early on
    assert decisions[10].info["loss_weight_0"] > decisions[10].info["loss_weight_1"]
    assert np.all(np.ones(3) == make_policy("doremi", reference_loss=[1, 1, 1]).loss_weights(
        state
    ))


def test_in_run_reference_phase() -> None:
    policy = make_policy("doremi", reference_steps=30, interval=10)
    state = policy.init(2, np.array([0.25, 0.75]))
    decision, state = policy.start(state)
    assert (decision.phase, decision.num_steps) == ("reference-warmup", 20)
    decision, state = policy.update(state, observe(20, [9.0, 9.0], [40, 120]))
    assert (decision.phase, decision.num_steps) == ("reference", 10)
    assert decision.weights.tolist() == [0.25, 0.75]
    decision, state = policy.update(state, observe(30, [3.0, 2.0], [20, 60]))
    assert decision.phase == "doremi" and decision.info["reference_0"] == 3.0
    assert decision.weights.tolist() == [0.25, 0.75]  # no update on the reference itself
    decision, state = policy.update(state, observe(40, [3.5, 1.5], [20, 60]))
    np.testing.assert_allclose(
        decision.weights, paper_step(np.array([0.25, 0.75]), np.array([0.5, 0.0])), rtol=1e-12
    )
    short = make_policy("doremi", reference_steps=10, interval=10)
    decision, state = short.start(short.init(2))
    assert (decision.phase, decision.num_steps) == ("reference", 10)
    with pytest.raises(ValueError, match=r"domains \[1\] had no samples"):
        short.update(state, observe(10, [3.0, float("nan")], [80, 0]))


def test_reference_from_history() -> None:
    history = {
        "history": [
            {"train_loss": None},
            {"train_loss": [5.0, 4.0]},
            {"train_loss": [3.0, None]},
            {"train_loss": [2.0, 3.0]},
        ]
    }
    assert reference_from_history(history, last=2) == [2.5, 3.0]
    with pytest.raises(ValueError, match="no val_loss"):
        reference_from_history(history, signal="val")
    with pytest.raises(ValueError, match="domain 1"):
        reference_from_history({"history": [{"train_loss": [1.0, None]}]})


def test_validation_signal() -> None:
    policy = make_policy("doremi", reference_loss=[1.0, 1.0], signal="val")
    assert policy.needs_validation
    decision, state = policy.start(policy.init(2))
    assert decision.evaluate
    decision, _ = policy.update(state, Observation(step=10, val_loss=[1.0, 2.0]))
    assert decision.weights[1] > 0.5
    assert not make_policy("doremi", reference_loss=[1.0]).needs_validation


def test_errors() -> None:
    with pytest.raises(ValueError, match="exactly one source"):
        make_policy("doremi")
    with pytest.raises(ValueError, match="exactly one source"):
        make_policy("doremi", reference_loss=[1.0], reference_steps=20)
    with pytest.raises(ValueError, match="must be >= interval"):
        make_policy("doremi", reference_steps=5, interval=10)
    with pytest.raises(ValueError, match="2 entries but there are 3"):
        make_policy("doremi", reference_loss=[1, 2]).init(3)
    with pytest.raises(ValueError, match="signal"):
        make_policy("doremi", reference_loss=[1], signal="test")
    with pytest.raises(ValueError, match="form"):
        make_policy("doremi", reference_loss=[1], form="both")
    with pytest.raises(ValueError, match="finite"):
        make_policy("doremi", reference_loss=[float("nan")])
    with pytest.raises(TypeError, match="reference_loss"):
        make_policy("doremi", reference_loss="1.0")
    with pytest.raises(ValueError, match="initial weight > 0"):
        make_policy("doremi", reference_loss=[1, 1], form="reweight").init(2, [1.0, 0.0])
    with pytest.raises(TypeError, match="reference_steps"):
        make_policy("doremi", reference_steps=2.5)


def test_in_run_reference_with_validation_loss_evaluates_only_when_measuring() -> None:
    policy = make_policy("doremi", reference_steps=20, interval=10, signal="val")
    decision, state = policy.start(policy.init(2))
    assert decision.phase == "reference-warmup" and not decision.evaluate
    decision, state = policy.update(state, Observation(step=10))
    assert decision.phase == "reference" and decision.evaluate
    decision, state = policy.update(state, Observation(step=20, val_loss=[2.0, 3.0]))
    assert decision.phase == "doremi" and decision.evaluate
    decision, _ = policy.update(state, Observation(step=30, val_loss=[2.0, 3.5]))
    np.testing.assert_allclose(
        decision.weights, paper_step(np.full(2, 0.5), np.array([0.0, 0.5])), rtol=1e-12
    )
