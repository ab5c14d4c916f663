"""OP-Mix's pure parts: proxy design, law fit, KL-regularized proposer and the policy."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.optimize import minimize

from streammix.mixing import Observation, OpMixPolicy, ProbeObservation, make_policy
from streammix.mixing.mixing_law import (
    fit_laws,
    huber_objective,
    kkt_residual,
    objective,
    propose,
    proxy_design,
)
from streammix.mixing.simulate import decisions_identical

# ----------------------------------------------------------------------------- design


def test_design_is_vertices_then_seeded_dirichlet() -> None:
    x = proxy_design(3, 5, seed=7)
    assert x.shape == (8, 3)
    np.testing.assert_array_equal(x[:3], np.eye(3))
    np.testing.assert_allclose(x.sum(axis=1), 1.0, atol=1e-15)
    assert np.all(x >= 0)
    np.testing.assert_array_equal(x, proxy_design(3, 5, seed=7))
    assert not np.array_equal(x, proxy_design(3, 5, seed=8))
    assert not np.array_equal(x, proxy_design(3, 5, seed=7, round_index=1))
    np.testing.assert_array_equal(proxy_design(4, 0), np.eye(4))
    with pytest.raises(ValueError, match="num_random"):
        proxy_design(3, -1)
    with pytest.raises(ValueError, match="alpha"):
        proxy_design(3, 2, alpha=0.0)


# ----------------------------------------------------------------------------- law fit


def synthetic_law(seed: int, m: int = 3, n: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return np.log(rng.uniform(1.5, 3.0, size=n)), rng.uniform(-1.5, 0.5, size=(n, m))


@pytest.mark.parametrize("seed", [0, 1])
def test_fit_recovers_known_parameters(seed: int) -> None:
    log_c, slopes = synthetic_law(seed)
    x = proxy_design(3, 9, seed=seed)
    y = np.exp(log_c)[None, :] + np.exp(x @ slopes.T)
    fit = fit_laws(x, y, num_starts=6, seed=seed)
    np.testing.assert_allclose(fit.log_c, log_c, atol=1e-4)
    np.testing.assert_allclose(fit.slopes, slopes, atol=1e-4)
    np.testing.assert_allclose(fit.predict(x), y, atol=1e-6)
    assert fit.huber.shape == (3,) and np.all(fit.huber < 1e-10)


def test_fit_is_robust_to_one_outlier_and_seeded() -> None:
    log_c, slopes = synthetic_law(3)
    x = proxy_design(3, 12, seed=3)
    y = (np.exp(log_c)[None, :] + np.exp(x @ slopes.T))[:, :1]
    y[5, 0] += 2.0  # one diverged proxy: Huber's linear tail keeps the fit on the others
    fit = fit_laws(x, y, num_starts=4, seed=3)
    others = np.arange(len(x)) != 5
    assert np.max(np.abs(fit.predict(x)[others, 0] - y[others, 0])) < 0.01
    squares = fit_laws(x, y, num_starts=4, seed=3, delta=100.0)  # least squares follows it
    assert np.max(np.abs(squares.predict(x)[others, 0] - y[others, 0])) > 0.05
    again = fit_laws(x, y, num_starts=4, seed=3)
    np.testing.assert_array_equal(fit.slopes, again.slopes)


def test_huber_gradient_matches_finite_differences() -> None:
    x = proxy_design(3, 4, seed=1)
    y = np.linspace(2.0, 3.0, 7)
    params = np.array([0.3, -0.5, 0.2, 0.1])
    for delta in (0.02, 10.0):  # linear and quadratic regime
        value, grad = huber_objective(params, x, y, delta)
        eps = 1e-6
        numeric = [(huber_objective(params + eps * e, x, y, delta)[0]
                    - huber_objective(params - eps * e, x, y, delta)[0]) / (2 * eps)
                   for e in np.eye(4)]
        np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-8)
        assert value > 0


def test_fit_errors() -> None:
    x = proxy_design(2, 2)
    with pytest.raises(ValueError, match="shape"):
        fit_laws(x, np.ones((3, 2)))
    with pytest.raises(ValueError, match="finite"):
        fit_laws(x, np.full((4, 2), np.nan))
    with pytest.raises(ValueError, match="sum to 1"):
        fit_laws(np.ones((4, 2)), np.ones((4, 2)))
    with pytest.raises(ValueError, match="2-D"):
        fit_laws(np.ones(4), np.ones((4, 2)))
    with pytest.raises(ValueError, match="num_starts"):
        fit_laws(x, np.ones((4, 2)), num_starts=0)


# ----------------------------------------------------------------------------- proposer


def problems() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(11)
    out = []
    for m, n in [(2, 2), (3, 3), (5, 5), (4, 2), (6, 8)]:
        for _ in range(4):
            out.append((rng.uniform(-4.0, 2.0, size=(n, m)), rng.dirichlet(np.ones(m))))
    return out


def softmax_objective(z: np.ndarray, slopes: np.ndarray, prior: np.ndarray, kl_reg: float):
    weights = np.exp(z - z.max())
    return objective(weights / weights.sum(), slopes, prior, kl_reg)


@pytest.mark.parametrize("kl_reg", [1e-3, 0.02, 0.05, 0.5, 5.0])
def test_proposer_meets_kkt_and_beats_a_generic_solver(kl_reg: float) -> None:
    for slopes, prior in problems():
        x = propose(slopes, prior, kl_reg)
        assert x.shape == prior.shape and abs(x.sum() - 1.0) < 1e-12 and np.all(x > 0)
        if x.min() > 1e-200:  # below, float64 cannot resolve log(x) (x_j ~ exp(-700))
            assert kkt_residual(x, slopes, prior, kl_reg) < 1e-9
        best = objective(x, slopes, prior, kl_reg)
        # An independent solve (softmax parametrization, BFGS) never does better.
        result = minimize(softmax_objective, np.log(prior), args=(slopes, prior, kl_reg))
        assert best <= result.fun + 1e-12
        rng = np.random.default_rng(0)
        for z in rng.dirichlet(np.ones(prior.size), size=200):
            assert best <= objective(z, slopes, prior, kl_reg) + 1e-12


def test_proposer_converges_on_many_random_problems() -> None:
    rng = np.random.default_rng(2)
    for _ in range(300):
        m, n = rng.integers(2, 12, size=2)
        slopes = rng.normal(size=(n, m)) * 10 ** rng.uniform(-2, 0.7)  # |t| up to ~15
        prior = rng.dirichlet(np.full(m, 10 ** rng.uniform(-1, 1)))
        kl_reg = 10 ** rng.uniform(-3, 3)
        x = propose(slopes, prior, kl_reg)
        assert abs(x.sum() - 1.0) < 1e-12
        assert objective(x, slopes, prior, kl_reg) <= objective(prior, slopes, prior, kl_reg)


def test_policy_keeps_the_prior_if_the_proposer_fails(monkeypatch) -> None:
    import streammix.mixing.opmix as opmix_module

    def broken(*args, **kwargs):
        raise RuntimeError("no convergence")

    monkeypatch.setattr(opmix_module, "propose", broken)
    policy = OpMixPolicy(probe_at=4, **FAST)
    _, state = policy.start(policy.init(3, [0.2, 0.3, 0.5]))
    _, state = policy.update(state, Observation(step=4))
    decision, _ = policy.update(state, LawEnvironment().probe(policy, state, 4))
    np.testing.assert_allclose(decision.weights, [0.2, 0.3, 0.5])
    assert decision.info["propose_failed"] == 1.0


def test_kkt_residual_detects_a_non_optimal_point() -> None:
    slopes, prior = problems()[5]
    x = propose(slopes, prior, 0.05)
    shifted = 0.9 * x + 0.1 * prior
    assert kkt_residual(shifted, slopes, prior, 0.05) > 1e-3
    assert kkt_residual(np.r_[x[:-1], 0.0] / x[:-1].sum(), slopes, prior, 0.05) == math.inf


def test_large_kl_returns_the_prior() -> None:
    for slopes, prior in problems():
        np.testing.assert_allclose(propose(slopes, prior, 1e9), prior, atol=1e-8)
        np.testing.assert_array_equal(propose(slopes, prior, math.inf), prior / prior.sum())
        far = propose(slopes, prior, 1e3)
        near = propose(slopes, prior, 1e-2)
        assert np.abs(far - prior).sum() <= np.abs(near - prior).sum() + 1e-12


def test_zero_prior_stays_zero_and_small_kl_follows_the_law() -> None:
    slopes = np.array([[-3.0, 0.0, 0.0], [0.0, 0.0, 0.0]])  # domain 0 lowers loss 0
    x = propose(slopes, np.array([0.0, 0.5, 0.5]), 0.05)
    assert x[0] == 0.0 and x[1] == pytest.approx(0.5)
    x = propose(slopes, np.array([1 / 3, 1 / 3, 1 / 3]), 1e-3)
    assert x[0] > 0.99


def test_proposer_errors() -> None:
    with pytest.raises(ValueError, match="kl_reg"):
        propose(np.zeros((2, 2)), np.array([0.5, 0.5]), 0.0)
    with pytest.raises(ValueError, match="shape|slopes must be"):
        propose(np.zeros((2, 3)), np.array([0.5, 0.5]))
    with pytest.raises(ValueError, match="prior"):
        propose(np.zeros((2, 2)), np.array([1.5, -0.5]))
    with pytest.raises(ValueError, match="finite"):
        propose(np.full((2, 2), np.nan), np.array([0.5, 0.5]))


# ----------------------------------------------------------------------------- policy


class LawEnvironment:
    """Proxies' held-out losses from a known law; domain 2 is noise (it raises every loss)."""

    slopes = np.array([[-1.0, -0.2, 0.6], [-0.2, -1.0, 0.6], [0.1, 0.1, 0.2]])
    log_c = np.log(np.array([2.0, 2.5, 3.0]))

    def probe(self, policy: OpMixPolicy, state: dict, step: int) -> ProbeObservation:
        x = policy.proxy_mixtures(state)
        y = np.exp(self.log_c)[None, :] + np.exp(x @ self.slopes.T)
        return ProbeObservation(step=step, proxy_mixtures=x, proxy_losses=y)


