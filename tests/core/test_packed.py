"""Domain-pure packing: fast random access against the token-labelling oracle."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streammix.core.packed import PackedDomainStream, packed_pieces_reference
from streammix.core.passes import DomainLayout


def _layout(draw_sizes, counts=None) -> DomainLayout:
    return DomainLayout(shard_sizes=tuple(draw_sizes), repeat_counts=counts)


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(0, 6), min_size=1, max_size=6),
       seed=st.integers(0, 2**31), window=st.integers(1, 3), sep=st.integers(0, 1),
       first=st.integers(0, 300), length=st.integers(0, 40), data=st.data())
def test_pieces_equal_the_oracle(sizes, seed, window, sep, first, length, data) -> None:
    n = sum(sizes)
    if n == 0:
        return
    tokens = np.array(data.draw(st.lists(st.integers(0, 9), min_size=n, max_size=n)))
    counts = data.draw(st.one_of(st.none(), st.lists(st.integers(0, 2), min_size=n, max_size=n)))
    counts = None if counts is None else np.array(counts)
    layout = _layout(sizes, counts)
    stream = PackedDomainStream(layout, tokens, seed=seed, domain=1, window_shards=window,
                                separator_length=sep)
    if stream.pass_tokens == 0:
        return
    fast = list(zip(*(a.tolist() for a in stream.pieces(first, length))))
    slow = packed_pieces_reference(layout, tokens, seed=seed, domain=1, window_shards=window,
                                   separator_length=sep, first_token=first, length=length)
    assert fast == slow


def test_blocks_cover_each_pass_once_in_order() -> None:
    layout = _layout([5, 3, 7, 4])
    tokens = np.arange(19) % 6 + 1
    stream = PackedDomainStream(layout, tokens, seed=3, domain=0, window_shards=2,
                                separator_length=1)
    L = 7
    per_pass = stream.pass_tokens
    assert per_pass == int((tokens + 1).sum())
    seen = np.zeros(19, dtype=np.int64)
    covered = 0
    for block in range(per_pass // L):
        samples, offsets, lengths = stream.pieces(block * L, L)
        assert int(lengths.sum()) == L  # every block is exactly L tokens
        for s, o, n in zip(samples, offsets, lengths):
            if o + n == tokens[s] + 1:
                seen[s] += 1
        covered += L
    # every document that ended inside the first pass's whole blocks ended exactly once
    assert seen.max() <= 1 and seen.sum() >= 19 - 2


def test_random_access_far_away_is_cheap_and_consistent() -> None:
    layout = _layout([100] * 50)
    rng = np.random.default_rng(0)
    tokens = rng.integers(10, 500, size=5000)
    stream = PackedDomainStream(layout, tokens, seed=9, domain=2, window_shards=4,
                                separator_length=1)
    far = 10**10
    a = stream.pieces(far, 2048)
    again = PackedDomainStream(layout, tokens, seed=9, domain=2, window_shards=4,
                               separator_length=1).pieces(far, 2048)
    assert all(np.array_equal(x, y) for x, y in zip(a, again))
    assert int(a[2].sum()) == 2048
    # contiguous: the next block starts where this one ended
    nxt = stream.pieces(far + 2048, 10)
    last_end = int(a[1][-1] + a[2][-1])
    if last_end < tokens[a[0][-1]] + 1:
        assert nxt[0][0] == a[0][-1] and nxt[1][0] == last_end


def test_tokens_before_counts_the_stream() -> None:
    layout = _layout([3, 0, 4], np.array([1, 0, 2, 1, 1, 3, 1]))
    tokens = np.array([4, 2, 0, 5, 1, 3, 2])
    stream = PackedDomainStream(layout, tokens, seed=5, domain=0, window_shards=1,
                                separator_length=1)
    from streammix.core.passes import stream_reference

    elements = stream_reference(layout, seed=5, domain=0, first_element=0, count=40,
                                window_shards=1)
    total = 0
    for e in range(40):
        assert stream.tokens_before(e) == total
        total += int(tokens[elements[e]]) + 1


def test_bad_input_is_refused() -> None:
    layout = _layout([2, 2])
    with pytest.raises(ValueError, match="4 samples"):
        PackedDomainStream(layout, np.array([1, 2, 3]), seed=0, domain=0, window_shards=1,
                           separator_length=0)
    with pytest.raises(ValueError, match=">= 0"):
        PackedDomainStream(layout, np.array([1, -2, 3, 1]), seed=0, domain=0, window_shards=1,
                           separator_length=0)
    empty = PackedDomainStream(layout, np.zeros(4, dtype=np.int64), seed=0, domain=0,
                               window_shards=1, separator_length=0)
    with pytest.raises(ValueError, match="no tokens"):
        empty.pieces(0, 3)


def test_order_elements_count_each_domains_picks() -> None:
    from streammix.core.order import GlobalOrder, OrderConfig
    from streammix.core.schedule import Schedule

    layouts = [DomainLayout(shard_sizes=(4, 4)), DomainLayout(shard_sizes=(3,)),
               DomainLayout(shard_sizes=(5, 1))]
    schedule = Schedule.initial([0.5, 0.2, 0.3]).append(40, [0.1, 0.6, 0.3]).append(
        90, [0.3, 0.3, 0.4])
    order = GlobalOrder(config=OrderConfig(seed=4), domains=layouts, schedule=schedule)
    domains, elements = order.elements(0, 160)
    seen = [0, 0, 0]
    for d, e in zip(domains.tolist(), elements.tolist()):
        assert e == seen[d]
        seen[d] += 1
    later = GlobalOrder(config=OrderConfig(seed=4), domains=layouts, schedule=schedule)
    d2, e2 = later.elements(77, 133)  # resume anywhere: the same elements
    assert np.array_equal(d2, domains[77:133]) and np.array_equal(e2, elements[77:133])
