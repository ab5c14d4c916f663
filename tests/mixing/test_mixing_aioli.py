"""Aioli against hand-computed rounds: a linear loss model whose interaction matrix is known."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from streammix.mixing import AioliPolicy, Decision, Observation, make_policy
from streammix.mixing.aioli import default_options, probe_order
from streammix.mixing.simulate import decisions_identical, run_policy, toy_losses


class LinearLosses:
    """Validation loss drops by ``A_true @ r`` whenever the model trains on realized mixture r."""

    def __init__(self, a_true: np.ndarray, start: float = 5.0, realized=None) -> None:
        self.a_true = np.asarray(a_true, dtype=np.float64)
        self.loss = np.full(self.a_true.shape[0], start)
        self.realized = realized  # decision -> counts, or None to report no counts

    def __call__(self, decision: Decision, step: int) -> Observation:
        counts = None if self.realized is None else np.asarray(self.realized(decision), float)
        if decision.num_steps > 0:
            mixture = decision.weights if counts is None else counts / counts.sum()
            self.loss = self.loss - self.a_true @ mixture
        return Observation(step=step, val_loss=self.loss.copy(), train_count=counts)


def run_round(policy: AioliPolicy, env, num_domains: int, rounds: int = 1) -> list[Decision]:
    probes = policy.resolve(num_domains)["lp_rounds"] * num_domains
    decisions, _ = run_policy(policy, num_domains, env, rounds * (probes + 1))
    return decisions


def normalized(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=np.float64)
    if a.min() < 0:
        a = a - a.min()
    return a / a.sum()


def test_two_domains_one_hot_by_hand() -> None:
    # Training on domain 0 lowers the losses by (0.3, 0.1), on domain 1 by (0.0, 0.2):
    # G = A = [[0.3, 0.0], [0.1, 0.2]], sum 0.6 -> column sums (2/3, 1/3).
    policy = AioliPolicy(lp_rounds=1, lp_steps=1, eta=1.0, one_hot_factor=1.0, update_steps=5)
    decisions = run_round(policy, LinearLosses([[0.3, 0.0], [0.1, 0.2]]), 2)
    assert (
        decisions[0].num_steps == 0 and decisions[0].evaluate and decisions[0].phase == "baseline"
    )
    assert sorted(d.phase for d in decisions[1:3]) == ["probe:0", "probe:1"]
    for probe in decisions[1:3]:
        j = int(probe.phase.split(":")[1])
        assert probe.weights.tolist() == [1.0 if i == j else 0.0 for i in range(2)]
    train = decisions[3]
    assert (train.phase, train.num_steps, train.evaluate) == ("train", 3, True)
    expected_p0 = math.exp(2 / 3) / (math.exp(2 / 3) + math.exp(1 / 3))
    assert train.weights[0] == pytest.approx(expected_p0, rel=1e-12)
    assert train.info["a_colsum_0"] == pytest.approx(2 / 3, rel=1e-12)


@pytest.mark.parametrize("realized", [False, True])
def test_two_domains_soft_probes_recover_interactions(realized: bool) -> None:
    # h = 0.75: probe j trains on (0.75, 0.25) or (0.25, 0.75). The solve must undo the mixing;
    # with reported counts, it must use the realized mixture (here 7:3 instead of 3:1).
    a_true = np.array([[0.4, -0.1], [0.05, 0.2]])
    counts = (lambda d: [7, 3] if d.weights[0] > 0.5 else [3, 7]) if realized else None
    policy = AioliPolicy(lp_rounds=2, lp_steps=3, eta=2.0, one_hot_factor=0.75, update_steps=20)
    train = run_round(policy, LinearLosses(a_true, realized=counts), 2)[-1]
    # min -0.1 -> shifted [[0.5, 0], [0.15, 0.3]], total 0.95 -> column sums (0.65, 0.3)/0.95
    colsum = np.array([0.65, 0.3]) / 0.95
    assert [train.info["a_colsum_0"], train.info["a_colsum_1"]] == pytest.approx(colsum, abs=1e-12)
    expected = np.exp(2.0 * colsum) / np.exp(2.0 * colsum).sum()
    np.testing.assert_allclose(train.weights, expected, rtol=1e-12)
    assert train.num_steps == 20 - 2 * 3 * 2


def test_requested_mixtures_when_realized_use_is_off() -> None:
    a_true = np.array([[0.4, 0.1], [0.0, 0.2]])
    counts = lambda d: [7, 3] if d.weights[0] > 0.5 else [3, 7]  # noqa: E731
    policy = AioliPolicy(
        lp_rounds=1,
        lp_steps=1,
        eta=1.0,
        one_hot_factor=0.75,
        update_steps=9,
        use_realized_mixtures=False,
    )
    train = run_round(policy, LinearLosses(a_true, realized=counts), 2)[-1]
    q = np.array([[0.75, 0.25], [0.25, 0.75]])
    w_real = np.array([[0.7, 0.3], [0.3, 0.7]])
    gain = a_true @ w_real.T  # G[:, j] = A r_j
    a = normalized(np.stack([np.linalg.solve(q, row) for row in gain]))
    assert train.info["a_colsum_0"] == pytest.approx(a.sum(0)[0], abs=1e-12)


def reference_rounds(a_by_round, counts_fn, h, lp_rounds, eta, ema, rule, num_domains, orders):
    """The reference trainer's arithmetic, written out loop by loop, on the linear loss model."""
    m = num_domains
    weights, ema_graph = np.ones(m), None
    loss = np.full(m, 5.0)
    history = []
    for i, a_true in enumerate(a_by_round):
        prev = loss.copy()
        graph = np.zeros((m, m))
        mix_sum = np.zeros((m, m))
        for j in orders[i]:
            counts = np.asarray(counts_fn(j), float)
            realized = counts / counts.sum()
            loss = loss - a_true @ realized
            graph[:, j] += prev - loss
            prev = loss.copy()
            mix_sum[j] += realized
        graph /= lp_rounds
        if h != 1:
            w_matrix = mix_sum / lp_rounds
            graph = np.stack([np.linalg.solve(w_matrix, row) for row in graph])
        graph = normalized(graph)
        if rule == "ema":
            ema_graph = graph if i == 0 else (1 - ema) * graph + ema * ema_graph
            weights = np.ones(m) * np.exp(eta * ema_graph.sum(axis=0))
        else:
            base = np.ones(m) if i == 0 else weights
            weights = base * np.exp(eta * graph.sum(axis=0))
        history.append(weights / weights.sum())
        loss = loss - a_true @ (weights / weights.sum())  # the rest of the round
    return history


