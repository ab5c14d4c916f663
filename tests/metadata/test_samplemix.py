"""SampleMix weights, caps, rounding and the report."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streammix.core.rng import PURPOSE_ROUNDING, derive_key, uniform01
from streammix.metadata.samplemix import (
    SampleMixConfig,
    expected_counts,
    samplemix_plan,
    samplemix_weights,
    seeded_round,
    seeded_round_reference,
    solve_multiplier,
    systematic_round,
)


def make_inputs(n: int = 400, domains: int = 3, seed: int = 0, max_tokens: int = 3000):
    rng = np.random.default_rng(seed)
    return {
        "quality": rng.random(n),
        "diversity": rng.random(n),
        "num_tokens": rng.integers(1, max_tokens, n),
        "domain_ids": rng.integers(0, domains, n),
    }


def plan(inputs, **config):
    return samplemix_plan(**inputs, config=SampleMixConfig(**config))


def domain_tokens(result, inputs) -> dict[int, int]:
    tokens = result.counts.astype(np.int64) * inputs["num_tokens"]
    return {
        int(d): int(tokens[inputs["domain_ids"] == d].sum())
        for d in np.unique(inputs["domain_ids"])
    }


def check_systematic_tolerance(result, inputs) -> None:
    """Per domain, planned tokens are within the domain's longest sample of the expectation."""
    planned = domain_tokens(result, inputs)
    for d, entry in result.report["domains"].items():
        longest = inputs["num_tokens"][inputs["domain_ids"] == d].max()
        assert abs(planned[d] - entry["expected_tokens"]) <= longest + 1e-6
        assert entry["planned_tokens"] == planned[d]


# ----------------------------------------------------------------------------- budget


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 300),
    domains=st.integers(1, 5),
    seed=st.integers(0, 10**6),
    budget_factor=st.floats(0.05, 20.0),
)
def test_systematic_counts_cover_the_budget(n, domains, seed, budget_factor) -> None:
    inputs = make_inputs(n, domains, seed)
    budget = max(1, int(budget_factor * inputs["num_tokens"].sum()))
    result = plan(inputs, token_budget=budget, seed=seed)
    assert result.counts.dtype == np.int32 and np.all(result.counts >= 0)
    assert result.report["expected_tokens"] == pytest.approx(budget, rel=1e-9)
    check_systematic_tolerance(result, inputs)
    present = np.unique(inputs["domain_ids"])
    longest = sum(inputs["num_tokens"][inputs["domain_ids"] == d].max() for d in present)
    assert abs(result.report["planned_tokens"] - budget) <= longest


def test_domain_counts_are_within_one_of_expected_counts() -> None:
    inputs = make_inputs(2000, 4, 5)
    config = SampleMixConfig(token_budget=7_654_321, seed=9)
    result = samplemix_plan(**inputs, config=config)
    weights = samplemix_weights(inputs["quality"], inputs["diversity"], config.alpha)
    expected, _ = expected_counts(weights, inputs["num_tokens"], inputs["domain_ids"], config)
    for d in range(4):
        members = inputs["domain_ids"] == d
        assert abs(result.counts[members].sum() - expected[members].sum()) < 1
    assert np.all(np.abs(result.counts - expected) < 1)


def test_expected_count_is_weight_over_mean_tokens() -> None:
    inputs = {
        "quality": [1.0, 0.5, 0.0],
        "diversity": [1.0, 0.5, 0.0],
        "num_tokens": np.array([100, 300, 50]),
        "domain_ids": np.array([0, 0, 1]),
    }
    config = SampleMixConfig(token_budget=2500)
    weights = samplemix_weights(np.array(inputs["quality"]), np.array(inputs["diversity"]), 0.8)
    expected, _ = expected_counts(weights, inputs["num_tokens"], inputs["domain_ids"], config)
    # p = (1, 0.5, 0): lambda = 2500 / (100 + 150)
    np.testing.assert_allclose(expected, [10.0, 5.0, 0.0])
    result = samplemix_plan(**inputs, config=config)
    np.testing.assert_array_equal(result.counts, [10, 5, 0])


