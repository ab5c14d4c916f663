"""The protocol's value types and the policy registry reject bad input with clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from streammix.mixing import (
    POLICIES,
    Decision,
    MixingPolicy,
    Observation,
    make_policy,
    policy_options,
)


def test_unknown_policy_lists_known_names() -> None:
    with pytest.raises(ValueError, match="unknown mixing policy 'aiolli'") as info:
        make_policy("aiolli")
    for name in ("static", "scheduled", "aioli", "odm", "doremi"):
        assert name in str(info.value)


def test_unknown_option_lists_accepted_ones() -> None:
    with pytest.raises(TypeError, match="unknown option.*'etta'.*accepted.*'eta'"):
        make_policy("aioli", etta=0.1)
    assert "lp_rounds" in policy_options("aioli")


@pytest.mark.parametrize(
    "name,options,error",
    [
        ("static", {"interval": 0}, ValueError),
        ("static", {"weights": "abc"}, TypeError),
        ("aioli", {"lp_rounds": 0}, ValueError),
        ("aioli", {"eta": -1.0}, ValueError),
        ("aioli", {"ema": 1.5}, ValueError),
        ("aioli", {"one_hot_factor": 2.0}, ValueError),
        ("aioli", {"update_rule": "adam"}, ValueError),
        ("aioli", {"anchor": "median"}, ValueError),
        ("aioli", {"seed": -1}, ValueError),
        ("aioli", {"lp_steps": 1.5}, TypeError),
        ("aioli", {"normalize_a": "yes"}, TypeError),
        ("odm", {"smoothing": float("nan")}, ValueError),
        ("doremi", {"reference_loss": 3.0}, TypeError),
        ("doremi", {"reference_loss": [1.0], "smoothing": -0.1}, ValueError),
    ],
)
def test_bad_option_values(name: str, options: dict, error: type) -> None:
    with pytest.raises(error):
        make_policy(name, **options)


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_policies_follow_the_protocol(name: str) -> None:
    options = {"points": [(0, [1, 1])]} if name == "scheduled" else {}
    if name == "doremi":
        options = {"reference_loss": [1.0, 1.0]}
    if name == "opmix":
        options = {"probe_at": 10}
    policy = make_policy(name, **options)
    assert isinstance(policy, MixingPolicy)
    assert policy.name == name
    with pytest.raises(TypeError, match="num_domains"):
        policy.init("2")
    with pytest.raises(ValueError, match="num_domains"):
        policy.init(0)
    with pytest.raises(ValueError, match=r"\d entries but there are \d domains"):
        policy.init(2, [1.0, 1.0, 1.0]) if name != "scheduled" else policy.init(3)
    with pytest.raises(TypeError, match="Observation"):
        _, state = policy.start(policy.init(2))
        policy.update(state, {"step": 0})


def test_decision_validation() -> None:
    ok = Decision(weights=[0.25, 0.75], num_steps=3, evaluate=False, phase="x", info={"a": 1})
    assert ok.weights.dtype == np.float64 and not ok.weights.flags.writeable
    assert ok.info == {"a": 1.0}
    with pytest.raises(ValueError, match="sum to 1"):
        Decision(weights=[0.5, 0.6], num_steps=1, evaluate=False, phase="x")
    with pytest.raises(ValueError, match=">= 0"):
        Decision(weights=[1.5, -0.5], num_steps=1, evaluate=False, phase="x")
    with pytest.raises(ValueError, match="finite"):
        Decision(weights=[np.nan, 1.0], num_steps=1, evaluate=False, phase="x")
    with pytest.raises(ValueError, match="only allowed together with evaluate"):
        Decision(weights=[1.0], num_steps=0, evaluate=False, phase="x")
    with pytest.raises(ValueError, match=">= 0"):
        Decision(weights=[1.0], num_steps=-1, evaluate=True, phase="x")
    with pytest.raises(TypeError, match="num_steps"):
        Decision(weights=[1.0], num_steps=True, evaluate=True, phase="x")
    assert Decision(weights=[1.0], num_steps=0, evaluate=True, phase="measure").num_steps == 0


def test_observation_validation() -> None:
    obs = Observation(step=np.int64(4), train_loss=[1, 2], train_count=[3, 0])
    assert obs.step == 4 and obs.train_loss.dtype == np.float64
    with pytest.raises(ValueError, match=">= 0"):
        Observation(step=-1)
    with pytest.raises(TypeError, match="int"):
        Observation(step=1.0)
    with pytest.raises(ValueError, match="1-D"):
        Observation(step=1, val_loss=[[1.0]])
    with pytest.raises(ValueError, match="train_count"):
        Observation(step=1, train_count=[-1, 2])