@pytest.mark.parametrize("rule", ["ema", "multiplicative"])
@pytest.mark.parametrize("num_domains,h", [(2, 0.625), (3, 0.5), (3, 1.0), (4, 0.7)])
def test_rounds_match_reference_arithmetic(rule: str, num_domains: int, h: float) -> None:
    rng = np.random.default_rng(num_domains * 10 + int(h * 100))
    a_by_round = [rng.normal(0.1, 0.1, (num_domains, num_domains)) for _ in range(3)]
    lp_rounds, lp_steps = 2, 3

    def counts_for(j: int) -> np.ndarray:
        counts = np.full(num_domains, (1 - h) / (num_domains - 1) * 48)
        counts[j] = h * 48
        counts = np.floor(counts + 0.5)
        counts[(j + 1) % num_domains] += 1  # realized differs from requested
        return counts

    round_index = {"value": 0}

    class Env:
        loss = np.full(num_domains, 5.0)

        def __call__(self, decision: Decision, step: int) -> Observation:
            if decision.phase.startswith("probe:"):
                counts = counts_for(int(decision.phase.split(":")[1]))
                self.loss = self.loss - a_by_round[round_index["value"]] @ (counts / counts.sum())
                return Observation(step=step, val_loss=self.loss.copy(), train_count=counts)
            if decision.phase == "train":
                self.loss = self.loss - a_by_round[round_index["value"]] @ decision.weights
                round_index["value"] += 1
            return Observation(step=step, val_loss=self.loss.copy(), train_count=None)

    policy = AioliPolicy(
        lp_rounds=lp_rounds,
        lp_steps=lp_steps,
        eta=0.7,
        ema=0.3,
        one_hot_factor=h,
        update_steps=200,
        update_rule=rule,
        seed=5,
    )
    decisions = run_round(policy, Env(), num_domains, rounds=3)
    trains = [d for d in decisions if d.phase == "train"]
    orders = [probe_order(5, r, num_domains, lp_rounds) for r in range(3)]
    expected = reference_rounds(
        a_by_round, counts_for, h, lp_rounds, 0.7, 0.3, rule, num_domains, orders
    )
    assert len(trains) == 3
    for got, want in zip(trains, expected):
        np.testing.assert_allclose(got.weights, want, rtol=1e-10, atol=1e-14)
    probes = [d for d in decisions if d.phase.startswith("probe:")]
    assert [int(d.phase[6:]) for d in probes] == [j for order in orders for j in order]