def test_zero_weight_and_zero_token_samples_are_never_drawn() -> None:
    inputs = make_inputs(200, 2, 1)
    inputs["quality"][:20] = 0.0
    inputs["diversity"][:20] = 0.0
    inputs["num_tokens"][20:30] = 0
    for rounding in ["systematic", "seeded"]:
        result = plan(inputs, token_budget=10**7, rounding=rounding)
        assert np.all(result.counts[:30] == 0)
        assert np.all(result.counts[30:] > 0)


# ----------------------------------------------------------------------------- alpha


@pytest.mark.parametrize("rounding", ["systematic", "seeded"])
def test_alpha_zero_is_quality_only_and_one_is_diversity_only(rounding: str) -> None:
    inputs = make_inputs(300, 3, 2)
    other = np.random.default_rng(7).random(300)
    a0 = plan(inputs, token_budget=3 * 10**6, alpha=0.0, rounding=rounding)
    a0_other = plan(
        {**inputs, "diversity": other}, token_budget=3 * 10**6, alpha=0.0, rounding=rounding
    )
    a1_swapped = plan(
        {**inputs, "quality": other, "diversity": inputs["quality"]},
        token_budget=3 * 10**6,
        alpha=1.0,
        rounding=rounding,
    )
    np.testing.assert_array_equal(a0.counts, a0_other.counts)
    np.testing.assert_array_equal(a0.counts, a1_swapped.counts)
    np.testing.assert_allclose(samplemix_weights(np.ones(2), np.zeros(2), 0.25), [0.75, 0.75])


# ----------------------------------------------------------------------------- caps


def test_solve_multiplier_matches_bisection() -> None:
    rng = np.random.default_rng(4)
    for _ in range(50):
        n = int(rng.integers(1, 60))
        w = rng.random(n) * (rng.random(n) > 0.2)
        t = rng.integers(0, 100, n).astype(np.int64)
        cap = float(rng.integers(1, 5))
        target = float(rng.random() * cap * t.sum() * 1.2)
        lam = solve_multiplier(w, t, target, cap)
        reachable = cap * t[(w > 0) & (t > 0)].sum()
        if target > reachable:
            assert lam == float("inf")
            continue
        assert np.dot(np.minimum(cap, lam * w), t) == pytest.approx(target, rel=1e-9, abs=1e-9)
        assert solve_multiplier(w, t, target, None) * np.dot(w, t) == pytest.approx(target)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(2, 200),
    seed=st.integers(0, 10**6),
    repeats=st.integers(1, 6),
    factor=st.floats(0.1, 3.0),
)
def test_per_sample_cap_is_respected_and_excess_redistributed(n, seed, repeats, factor) -> None:
    inputs = make_inputs(n, 2, seed)
    budget = max(1, int(factor * inputs["num_tokens"].sum()))
    result = plan(inputs, token_budget=budget, max_repeats_per_sample=repeats, seed=seed)
    assert result.counts.max() <= repeats
    reachable = repeats * int(inputs["num_tokens"].sum())
    if budget <= reachable:
        assert result.report["shortfall_tokens"] == pytest.approx(0.0, abs=1e-6 * budget)
        check_systematic_tolerance(result, inputs)
    else:
        assert np.all(result.counts == repeats)
        assert result.report["shortfall_tokens"] == pytest.approx(budget - reachable)