FAST = {"fit_starts": 3, "fit_max_iter": 60, "num_random": 6}


def test_policy_flow_moves_weight_away_from_noise() -> None:
    policy = make_policy("opmix", probe_at=20, total_steps=100, **FAST)
    state = policy.init(3, np.array([0.2, 0.3, 0.5]))
    decision, state = policy.start(state)
    assert (decision.phase, decision.num_steps, decision.evaluate) == ("prior", 20, False)
    np.testing.assert_allclose(decision.weights, [0.2, 0.3, 0.5])
    decision, state = policy.update(state, Observation(step=20))
    assert (decision.phase, decision.num_steps, decision.evaluate) == ("probe", 0, True)
    assert policy.proxy_mixtures(state).shape == (9, 3)
    decision, state = policy.update(state, LawEnvironment().probe(policy, state, 20))
    assert (decision.phase, decision.num_steps, decision.evaluate) == ("opmix", 80, False)
    expected = propose(LawEnvironment.slopes, np.array([0.2, 0.3, 0.5]), 0.05)
    np.testing.assert_allclose(decision.weights, expected, atol=1e-3)  # 3 short fits
    assert decision.weights[2] < 0.05 < 0.5
    assert decision.info["kkt_residual"] < 1e-8 and decision.info["proxies_used"] == 9


