import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streammix.core.interleave import (
    advance_greedy,
    advance_random,
    greedy_reference,
    interleave,
    random_reference,
    skip_greedy,
    skip_random,
)

weights_st = st.lists(st.one_of(st.just(0.0), st.floats(1e-6, 1.0)), min_size=1, max_size=8).filter(
    lambda w: sum(w) > 0
)


@settings(max_examples=150, deadline=None)
@given(weights_st, st.integers(0, 600), st.booleans())
def test_greedy_equals_megatron_reimplementation(weights, size, normalize):
    if normalize:
        weights = [w / sum(weights) for w in weights]
    domains, sample_index = interleave(weights, size)
    ref_domains, ref_index = greedy_reference(weights, size)
    assert domains.dtype == np.int16 and sample_index.dtype == np.int64
    assert domains.tolist() == ref_domains
    assert sample_index.tolist() == ref_index


def test_known_megatron_outputs():
    domains, index = interleave([0.25, 0.75], 8)
    assert np.bincount(domains).tolist() == [2, 6]
    for d in range(2):
        assert index[domains == d].tolist() == list(range([2, 6][d]))
    # Megatron's quirk: at index 1 every error is 0, so the zero-weight domain 0 is picked.
    assert interleave([0.0, 1.0], 3)[0].tolist() == [1, 0, 1]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(1e-3, 1.0), min_size=2, max_size=2), st.integers(1, 3000))
def test_two_domain_prefix_error_below_one(weights, size):
    w = np.array(weights) / sum(weights)
    domains, _ = advance_greedy(w, 0, [0, 0], size)
    counts = np.cumsum(np.eye(2, dtype=np.int64)[domains], axis=0)
    targets = np.arange(1, size + 1)[:, None] * w
    assert np.abs(counts - targets).max() < 1


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(1e-4, 1.0), min_size=2, max_size=8), st.integers(1, 3000))
def test_prefix_error_bounds_for_many_domains(weights, size):
    """No domain is ever a full sample ahead; lagging is bounded by D - 1 (see module doc)."""
    w = np.array(weights) / sum(weights)
    domains, _ = advance_greedy(w, 0, np.zeros(len(w), np.int64), size)
    counts = np.cumsum(np.eye(len(w), dtype=np.int64)[domains], axis=0)
    deficit = np.arange(1, size + 1)[:, None] * w - counts
    assert deficit.min() > -1 - 1e-9
    assert deficit.max() < len(w) - 1


def test_greedy_can_exceed_one_sample_with_three_domains():
    """Documented: Megatron's greedy does not keep every prefix within one sample for D >= 3."""
    w = np.array([5.41551141e-03, 9.73511455e-01, 1.94091826e-05, 2.10536242e-02])
    w /= w.sum()
    domains, _ = advance_greedy(w, 0, np.zeros(4, np.int64), 2000)
    counts = np.cumsum(np.eye(4, dtype=np.int64)[domains], axis=0)
    assert (np.arange(1, 2001)[:, None] * w - counts).max() > 1


@settings(max_examples=60, deadline=None)
@given(weights_st, st.integers(0, 400), st.integers(0, 400))
def test_advance_and_skip_continue_from_any_state(weights, first, second):
    w = np.array(weights)
    zeros = np.zeros(len(w), np.int64)
    whole, counts_whole = advance_greedy(w, 0, zeros, first + second)
    head, counts = advance_greedy(w, 0, zeros, first)
    tail, counts_tail = advance_greedy(w, first, counts, second)
    assert np.concatenate([head, tail]).tolist() == whole.tolist()
    assert counts_tail.tolist() == counts_whole.tolist()
    assert skip_greedy(w, first, counts, second).tolist() == counts_whole.tolist()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(1e-3, 1.0), min_size=1, max_size=6), st.integers(0, 2**40),
       st.integers(0, 9), st.integers(0, 10**9), st.integers(0, 300))  # fmt: skip
def test_random_matches_reference(weights, seed, segment, first, n):
    zeros = np.zeros(len(weights), np.int64)
    picks, counts = advance_random(weights, seed=seed, segment_index=segment, first_position=first,
                                   counts=zeros, n=n)  # fmt: skip
    assert picks.tolist() == random_reference(weights, seed=seed, segment_index=segment,
                                              first_position=first, n=n)  # fmt: skip
    assert counts.tolist() == np.bincount(picks, minlength=len(weights)).tolist()
    skipped = skip_random(weights, seed=seed, segment_index=segment, first_position=first,
                          counts=zeros, n=n)  # fmt: skip
    assert skipped.tolist() == counts.tolist()


def test_random_frequencies_follow_weights():
    domains, index = interleave([0.2, 0.3, 0.5], 200_000, method="random", seed=3)
    freq = np.bincount(domains) / 200_000
    assert np.abs(freq - [0.2, 0.3, 0.5]).max() < 0.01
    assert index[domains == 1].tolist() == list(range(int((domains == 1).sum())))


def test_bad_input():
    with pytest.raises(ValueError, match="non-empty"):
        interleave([], 3)
    with pytest.raises(ValueError, match="finite"):
        interleave([0.5, float("nan")], 3)
    with pytest.raises(ValueError, match="size"):
        interleave([1.0], -1)
    with pytest.raises(ValueError, match="method"):
        interleave([1.0], 3, method="nope")
    with pytest.raises(ValueError, match="seed"):
        interleave([1.0], 3, method="random")
    with pytest.raises(ValueError, match="strictly positive"):
        interleave([1.0, 0.0], 3, method="random", seed=1)
    with pytest.raises(ValueError, match="counts"):
        advance_greedy([0.5, 0.5], 0, [0], 3)
    with pytest.raises(ValueError, match=">= 0"):
        advance_greedy([0.5, 0.5], -1, [0, 0], 3)


@settings(max_examples=60, deadline=None)
@given(weights_st, st.integers(0, 300), st.integers(0, 300))
def test_indexed_greedy_reports_megatron_sample_index(weights, first, second):
    from streammix.core.interleave import advance_greedy_indexed

    ref_domains, ref_index = greedy_reference(weights, first + second)
    zeros = np.zeros(len(weights), np.int64)
    _, counts = advance_greedy(weights, 0, zeros, first)
    labels = np.arange(len(weights), dtype=np.int32) + 10
    domains, index, _ = advance_greedy_indexed(weights, first, counts, second, labels=labels)
    assert (domains - 10).tolist() == ref_domains[first:]
    assert index.tolist() == ref_index[first:]