def test_domain_share_cap_moves_the_excess_to_other_domains() -> None:
    inputs = make_inputs(900, 3, 11)
    inputs["quality"][inputs["domain_ids"] == 0] = 1.0
    inputs["diversity"][inputs["domain_ids"] == 0] = 1.0
    free = plan(inputs, token_budget=5 * 10**6)
    capped = plan(inputs, token_budget=5 * 10**6, max_domain_share=0.4)
    assert free.report["domains"][0]["share_after"] > 0.45
    entry = capped.report["domains"][0]
    longest = inputs["num_tokens"][inputs["domain_ids"] == 0].max()
    assert entry["share_capped"] and entry["expected_tokens"] == pytest.approx(0.4 * 5 * 10**6)
    assert entry["planned_tokens"] <= 0.4 * 5 * 10**6 + longest
    assert capped.report["expected_tokens"] == pytest.approx(5 * 10**6)
    # the uncapped domains keep their relative weights: one common multiplier
    config = SampleMixConfig(token_budget=5 * 10**6, max_domain_share=0.4)
    weights = samplemix_weights(inputs["quality"], inputs["diversity"], 0.8)
    expected, held = expected_counts(weights, inputs["num_tokens"], inputs["domain_ids"], config)
    rest = inputs["domain_ids"] != 0
    assert held == {0}
    ratio = expected[rest] / weights[rest]
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-12)


def test_both_caps_together_and_unreachable_shares() -> None:
    inputs = make_inputs(600, 3, 12)
    result = plan(inputs, token_budget=4 * 10**6, max_repeats_per_sample=4, max_domain_share=0.5)
    assert result.counts.max() <= 4
    budget = 4 * 10**6
    for d, entry in result.report["domains"].items():
        longest = inputs["num_tokens"][inputs["domain_ids"] == d].max()
        assert entry["planned_tokens"] <= 0.5 * budget + longest
    short = plan(inputs, token_budget=budget, max_domain_share=0.2)
    assert short.report["shortfall_tokens"] == pytest.approx(0.4 * budget)


# ----------------------------------------------------------------------------- rounding


def test_plans_are_deterministic_and_seed_dependent() -> None:
    inputs = make_inputs(500, 3, 3)
    for rounding in ["systematic", "seeded"]:
        a = plan(inputs, token_budget=10**6, rounding=rounding, seed=5)
        b = plan(inputs, token_budget=10**6, rounding=rounding, seed=5)
        c = plan(inputs, token_budget=10**6, rounding=rounding, seed=6)
        np.testing.assert_array_equal(a.counts, b.counts)
        assert a.report == b.report
        assert not np.array_equal(a.counts, c.counts)


def systematic_round_reference(expected, tokens, domains, seed) -> list[int]:
    counts = [math.floor(x) for x in expected]
    for d in sorted(set(domains)):
        members = sorted(
            (i for i in range(len(expected)) if domains[i] == d), key=lambda i: (tokens[i], i)
        )
        offset = uniform01(derive_key(seed, PURPOSE_ROUNDING, 0, d))
        running = 0.0
        for i in members:
            fraction = expected[i] - math.floor(expected[i])
            before = math.floor(running + offset)
            running += fraction
            if fraction > 0:
                counts[i] += min(1, max(0, math.floor(running + offset) - before))
    return counts


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 6), st.integers(1, 50), st.integers(0, 3)), min_size=1, max_size=80
    ),
    st.integers(0, 1000),
)
def test_systematic_rounding_matches_reference(rows, seed) -> None:
    expected = np.array([r[0] for r in rows])
    tokens = np.array([r[1] for r in rows])
    domains = np.array([r[2] for r in rows])
    fast = systematic_round(expected, tokens, domains, seed)
    reference = systematic_round_reference(
        expected.tolist(), tokens.tolist(), domains.tolist(), seed
    )
    assert fast.tolist() == reference
    for d in set(domains.tolist()):
        members = domains == d
        assert abs(fast[members].sum() - expected[members].sum()) < 1 + 1e-9


