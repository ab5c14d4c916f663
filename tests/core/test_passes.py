from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streammix.core.passes import DomainLayout, PassTables, pass_reference, stream_reference


@st.composite
def layouts(draw, with_counts=None):
    sizes = draw(st.lists(st.integers(0, 12), min_size=1, max_size=9))
    if sum(sizes) == 0:
        sizes[0] = 1
    use_counts = draw(st.booleans()) if with_counts is None else with_counts
    counts = None
    if use_counts:
        counts = np.array(
            draw(st.lists(st.integers(0, 3), min_size=sum(sizes), max_size=sum(sizes)))
        )
        if counts.sum() == 0:
            counts[0] = 1
    return DomainLayout(shard_sizes=tuple(sizes), repeat_counts=counts)


@settings(max_examples=80, deadline=None)
@given(layouts(), st.integers(0, 2**40), st.integers(0, 5), st.integers(1, 5), st.data())
def test_kernel_matches_reference(layout, seed, domain, window, data):
    first = data.draw(st.integers(0, 3 * layout.pass_size))
    count = data.draw(st.integers(0, 3 * layout.pass_size))
    tables = PassTables(layout, seed=seed, domain=domain, window_shards=window)
    fast = tables.elements_to_samples(first, count).tolist()
    slow = stream_reference(layout, seed=seed, domain=domain, first_element=first, count=count,
                            window_shards=window)  # fmt: skip
    assert fast == slow


