import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streammix.core import greedy_skip
from streammix.core.greedy_skip import candidate_states, greedy_counts_at
from streammix.core.interleave import skip_greedy


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


def test_falls_back_when_candidates_are_too_many(monkeypatch):
    monkeypatch.setattr(greedy_skip, "MAX_CANDIDATES", 1)
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
    monkeypatch.setattr(greedy_skip, "MAX_CANDIDATES", 1)
    assert greedy_counts_at(w, 200_000, known=known).tolist() == expected
    with pytest.raises(ValueError, match="known index"):
        greedy_counts_at(w, 10, known=(20, known[1]))