def test_seeded_rounding_matches_reference_and_is_unbiased() -> None:
    rng = np.random.default_rng(8)
    expected = rng.random(300) * 4
    keys = rng.integers(0, 2**40, 300)
    fast = seeded_round(expected, keys, seed=17)
    assert fast.tolist() == seeded_round_reference(expected.tolist(), keys.tolist(), seed=17)
    totals = [seeded_round(np.full(1000, 0.3), np.arange(1000), seed=s).sum() for s in range(20)]
    assert abs(np.mean(totals) - 300) < 10


def test_seeded_rounding_uses_sample_keys() -> None:
    inputs = make_inputs(300, 2, 4)
    by_index = plan(inputs, token_budget=10**6, rounding="seeded")
    keys = np.arange(300)[::-1].copy()
    by_key = samplemix_plan(
        **inputs, config=SampleMixConfig(token_budget=10**6, rounding="seeded"), sample_keys=keys
    )
    assert not np.array_equal(by_index.counts, by_key.counts)


# ----------------------------------------------------------------------------- report


def test_report_contents() -> None:
    inputs = make_inputs(400, 3, 6)
    result = plan(inputs, token_budget=2 * 10**6)
    report = result.report
    assert report["alpha"] == 0.8 and report["token_budget"] == 2 * 10**6
    assert sum(e["share_after"] for e in report["domains"].values()) == pytest.approx(1.0)
    assert sum(e["share_before"] for e in report["domains"].values()) == pytest.approx(1.0)
    for d, entry in report["domains"].items():
        members = inputs["domain_ids"] == d
        assert entry["samples"] == members.sum()
        assert sum(entry["repeat_histogram"].values()) == entry["samples"]
        assert entry["samples_never_drawn"] == entry["repeat_histogram"].get(0, 0)
        assert entry["tokens"] == inputs["num_tokens"][members].sum()
    np.testing.assert_array_equal(result.domain_ids, inputs["domain_ids"])


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"diversity": np.zeros(3)}, ValueError, "diversity has 3 values, expected 4"),
        ({"num_tokens": np.ones(3, dtype=int)}, ValueError, "num_tokens must be 1-D with 4"),
        ({"quality": np.array([0.1, np.nan, 0.2, 0.3])}, ValueError, "quality contains NaN"),
        ({"quality": np.array([0.1, 2.0, 0.2, 0.3])}, ValueError, "normalized to"),
        ({"num_tokens": np.array([1, -5, 2, 3])}, ValueError, "num_tokens must be >= 0"),
        ({"num_tokens": np.array([1.5, 2, 2, 3])}, TypeError, "num_tokens must hold integers"),
        ({"domain_ids": np.array([0, -1, 0, 0])}, ValueError, "domain_ids must be >= 0"),
        (
            {"quality": np.zeros(4), "diversity": np.zeros(4)},
            ValueError,
            "every sample has weight 0",
        ),
    ],
)
def test_bad_inputs(change: dict, error: type, message: str) -> None:
    inputs = {
        "quality": np.full(4, 0.5),
        "diversity": np.full(4, 0.5),
        "num_tokens": np.array([10, 20, 30, 40]),
        "domain_ids": np.array([0, 0, 1, 1]),
    }
    with pytest.raises(error, match=message):
        plan({**inputs, **change}, token_budget=1000)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"alpha": 1.5}, ValueError, "alpha"),
        ({"alpha": -0.1}, ValueError, "alpha"),
        ({"token_budget": 0}, ValueError, "token_budget must be > 0"),
        ({"token_budget": -3}, ValueError, "token_budget must be > 0"),
        ({"token_budget": 10.5}, TypeError, "token_budget must be an integer"),
        ({"max_repeats_per_sample": 0}, ValueError, "max_repeats_per_sample"),
        ({"max_domain_share": 0.0}, ValueError, "max_domain_share"),
        ({"max_domain_share": 1.5}, ValueError, "max_domain_share"),
        ({"rounding": "nearest"}, ValueError, "rounding must be one of"),
        ({"seed": -1}, ValueError, "seed"),
    ],
)
def test_bad_config(options: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        SampleMixConfig(**{"token_budget": 100, **options})