def test_round_structure_and_permutations() -> None:
    policy = make_policy("aioli", seed=11)
    decisions = run_round(policy, toy_losses(7), 7, rounds=2)
    lp_rounds, lp_steps, _, _, _, update_steps = default_options(7)
    per_round = lp_rounds * 7 + 1
    assert decisions[0].phase == "baseline"
    for r in range(2):
        chunk = decisions[1 + r * per_round : 1 + (r + 1) * per_round]
        probes = [int(d.phase[6:]) for d in chunk[:-1]]
        for k in range(lp_rounds):
            assert sorted(probes[k * 7 : (k + 1) * 7]) == list(range(7))
        assert all(d.evaluate and d.num_steps == lp_steps for d in chunk[:-1])
        assert sum(d.num_steps for d in chunk) == update_steps
    assert probe_order(11, 0, 7, 2) != probe_order(12, 0, 7, 2)
    assert probe_order(11, 0, 7, 2) != probe_order(11, 1, 7, 2)


def test_defaults_table_and_extrapolation() -> None:
    assert default_options(2) == (4, 4, 0.2, 0.1, 0.625, 250)
    assert default_options(3) == (4, 6, 0.1, 0.5, 0.5, 250)
    assert default_options(7) == (2, 10, 1.0, 0.1, 0.75, 200)
    assert default_options(5) == default_options(3)
    assert default_options(14) == (2, 10, 1.0, 0.1, 0.75, 400)
    for m in range(2, 30):
        AioliPolicy().resolve(m)  # every count gets a consistent configuration


def test_prior_phase_and_anchor() -> None:
    policy = AioliPolicy(
        prior_steps=30,
        anchor="initial",
        lp_rounds=1,
        lp_steps=1,
        eta=1.0,
        one_hot_factor=1.0,
        update_steps=5,
    )
    env = LinearLosses([[0.3, 0.0], [0.1, 0.2]])
    decisions, _ = run_policy(policy, 2, env, 3, initial_weights=[3.0, 1.0])
    assert decisions[0].phase == "prior" and decisions[0].num_steps == 30
    assert decisions[0].weights.tolist() == [0.75, 0.25]
    p = np.array([0.75, 0.25]) * np.exp([2 / 3, 1 / 3])
    np.testing.assert_allclose(decisions[-1].weights, p / p.sum(), rtol=1e-12)


def test_flat_losses_keep_uniform_weights() -> None:
    policy = AioliPolicy(lp_rounds=1, lp_steps=1, one_hot_factor=0.75, update_steps=9)
    decisions = run_round(policy, LinearLosses(np.zeros((2, 2))), 2)
    assert decisions[-1].weights.tolist() == [0.5, 0.5]


def test_singular_realized_mixtures_fall_back_to_requested() -> None:
    policy = AioliPolicy(lp_rounds=1, lp_steps=1, one_hot_factor=0.75, update_steps=9)
    env = LinearLosses([[0.2, 0.0], [0.0, 0.1]], realized=lambda d: [5, 5])
    train = run_round(policy, env, 2)[-1]
    assert train.info["solve_fallback"] == 1.0
    assert np.all(np.isfinite(train.weights))


