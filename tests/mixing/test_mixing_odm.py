"""ODM (Exp3 on per-domain training loss): hand-computed updates, lagged importance weights,
and the long-run behaviour the paper describes (weight moves to the high-loss domain and stays)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streammix.mixing import Observation, make_policy
from streammix.mixing.odm import exploration_rate
from streammix.mixing.simulate import fixed_losses, run_policy


def observe(step: int, losses, counts) -> Observation:
    return Observation(step=step, train_loss=losses, train_count=counts)


def test_first_two_updates_by_hand() -> None:
    policy = make_policy("odm", interval=10, smoothing=0.9)
    state = policy.init(2)
    decision, state = policy.start(state)
    assert decision.weights.tolist() == [0.5, 0.5] and decision.info["epsilon"] == 0.5
    # 80 samples, 30 of domain 0 (loss 5) and 50 of domain 1 (loss 2), both drawn with 0.5
    decision, state = policy.update(state, observe(10, [5.0, 2.0], [30, 50]))
    rhat = np.array([5.0 * 30 / (80 * 0.5), 2.0 * 50 / (80 * 0.5)])  # (3.75, 2.5)
    rewards = 0.1 * rhat
    eps = min(0.5, math.sqrt(math.log(2) / (2 * 11)))
    expected = (1 - 2 * eps) * rewards / rewards.sum() + eps
    np.testing.assert_allclose(state["rewards"], rewards, rtol=1e-15)
    np.testing.assert_allclose(decision.weights, expected, rtol=1e-12)
    assert decision.info["epsilon"] == pytest.approx(eps) == exploration_rate(2, 11)
    assert decision.info["drawn_weight_0"] == 0.5
    # second interval drawn with those weights; domain 1 unseen: its estimate is 0
    pi = expected
    decision, state = policy.update(state, observe(20, [4.0, float("nan")], [80, 0]))
    rhat = np.array([4.0 * 80 / (80 * pi[0]), 0.0])
    rewards = 0.9 * rewards + 0.1 * rhat
    eps = math.sqrt(math.log(2) / (2 * 21))
    np.testing.assert_allclose(state["rewards"], rewards, rtol=1e-12)
    np.testing.assert_allclose(
        decision.weights, (1 - 2 * eps) * rewards / rewards.sum() + eps, rtol=1e-12
    )


def test_exp_loss_reward_is_the_authors_scale() -> None:
    policy = make_policy("odm", interval=5, smoothing=0.5, reward="exp_loss")
    _, state = policy.start(policy.init(3))
    decision, state = policy.update(state, observe(5, [1.0, 2.0, 3.0], [10, 10, 20]))
    rhat = np.exp([1.0, 2.0, 3.0]) * np.array([10, 10, 20]) / (40 / 3)
    np.testing.assert_allclose(state["rewards"], 0.5 * rhat, rtol=1e-12)


def test_long_run_converges_to_the_high_loss_domain_instead_of_uniform() -> None:
    """Would have caught the drift: losses 2/6/3 gave [0.330, 0.338, 0.332] after 100k steps."""
    losses = np.array([2.0, 6.0, 3.0])
    decisions, state = run_policy(make_policy("odm"), 3, fixed_losses(losses), 10_000)
    final = decisions[-1].weights
    eps = exploration_rate(3, 100_001)
    assert decisions[-1].info["epsilon"] == eps < 0.002
    np.testing.assert_allclose(state["rewards"], losses, rtol=1e-9)  # R -> E[rhat] = L
    np.testing.assert_allclose(final, (1 - 3 * eps) * losses / losses.sum() + eps, rtol=1e-9)
    assert final[1] > 0.54 and final[1] > final[2] > final[0]
    # it never drifts back toward uniform: distance from uniform grows as eps decays
    distance = [np.abs(decisions[k].weights - 1 / 3).max() for k in (100, 1000, 10_000)]
    assert distance[0] < distance[1] < distance[2]
    # the authors' reward scale exp(L) concentrates further
    decisions, _ = run_policy(
        make_policy("odm", reward="exp_loss"), 3, fixed_losses(losses), 10_000
    )
    assert decisions[-1].weights[1] > 0.93


def test_exploration_rate_decays_and_floors_the_weights() -> None:
    decisions, _ = run_policy(make_policy("odm"), 4, fixed_losses([1.0, 9.0, 9.0, 9.0]), 300)
    eps = [d.info["epsilon"] for d in decisions]
    assert eps[0] == 0.25 and all(a > b for a, b in zip(eps[1:], eps[2:]))
    for d in decisions[1:]:
        assert d.weights.min() >= d.info["epsilon"] - 1e-15


def test_lagged_importance_weights_use_the_weights_batches_were_drawn_with() -> None:
    policy = make_policy("odm", interval=10, lag=15)
    state = policy.init(2, np.array([0.8, 0.2]))
    first, state = policy.start(state)  # decided at 0, applies from batch 15
    w1, state = policy.update(state, observe(10, [3.0, 1.0], [64, 16]))  # applies from 25
    assert w1.info["drawn_weight_0"] == pytest.approx(0.8)  # batches 0-9: initial
    w2, state = policy.update(state, observe(20, [3.0, 1.0], [64, 16]))
    assert w2.info["drawn_weight_0"] == pytest.approx(0.8)  # batches 10-19: initial/first
    _, state = policy.update(state, observe(30, [3.0, 1.0], [50, 30]))
    history = policy.state_dict(state)["schedule"]
    assert [start for start, _ in history] == [25, 35, 45]  # pruned to what can still apply
    decision, _ = policy.update(state, observe(40, [3.0, 1.0], [50, 30]))
    # batches 30-34 were drawn with w1, 35-39 with w2
    drawn = 0.5 * w1.weights + 0.5 * w2.weights
    assert decision.info["drawn_weight_1"] == pytest.approx(drawn[1], rel=1e-12)


@pytest.mark.parametrize("policy_lag,unbiased", [(25, True), (0, False)])
def test_lag_mismatch_biases_the_reward_estimate(policy_lag: int, unbiased: bool) -> None:
    losses = np.array([2.0, 6.0, 3.0])
    policy = make_policy("odm", lag=policy_lag)
    _, state = run_policy(policy, 3, fixed_losses(losses, lag=25), 400)
    close = np.allclose(state["rewards"], losses, rtol=1e-9)
    assert close == unbiased


def test_errors() -> None:
    policy = make_policy("odm")
    _, state = policy.start(policy.init(2))
    with pytest.raises(ValueError, match="needs Observation.train_loss"):
        policy.update(state, Observation(step=10))
    with pytest.raises(ValueError, match="needs Observation.train_count"):
        policy.update(state, Observation(step=10, train_loss=[1.0, 2.0]))
    with pytest.raises(ValueError, match="must be >= 0"):
        policy.update(state, observe(10, [-1.0, 2.0], [4, 4]))
    with pytest.raises(ValueError, match="exp_loss"):
        exp_policy = make_policy("odm", reward="exp_loss")
        exp_policy.update(exp_policy.start(exp_policy.init(2))[1], observe(10, [800.0, 1], [4, 4]))
    with pytest.raises(ValueError, match="drawn with weight 0"):
        _, zero = policy.start(policy.init(2, np.array([1.0, 0.0])))
        policy.update(zero, observe(10, [1.0, 1.0], [4, 4]))
    with pytest.raises(ValueError, match="smoothing"):
        make_policy("odm", smoothing=1.5)
    with pytest.raises(TypeError, match="interval"):
        make_policy("odm", interval=2.5)
    with pytest.raises(ValueError, match="reward"):
        make_policy("odm", reward="log_loss")
    with pytest.raises(ValueError, match="lag"):
        make_policy("odm", lag=-1)
    with pytest.raises(TypeError, match="lag"):
        make_policy("odm", lag=1.5)
