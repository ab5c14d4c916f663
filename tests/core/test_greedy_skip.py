import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streammix.core import greedy_skip
from streammix.core.greedy_skip import candidate_states, count_upper_bounds, greedy_counts_at
from streammix.core.interleave import advance_greedy, skip_greedy


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(1e-4, 1.0), min_size=1, max_size=7), st.integers(0, 5000))
def test_true_state_is_a_candidate(weights, n):
    w = np.array(weights) / sum(weights)
    truth = skip_greedy(w, 0, np.zeros(len(w), np.int64), n)
    states = candidate_states(w, n, limit=10**6)
    assert (states == truth).all(axis=1).any()
    assert (states.sum(axis=1) == n).all()


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(1e-3, 1.0), min_size=1, max_size=6), st.integers(1 << 16, 600_000))
def test_skip_ahead_equals_replay(weights, n):
    w = np.array(weights) / sum(weights)
    assert (
        greedy_counts_at(w, n).tolist() == skip_greedy(w, 0, np.zeros(len(w), np.int64), n).tolist()
    )


@pytest.mark.parametrize(
    "weights",
    [[0.5, 0.5], [1 / 3] * 3, [0.25] * 4, [0.999, 0.001], [0.7, 0.2, 0.1, 1e-5], [1.0, 0.0 + 1e-9],
     list(np.full(12, 1 / 12))],
)  # fmt: skip
def test_skip_ahead_on_hard_weights(weights):
    w = np.array(weights) / sum(weights)
    for n in (70_000, 123_457, 400_000):
        assert (
            greedy_counts_at(w, n).tolist()
            == skip_greedy(w, 0, np.zeros(len(w), np.int64), n).tolist()
        )


@pytest.mark.parametrize(
    "weights",
    [[0.5, 0.5], [0.7, 0.2, 0.1], [0.999, 0.001], list(np.full(7, 1 / 7)),
     list(1 / np.arange(1, 9)), list(np.random.default_rng(3).random(6) ** 6 + 1e-6)],
)  # fmt: skip
def test_upper_bounds_hold_along_whole_trajectories(weights):
    w = np.array(weights) / sum(weights)
    picks, _ = advance_greedy(w, 0, np.zeros(len(w), np.int64), 2000)
    counts = np.zeros(len(w), np.int64)
    for n in range(2001):
        assert (counts <= count_upper_bounds(w, n)).all(), n
        if n < 2000:
            counts[picks[n]] += 1


def deficits_reference(caps, total):
    """Every vector 0 <= b <= caps with sum total, lexicographic (the obvious way)."""
    return [b for b in itertools.product(*(range(c + 1) for c in caps)) if sum(b) == total]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=1, max_size=6), st.integers(0, 12))
def test_enumeration_matches_reference(caps, total):
    expected = deficits_reference(caps, total)
    out = np.empty((max(len(expected), 1), len(caps)), dtype=np.int32)
    rows = greedy_skip._enumerate_deficits_nb(np.array(caps, np.int64), np.int64(total), out)
    assert [tuple(row) for row in out[:rows].tolist()] == expected


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(-3, 3), min_size=3, max_size=3), min_size=1, max_size=60))
def test_distinct_rows_keeps_first_occurrences(rows):
    states = np.array(rows, dtype=np.int32)
    expected = list(dict.fromkeys(map(tuple, rows)))
    assert [tuple(row) for row in greedy_skip._distinct_rows_nb(states.copy()).tolist()] == expected


@pytest.mark.parametrize("num_domains", [14, 16, 24])
def test_skip_ahead_with_many_domains_uses_candidates(num_domains, monkeypatch):
    calls = []
    run = greedy_skip._run_candidates_nb
    monkeypatch.setattr(greedy_skip, "_run_candidates_nb", lambda *a: calls.append(1) or run(*a))
    w = np.random.default_rng(num_domains).random(num_domains) + 0.05
    w /= w.sum()
    n = 3_000_017
    assert (
        greedy_counts_at(w, n).tolist()
        == skip_greedy(w, 0, np.zeros(num_domains, np.int64), n).tolist()
    )
    assert calls, "the candidate path was not taken"


def test_falls_back_when_candidates_are_too_many(monkeypatch):
    monkeypatch.setattr(greedy_skip, "MAX_CANDIDATE_ENTRIES", 1)
    monkeypatch.setattr(greedy_skip, "_run_candidates_nb", None)  # must not be reached
    w = np.array([0.2, 0.3, 0.5])
    assert (
        greedy_counts_at(w, 100_000).tolist()
        == skip_greedy(w, 0, np.zeros(3, np.int64), 100_000).tolist()
    )


def test_known_state_only_shortens_the_fallback(monkeypatch):
    w = np.array([0.5, 0.25, 0.125, 0.125])
    known = (50_000, skip_greedy(w, 0, np.zeros(4, np.int64), 50_000))
    expected = skip_greedy(w, 0, np.zeros(4, np.int64), 200_000).tolist()
    assert greedy_counts_at(w, 200_000, known=known).tolist() == expected
    monkeypatch.setattr(greedy_skip, "MAX_CANDIDATE_ENTRIES", 1)
    assert greedy_counts_at(w, 200_000, known=known).tolist() == expected
    with pytest.raises(ValueError, match="known index"):
        greedy_counts_at(w, 10, known=(20, known[1]))