@pytest.mark.parametrize("target", [None, (0.0, 1.0, 2.0)])
@pytest.mark.parametrize("cut", [0, 1, 5, 8, 9, 10, 17])
def test_resume_mid_round_reproduces_decisions(cut: int, target) -> None:
    options = dict(lp_rounds=2, lp_steps=2, update_steps=30, seed=3)
    if target is not None:
        options["target_weights"] = target
    env = toy_losses(3)
    full, _ = run_policy(make_policy("aioli", **options), 3, env, 40)
    head, state = run_policy(make_policy("aioli", **options), 3, env, cut)
    saved = json.loads(json.dumps(make_policy("aioli", **options).state_dict(state)))
    fresh = make_policy("aioli", **options)
    tail, _ = run_policy(fresh, 3, env, 40 - cut, resume=(fresh.load_state_dict(saved), head[-1]))
    assert decisions_identical(full, head + tail)


def test_resume_with_other_options_is_refused() -> None:
    policy = make_policy("aioli", eta=0.3)
    saved = policy.state_dict(policy.init(2))
    with pytest.raises(ValueError, match="same options"):
        make_policy("aioli", eta=0.4).load_state_dict(saved)
    with pytest.raises(ValueError, match="belongs to policy"):
        make_policy("odm").load_state_dict(saved)


@pytest.mark.parametrize(
    "options,match",
    [
        (dict(update_steps=10), "must exceed"),
        (dict(one_hot_factor=0.5), "uniform mixture"),
    ],
)
def test_inconsistent_options_for_domain_count(options: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        AioliPolicy(**options).init(2)


def test_observation_errors() -> None:
    policy = AioliPolicy()
    decision, state = policy.start(policy.init(2))
    with pytest.raises(ValueError, match="needs Observation.val_loss"):
        policy.update(state, Observation(step=0))
    with pytest.raises(ValueError, match="finite"):
        policy.update(state, Observation(step=0, val_loss=[1.0, float("nan")]))
    with pytest.raises(ValueError, match="3 entries"):
        policy.update(state, Observation(step=0, val_loss=[1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="exactly after"):
        policy.update(state, Observation(step=4, val_loss=[1.0, 2.0]))
    with pytest.raises(ValueError, match=">= 2"):
        policy.init(1)


def test_target_weights_by_hand() -> None:
    # The first test's A = [[0.3, 0.0], [0.1, 0.2]] / 0.6 with a target that only cares about
    # evaluation domain 1: scores 2 * A[1] = (1/3, 2/3), so domain 1 (which lowers loss 1
    # most) gets the larger weight; equal weights prefer domain 0.
    a_true = [[0.3, 0.0], [0.1, 0.2]]
    options = {"lp_rounds": 1, "lp_steps": 1, "eta": 1.0, "one_hot_factor": 1.0,
               "update_steps": 5}
    train = run_round(AioliPolicy(target_weights=[0.0, 3.0], **options),
                      LinearLosses(a_true), 2)[3]
    expected_p1 = math.exp(2 / 3) / (math.exp(1 / 3) + math.exp(2 / 3))
    assert train.weights[1] == pytest.approx(expected_p1, rel=1e-12)
    equal = run_round(AioliPolicy(target_weights=[1.0, 1.0], **options),
                      LinearLosses(a_true), 2)[3]
    reference = run_round(AioliPolicy(**options), LinearLosses(a_true), 2)[3]
    np.testing.assert_allclose(equal.weights, reference.weights, rtol=1e-12)
    assert equal.weights[0] > 0.5


def test_target_weights_errors_and_old_checkpoints() -> None:
    for bad in ([1.0, -1.0], [0.0, 0.0], [math.inf, 1.0]):
        with pytest.raises(ValueError, match="target_weights"):
            AioliPolicy(target_weights=bad)
    with pytest.raises(ValueError, match="target_weights has 2 entries but there are 3"):
        AioliPolicy(target_weights=[1.0, 1.0]).init(3)
    plain = AioliPolicy()
    saved = plain.state_dict(plain.init(3))
    assert "target_weights" not in saved["params"]  # checkpoints from before still load
    plain.load_state_dict(saved)
    with pytest.raises(ValueError, match="same options"):
        AioliPolicy(target_weights=[1.0, 0.0, 0.0]).load_state_dict(saved)
