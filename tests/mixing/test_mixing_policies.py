"""Static and scheduled policies on scripted losses; resume round trips for all policies.

ODM and DoReMi have their own files (test_mixing_odm.py, test_mixing_doremi.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streammix.mixing import Decision, Observation, make_policy
from streammix.mixing.simulate import decisions_identical, run_policy, toy_losses


def constant_losses(train=None, val=None, counts=None):
    def observe(decision: Decision, step: int) -> Observation:
        return Observation(
            step=step,
            train_loss=None if train is None else np.array(train, float),
            train_count=None if counts is None else np.array(counts, float),
            val_loss=None if val is None or not decision.evaluate else np.array(val, float),
        )

    return observe


# ----------------------------------------------------------------------------- static


def test_static_uses_option_then_initial_then_uniform() -> None:
    decisions, _ = run_policy(
        make_policy("static", weights=[1, 3], interval=7), 2, constant_losses(), 3
    )
    assert all(d.weights.tolist() == [0.25, 0.75] and d.num_steps == 7 for d in decisions)
    assert not any(d.evaluate for d in decisions)
    decisions, _ = run_policy(
        make_policy("static"), 2, constant_losses(), 1, initial_weights=[2, 2]
    )
    assert decisions[-1].weights.tolist() == [0.5, 0.5] and decisions[-1].num_steps == 1000
    decisions, _ = run_policy(make_policy("static"), 4, constant_losses(), 1)
    assert decisions[0].weights.tolist() == [0.25] * 4


def test_static_weight_errors() -> None:
    with pytest.raises(ValueError, match="3 entries but there are 2 domains"):
        make_policy("static", weights=[1, 1, 1]).init(2)
    with pytest.raises(ValueError, match=">= 0"):
        make_policy("static", weights=[1, -1])
    with pytest.raises(ValueError, match="finite"):
        make_policy("static").init(2, [float("nan"), 1.0])
    with pytest.raises(ValueError, match=">= 0"):
        make_policy("static").init(2, [-0.5, 1.5])
    with pytest.raises(ValueError, match="positive sum"):
        make_policy("static").init(2, [0.0, 0.0])


# ----------------------------------------------------------------------------- scheduled


def test_piecewise_schedule_decides_at_each_point() -> None:
    points = [(0, [1, 0]), (100, [1, 1]), (250, [0, 1])]
    policy = make_policy("scheduled", points=points, interval=40)
    decisions, _ = run_policy(policy, 2, constant_losses(), 3)
    assert [d.weights.tolist() for d in decisions] == [[1, 0], [0.5, 0.5], [0, 1], [0, 1]]
    assert [d.num_steps for d in decisions] == [100, 150, 40, 40]
    assert policy.weights_at(99).tolist() == [1, 0]
    assert policy.weights_at(100).tolist() == [0.5, 0.5]
    assert policy.weights_at(10_000).tolist() == [0, 1]


def test_linear_schedule_interpolates_at_decision_starts() -> None:
    policy = make_policy(
        "scheduled", points=[[0, [1, 0]], [100, [0, 1]]], mode="linear", interval=30
    )
    decisions, _ = run_policy(policy, 2, constant_losses(), 5)
    assert [d.num_steps for d in decisions] == [30, 30, 30, 10, 30, 30]
    np.testing.assert_allclose(decisions[1].weights, [0.7, 0.3], rtol=1e-12)
    np.testing.assert_allclose(decisions[3].weights, [0.1, 0.9], rtol=1e-12)
    assert decisions[4].weights.tolist() == [0, 1]
    np.testing.assert_allclose(policy.weights_at(25), [0.75, 0.25], rtol=1e-12)


@pytest.mark.parametrize(
    "points,match",
    [
        ([(5, [1, 1])], "step 0"),
        ([(0, [1, 1]), (0, [1, 2])], "strictly increasing"),
        ([(0, [1, 1]), (10, [1, 2, 3])], "same number"),
        ([(0, [1, -1])], ">= 0"),
        ([], "non-empty"),
        ([(0,)], r"\(step, weights\)"),
    ],
)
def test_bad_schedules(points, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_policy("scheduled", points=points)


def test_schedule_domain_count_and_mode() -> None:
    with pytest.raises(ValueError, match="2 entries but there are 3 domains"):
        make_policy("scheduled", points=[(0, [1, 1])]).init(3)
    with pytest.raises(ValueError, match="piecewise"):
        make_policy("scheduled", points=[(0, [1, 1])], mode="cubic")


# ----------------------------------------------------------------------------- all policies

ALL = [
    ("static", {"weights": [0.2, 0.3, 0.5], "interval": 5}),
    (
        "scheduled",
        {
            "points": [(0, [1, 1, 1]), (12, [1, 0, 0]), (40, [0, 0, 1])],
            "mode": "linear",
            "interval": 5,
        },
    ),
    ("odm", {"interval": 3}),
    ("odm", {"interval": 4, "reward": "exp_loss", "lag": 6, "smoothing": 0.5}),
    ("doremi", {"reference_loss": [2.0, 2.5, 1.5], "interval": 4}),
    ("doremi", {"reference_loss": [2.0, 2.5, 1.5], "signal": "val", "eta": 3.0}),
    ("doremi", {"reference_steps": 8, "interval": 4, "form": "reweight", "eta": 2.0}),
    ("aioli", {"lp_rounds": 1, "lp_steps": 2, "update_steps": 9, "update_rule": "multiplicative"}),
]


@pytest.mark.parametrize("name,options", ALL)
@pytest.mark.parametrize("cut", [0, 3, 7])
def test_state_round_trip_reproduces_decisions(name: str, options: dict, cut: int) -> None:
    env = toy_losses(3)
    full, _ = run_policy(make_policy(name, **options), 3, env, 25, initial_weights=[1, 2, 3])
    head, state = run_policy(make_policy(name, **options), 3, env, cut, initial_weights=[1, 2, 3])
    text = json.dumps(make_policy(name, **options).state_dict(state), allow_nan=False)
    fresh = make_policy(name, **options)
    tail, _ = run_policy(
        fresh, 3, env, 25 - cut, resume=(fresh.load_state_dict(json.loads(text)), head[-1])
    )
    assert decisions_identical(full, head + tail)


@pytest.mark.parametrize("name,options", ALL)
def test_decisions_are_valid_and_steps_are_checked(name: str, options: dict) -> None:
    policy = make_policy(name, **options)
    decisions, state = run_policy(policy, 3, toy_losses(3), 12)
    for d in decisions:
        assert d.weights.shape == (3,) and np.all(d.weights >= 0)
        assert abs(d.weights.sum() - 1) < 1e-12
        assert d.num_steps >= 1 or d.evaluate
        if d.evaluate:
            assert policy.needs_validation
    with pytest.raises(ValueError, match="exactly after"):
        policy.update(
            state,
            Observation(step=state["next_step"] + 1, train_loss=[1, 1, 1], val_loss=[1, 1, 1]),
        )


@settings(max_examples=40, deadline=None)
@given(
    name=st.sampled_from(["odm", "doremi", "aioli"]),
    num_domains=st.integers(2, 6),
    losses=st.lists(st.floats(0.0, 20.0), min_size=6, max_size=6),
    scale=st.floats(0.0, 50.0),
)
def test_weights_stay_valid_for_any_losses(name, num_domains, losses, scale) -> None:
    options = {"reference_loss": [1.0] * num_domains, "eta": 5.0} if name == "doremi" else {}
    policy = make_policy(name, **options)
    base = np.array(losses[:num_domains])

    def observe(decision: Decision, step: int) -> Observation:
        wave = base + scale * np.sin(step * 0.37 + np.arange(num_domains)) ** 2
        counts = np.full(num_domains, 8.0 * decision.num_steps)
        return Observation(
            step=step,
            train_loss=wave,
            train_count=counts,
            val_loss=wave if decision.evaluate else None,
        )

    probes = policy.resolve(num_domains)["lp_rounds"] * num_domains + 1 if name == "aioli" else 5
    decisions, _ = run_policy(policy, num_domains, observe, 2 * probes)
    for d in decisions:
        assert np.all(np.isfinite(d.weights)) and np.all(d.weights >= 0)
        assert abs(d.weights.sum() - 1.0) < 1e-9