def run_opmix(policy: OpMixPolicy, stop_after: int | None = None, resume=None):
    """Every decision of two probe rounds; optionally stop and return the state dict."""
    env = LawEnvironment()
    if resume is None:
        state = policy.init(3)
        decision, state = policy.start(state)
        decisions = [decision]
    else:
        state, decision = policy.load_state_dict(json.loads(resume[0])), resume[1]
        decisions = []
    while len(decisions) + (0 if resume is None else resume[2]) < 5:
        if stop_after is not None and len(decisions) == stop_after:
            return decisions, (json.dumps(policy.state_dict(state)), decision, len(decisions))
        step = state["next_step"]
        if decision.phase == "probe":
            observation = env.probe(policy, state, step)
        else:
            observation = Observation(step=step)
        decision, state = policy.update(state, observation)
        decisions.append(decision)
    return decisions, None


@pytest.mark.parametrize("target", [None, (0.0, 1.0, 2.0)])
def test_state_round_trip_resumes_identically(target) -> None:
    policy = OpMixPolicy(probe_at=10, probe_every=30, prior="current", fit_starts=1,
                         fit_max_iter=20, num_random=4, target_weights=target)
    full, _ = run_opmix(policy)
    assert [d.phase for d in full] == ["prior", "probe", "opmix", "probe", "opmix"]
    for stop_after in (2, 4):  # at a probe request and after a decision
        head, saved = run_opmix(policy, stop_after=stop_after)
        tail, _ = run_opmix(policy, resume=saved)
        assert decisions_identical(full, head + tail)
        state = policy.load_state_dict(json.loads(saved[0]))
        assert json.dumps(policy.state_dict(state)) == saved[0]