@settings(max_examples=60, deadline=None)
@given(layouts(), st.integers(0, 2**40), st.integers(0, 6), st.integers(1, 5))
def test_each_pass_is_a_permutation_of_its_multiset(layout, seed, k, window):
    size = layout.pass_size
    tables = PassTables(layout, seed=seed, domain=1, window_shards=window)
    one_pass = tables.elements_to_samples(k * size, size)
    counts = [1] * layout.num_samples if layout.repeat_counts is None else layout.repeat_counts
    expected = Counter({i: int(c) for i, c in enumerate(counts) if c})
    assert Counter(one_pass.tolist()) == expected


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 30), min_size=2, max_size=40), st.integers(1, 6), st.integers(0, 99))
def test_shard_working_set_is_bounded_by_the_window(sizes, window, seed):
    layout = DomainLayout(shard_sizes=tuple(sizes))
    tables = PassTables(layout, seed=seed, domain=0, window_shards=window)
    samples = tables.elements_to_samples(0, layout.pass_size)
    shard_of = np.searchsorted(tables.shard_sample_start, samples, side="right") - 1
    window_size = sum(sorted(sizes)[:window])  # smallest possible window
    for start in range(0, len(samples) - window_size + 1, max(1, window_size // 2)):
        assert len(set(shard_of[start : start + window_size].tolist())) <= 2 * window
    for w in range(len(tables.cache_prefix) - 1):
        lo, hi = tables.cache_prefix[w], tables.cache_prefix[w + 1]
        assert len(set(shard_of[lo:hi].tolist())) <= window


def test_passes_differ_and_repeat_deterministically():
    layout = DomainLayout(shard_sizes=(50,) * 8)
    a = pass_reference(layout, seed=7, domain=0, pass_index=0)
    assert a != pass_reference(layout, seed=7, domain=0, pass_index=1)
    assert a != pass_reference(layout, seed=7, domain=1, pass_index=0)
    assert a != pass_reference(layout, seed=8, domain=0, pass_index=0)
    assert a == pass_reference(layout, seed=7, domain=0, pass_index=0)


def test_zero_count_samples_never_appear():
    counts = np.array([0, 2, 0, 1, 0, 0, 3])
    layout = DomainLayout(shard_sizes=(3, 4), repeat_counts=counts)
    out = PassTables(layout, seed=1, domain=0, window_shards=2).elements_to_samples(0, 60)
    assert set(out.tolist()) == {1, 3, 6}
    assert layout.pass_size == 6 and layout.num_samples == 7


def test_layout_validation():
    with pytest.raises(ValueError, match="non-negative"):
        DomainLayout(shard_sizes=(3, -1))
    with pytest.raises(ValueError, match="entries"):
        DomainLayout(shard_sizes=(3,), repeat_counts=np.array([1, 1]))
    with pytest.raises(ValueError, match=">= 0"):
        DomainLayout(shard_sizes=(2,), repeat_counts=np.array([1, -1]))
    with pytest.raises(TypeError, match="integer"):
        DomainLayout(shard_sizes=(2,), repeat_counts=np.array([1.0, 1.0]))
    empty = PassTables(DomainLayout(shard_sizes=(0,)), seed=0, domain=0, window_shards=1)
    with pytest.raises(ValueError, match="pass_size 0"):
        empty.elements_to_samples(0, 1)
    with pytest.raises(ValueError, match="window_shards"):
        PassTables(DomainLayout(shard_sizes=(2,)), seed=0, domain=0, window_shards=0)


def test_unshuffled_passes_list_shards_and_samples_in_order():
    counts = np.array([1, 0, 2, 1, 1, 3, 1], dtype=np.int64)
    layout = DomainLayout(shard_sizes=(3, 2, 2), repeat_counts=counts)
    expected = [0, 2, 2, 3, 4, 5, 5, 5, 6]
    tables = PassTables(layout, seed=5, domain=1, window_shards=2, shuffle=False)
    got = tables.elements_to_samples(0, 3 * len(expected)).tolist()
    assert got == expected * 3
    assert pass_reference(layout, seed=5, domain=1, pass_index=2, window_shards=2,
                          shuffle=False) == expected
    shuffled = PassTables(layout, seed=5, domain=1, window_shards=2)
    assert shuffled.elements_to_samples(0, len(expected)).tolist() != expected


# ---------------------------------------------------------------- resampled passes ('balanced')


@st.composite
def resampled_layouts(draw):
    sizes = draw(st.lists(st.integers(0, 12), min_size=1, max_size=9))
    if sum(sizes) < 2:
        sizes[0] = 2
    full = draw(st.integers(0, 2))
    extra = draw(st.integers(1, sum(sizes) - 1))
    counts = np.full(sum(sizes), full, dtype=np.int64)
    counts[np.asarray(draw(st.permutations(range(sum(sizes)))))[:extra]] += 1
    return DomainLayout(shard_sizes=tuple(sizes), repeat_counts=counts, resample=True)


@settings(max_examples=60, deadline=None)
@given(resampled_layouts(), st.integers(0, 2**40), st.integers(1, 5), st.booleans(), st.data())
def test_resampled_kernel_matches_reference(layout, seed, window, shuffle, data):
    first = data.draw(st.integers(0, 3 * layout.pass_size))
    count = data.draw(st.integers(0, 3 * layout.pass_size))
    tables = PassTables(layout, seed=seed, domain=2, window_shards=window, shuffle=shuffle)
    tables.elements_to_samples(data.draw(st.integers(0, 4 * layout.pass_size)), 3)  # any state
    fast = tables.elements_to_samples(first, count).tolist()
    slow = stream_reference(layout, seed=seed, domain=2, first_element=first, count=count,
                            window_shards=window, shuffle=shuffle)  # fmt: skip
    assert fast == slow


def test_resampled_passes_redraw_the_extra_copies_with_fixed_totals():
    n, full, extra = 117, 1, 40
    counts = np.full(n, full, dtype=np.int64)
    counts[:extra] += 1
    layout = DomainLayout(shard_sizes=(30, 30, 30, 27), repeat_counts=counts, resample=True)
    tables = PassTables(layout, seed=5, domain=0, window_shards=2)
    size = layout.pass_size
    extras = []
    for k in range(6):
        served = Counter(tables.elements_to_samples(k * size, size).tolist())
        assert sum(served.values()) == size == n * full + extra
        assert set(served.values()) == {full, full + 1} and len(served) == n
        extras.append(frozenset(i for i, c in served.items() if c == full + 1))
    assert len(set(extras)) == 6  # a new subset every pass
    again = PassTables(layout, seed=5, domain=0, window_shards=2)
    assert again.elements_to_samples(3 * size, size).tolist() == \
        tables.elements_to_samples(3 * size, size).tolist()  # a pure function of the pass
    rates = Counter(i for subset in extras for i in subset)
    assert len(rates) > extra  # not the same samples each time
    fixed = PassTables(DomainLayout(shard_sizes=layout.shard_sizes, repeat_counts=counts),
                       seed=5, domain=0, window_shards=2)
    assert fixed.elements_to_samples(0, size).tolist() != tables.elements_to_samples(0, size).tolist()


def test_resample_needs_counts_of_q_or_q_plus_one():
    with pytest.raises(ValueError, match="q or q \\+ 1"):
        DomainLayout(shard_sizes=(3,), repeat_counts=np.array([0, 2, 1]), resample=True)
    with pytest.raises(ValueError, match="q or q \\+ 1"):
        DomainLayout(shard_sizes=(3,), resample=True)