def test_policy_errors() -> None:
    with pytest.raises(ValueError, match="probe_at is not set"):
        OpMixPolicy().start(OpMixPolicy().init(2))
    for options, error in [({"probe_at": 0}, ValueError), ({"kl_reg": 0.0}, ValueError),
                           ({"kl_reg": "big"}, TypeError), ({"prior": "last"}, ValueError),
                           ({"fit_starts": 0}, ValueError), ({"num_random": -1}, ValueError),
                           ({"huber_delta": -1.0}, ValueError), ({"seed": 1.5}, TypeError)]:
        with pytest.raises(error):
            make_policy("opmix", **options)
    policy = OpMixPolicy(probe_at=5, **FAST)
    _, state = policy.start(policy.init(2))
    with pytest.raises(ValueError, match="no probe is due"):
        policy.proxy_mixtures(state)
    with pytest.raises(ValueError, match="step 4"):
        policy.update(state, Observation(step=4))
    _, state = policy.update(state, Observation(step=5))
    with pytest.raises(TypeError, match="ProbeObservation.*OnlineMixing"):
        policy.update(state, Observation(step=5, val_loss=[1.0, 2.0]))
    x = policy.proxy_mixtures(state)
    with pytest.raises(ValueError, match="3 columns but there are 2"):
        policy.update(state, ProbeObservation(step=5, proxy_mixtures=np.full((2, 3), 1 / 3),
                                              proxy_losses=np.ones((2, 2))))
    nan = np.full((x.shape[0], 2), np.nan)
    with pytest.raises(ValueError, match="at least 2 proxies"):
        policy.update(state, ProbeObservation(step=5, proxy_mixtures=x, proxy_losses=nan))
    with pytest.raises(ValueError, match="belongs to policy"):
        policy.load_state_dict({"policy": "aioli", "version": 1})
    with pytest.raises(ValueError, match="same options"):
        OpMixPolicy(probe_at=6, **FAST).load_state_dict(policy.state_dict(state))


def test_probe_observation_errors() -> None:
    x = proxy_design(2, 1)
    with pytest.raises(ValueError, match="one row per proxy"):
        ProbeObservation(step=0, proxy_mixtures=x, proxy_losses=np.ones((2, 2)))
    with pytest.raises(ValueError, match="sum to 1"):
        ProbeObservation(step=0, proxy_mixtures=2 * x, proxy_losses=np.ones((3, 2)))
    with pytest.raises(ValueError, match="base_loss"):
        ProbeObservation(step=0, proxy_mixtures=x, proxy_losses=np.ones((3, 2)),
                         base_loss=[1.0])
    ok = ProbeObservation(step=0, proxy_mixtures=x, proxy_losses=np.ones((3, 2)))
    assert not ok.proxy_losses.flags.writeable


# ----------------------------------------------------------------------------- target weights


def test_equal_target_weights_are_the_reference_objective() -> None:
    for slopes, prior in problems():
        n = slopes.shape[0]
        equal = propose(slopes, prior, 0.05, target=np.full(n, 2.0))  # normalized to 1/n
        np.testing.assert_allclose(equal, propose(slopes, prior, 0.05), rtol=0, atol=1e-12)
        assert objective(prior, slopes, prior, 0.05, np.ones(n)) == pytest.approx(
            objective(prior, slopes, prior, 0.05))


def weighted_softmax_objective(z: np.ndarray, slopes: np.ndarray, prior: np.ndarray,
                               kl_reg: float, target: np.ndarray) -> float:
    weights = np.exp(z - z.max())
    return objective(weights / weights.sum(), slopes, prior, kl_reg, target)


@pytest.mark.parametrize("kl_reg", [0.02, 0.05, 0.5])
def test_weighted_proposer_meets_kkt_and_beats_a_generic_solver(kl_reg: float) -> None:
    rng = np.random.default_rng(5)
    for slopes, prior in problems():
        target = rng.dirichlet(np.ones(slopes.shape[0]))
        x = propose(slopes, prior, kl_reg, target=target)
        assert abs(x.sum() - 1.0) < 1e-12 and np.all(x > 0)
        if x.min() > 1e-200:
            assert kkt_residual(x, slopes, prior, kl_reg, target) < 1e-9
        best = objective(x, slopes, prior, kl_reg, target)
        result = minimize(weighted_softmax_objective, np.log(prior),
                          args=(slopes, prior, kl_reg, target))
        assert best <= result.fun + 1e-12
        for z in rng.dirichlet(np.ones(prior.size), size=100):
            assert best <= objective(z, slopes, prior, kl_reg, target) + 1e-12


def test_a_zero_target_weight_drops_that_evaluation_domain() -> None:
    for slopes, prior in problems():
        if slopes.shape[0] < 2:
            continue
        target = np.r_[0.0, np.full(slopes.shape[0] - 1, 1.0)]
        np.testing.assert_allclose(propose(slopes, prior, 0.05, target=target),
                                   propose(slopes[1:], prior, 0.05), rtol=0, atol=1e-12)


def test_the_target_moves_weight_to_what_lowers_its_loss() -> None:
    """LawEnvironment: domain 0 lowers loss 0 and domain 1 lowers loss 1; a target that only
    cares about evaluation domain 1 puts more weight on domain 1 than equal weights do."""
    slopes, prior = LawEnvironment.slopes, np.full(3, 1 / 3)
    equal = propose(slopes, prior, 0.05)
    second = propose(slopes, prior, 0.05, target=[0.0, 1.0, 0.0])
    assert second[1] > equal[1] + 0.1 and second[0] < equal[0]
    policy = make_policy("opmix", probe_at=20, total_steps=100, target_weights=[0, 1, 0], **FAST)
    state = policy.init(3)
    _, state = policy.start(state)
    _, state = policy.update(state, Observation(step=20))
    decision, state = policy.update(state, LawEnvironment().probe(policy, state, 20))
    np.testing.assert_allclose(decision.weights, second, atol=2e-3)  # 3 short fits
    assert decision.info["kkt_residual"] < 1e-8
    predicted = LawEnvironment.log_c[1]  # predicted_loss is the target's loss, loss 1
    assert decision.info["predicted_loss"] == pytest.approx(
        np.exp(predicted) + np.exp(slopes[1] @ decision.weights), abs=0.05)


def test_target_weights_errors_and_old_checkpoints() -> None:
    for bad in ([1.0, -1.0], [0.0, 0.0], [math.nan, 1.0], []):
        with pytest.raises(ValueError):
            OpMixPolicy(target_weights=bad)
    policy = OpMixPolicy(probe_at=5, target_weights=[1.0, 1.0, 1.0], **FAST)
    _, state = policy.start(policy.init(2))
    _, state = policy.update(state, Observation(step=5))
    x = policy.proxy_mixtures(state)
    with pytest.raises(ValueError, match="target_weights has 3 entries.*2 held-out"):
        policy.update(state, ProbeObservation(step=5, proxy_mixtures=x,
                                              proxy_losses=np.ones((x.shape[0], 2))))
    # A checkpoint from before target_weights existed (no such key) loads into a policy
    # without them, and is refused by one with them.
    plain = OpMixPolicy(probe_at=5, **FAST)
    saved = plain.state_dict(plain.init(2))
    assert "target_weights" not in saved["params"]
    plain.load_state_dict(saved)
    with pytest.raises(ValueError, match="same options"):
        OpMixPolicy(probe_at=5, target_weights=[1.0, 0.0], **FAST).load_state_dict(saved)
