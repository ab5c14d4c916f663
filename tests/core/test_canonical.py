"""Canonical nodes: groups, slices, lanes, physical nodes (issue 14)."""

import time
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streammix.core import (
    DomainLayout,
    GlobalOrder,
    OrderConfig,
    Schedule,
    Segment,
    check_nodes,
    device_batch_span,
    node_batch_span,
    node_slices,
    rank_slices,
    slice_of,
    split_domain,
    worker_positions,
    worker_sample_ids,
)
from streammix.core.order import canonical_order_reference, order_reference
from streammix.core.passes import PassTables

DOMAINS = [
    DomainLayout(shard_sizes=(5, 3, 0, 7, 2, 9, 6, 4)),
    DomainLayout(shard_sizes=(3, 4), repeat_counts=np.array([1, 0, 2, 1, 1, 1, 1])),
    DomainLayout(shard_sizes=(4, 4, 4, 4, 4)),
]


def build(C, G, interleave="greedy", seed=11, changes=((16, [0, 1, 1]), (40, [3, 1, 1]))):
    """Config and a schedule whose segment starts are in global batches."""
    schedule = Schedule.initial([1, 2, 0.5])
    for batch, weights in changes:
        schedule = schedule.append(batch * G, weights, interleave=interleave, seed=seed,
                                   canonical_nodes=C, global_batch_size=G)  # fmt: skip
    config = OrderConfig(seed=seed, window_shards=2, interleave=interleave, canonical_nodes=C,
                         global_batch_size=G)  # fmt: skip
    return config, schedule


def pairs(order, start, stop):
    d, s = order.samples(start, stop)
    return list(zip(d.tolist(), s.tolist()))


layouts = st.lists(st.integers(0, 9), min_size=1, max_size=12).map(
    lambda sizes: DomainLayout(shard_sizes=tuple(sizes))
)


@settings(max_examples=40, deadline=None)
@given(layouts, st.integers(1, 6), st.booleans())
def test_groups_are_disjoint_cover_the_domain_and_stay_inside_shards(layout, C, counts):
    if counts:
        rng = np.random.default_rng(layout.num_samples)
        layout = DomainLayout(shard_sizes=layout.shard_sizes,
                              repeat_counts=rng.integers(0, 3, layout.num_samples))  # fmt: skip
    groups = split_domain(layout, C)
    assert groups.num_groups == C
    edges = np.cumsum((0,) + layout.shard_sizes)
    seen = []
    for (starts, stops), elements in zip(groups.pieces, groups.elements):
        for a, b in zip(starts.tolist(), stops.tolist()):
            if a == b:  # an empty shard, kept as a unit in whole-shard groups
                continue
            shard = np.searchsorted(edges, a, side="right") - 1
            assert a < b <= edges[shard + 1]  # inside one shard
            seen.extend(range(a, b))
        tables = PassTables(layout, seed=1, domain=0, window_shards=2, pieces=(starts, stops))
        assert tables.pass_size == elements
    assert sorted(seen) == list(range(layout.num_samples))  # disjoint and covering
    if groups.whole_shards and C > 1:
        for starts, stops in groups.pieces:  # whole shards only
            assert all(b - a in layout.shard_sizes for a, b in zip(starts, stops))


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 5), st.integers(0, 3))
def test_one_pass_of_every_group_is_one_pass_of_the_domain(C, pass_index):
    for d, layout in enumerate(DOMAINS):
        groups = split_domain(layout, C)
        if min(groups.elements) == 0:
            continue
        served = Counter()
        for c in range(C):
            tables = PassTables(layout, seed=3, domain=d, window_shards=2,
                                pieces=groups.pieces[c], group=(c, C))  # fmt: skip
            size = tables.pass_size
            served.update(tables.elements_to_samples(pass_index * size, size).tolist())
        counts = layout.repeat_counts
        expected = Counter({i: 1 if counts is None else int(counts[i])
                            for i in range(layout.num_samples)})  # fmt: skip
        assert served == +expected


@pytest.mark.parametrize("interleave", ["greedy", "random"])
@pytest.mark.parametrize("C,G", [(1, 4), (2, 4), (2, 6), (3, 6), (4, 8)])
def test_fast_equals_reference(interleave, C, G):
    config, schedule = build(C, G, interleave)
    order = GlobalOrder(config=config, domains=DOMAINS, schedule=schedule)
    stop = 60 * G
    reference = canonical_order_reference(config=config, domains=DOMAINS, schedule=schedule,
                                          stop=stop)  # fmt: skip
    assert pairs(order, 0, stop) == reference
    if C == 1:
        assert reference == order_reference(config=config, domains=DOMAINS, schedule=schedule,
                                             stop=stop)  # fmt: skip


@pytest.mark.parametrize("interleave", ["greedy", "random"])
def test_one_canonical_node_is_todays_order(interleave):
    config, schedule = build(1, 4, interleave)
    plain = OrderConfig(seed=11, window_shards=2, interleave=interleave)
    with_c = GlobalOrder(config=config, domains=DOMAINS, schedule=schedule)
    today = GlobalOrder(config=plain, domains=DOMAINS, schedule=schedule)
    assert pairs(with_c, 0, 300) == pairs(today, 0, 300)


@settings(max_examples=25, deadline=None)
@given(st.sampled_from([(2, 4), (3, 6), (4, 8), (4, 16)]), st.sampled_from(["greedy", "random"]),
       st.integers(0, 70), st.integers(1, 5))  # fmt: skip
def test_resume_at_any_batch_equals_the_uninterrupted_suffix(CG, interleave, batch, chunk):
    C, G = CG
    config, schedule = build(C, G, interleave)
    stop = 80 * G
    whole = pairs(GlobalOrder(config=config, domains=DOMAINS, schedule=schedule), 0, stop)
    fresh = GlobalOrder(config=config, domains=DOMAINS, schedule=schedule)
    resumed = []
    for start in range(batch * G, stop, chunk * G):
        resumed += pairs(fresh, start, min(start + chunk * G, stop))
    assert resumed == whole[batch * G :]
    for segment in schedule.segments:
        assert fresh.group_cursors_at(segment.start).tolist() == [
            list(row) for row in segment.group_cursors_for(C)
        ]


@pytest.mark.parametrize("interleave", ["greedy", "random"])
def test_online_weight_update_applies_from_its_batch(interleave):
    C, G, seed = 4, 8, 11
    config, first = build(C, G, interleave, changes=())
    order = GlobalOrder(config=config, domains=DOMAINS, schedule=first)
    before = pairs(order, 0, 30 * G)
    schedule = first
    for batch, weights in ((30, [1, 0, 1]), (45, [1, 5, 1])):  # published as training goes
        schedule = schedule.append(batch * G, weights, interleave=interleave, seed=seed,
                                   canonical_nodes=C, global_batch_size=G)  # fmt: skip
        order = order.with_schedule(schedule)
        before += pairs(order, len(before), batch * G + 15 * G)
    fresh = GlobalOrder(config=config, domains=DOMAINS, schedule=schedule)
    assert before == pairs(fresh, 0, 60 * G)
    assert all(d != 1 for d, _ in before[30 * G : 45 * G])


def test_each_slice_reads_only_its_own_group():
    C, G = 4, 8
    config, schedule = build(C, G)
    order = GlobalOrder(config=config, domains=DOMAINS, schedule=schedule)
    owner = []
    for layout in DOMAINS:
        groups = split_domain(layout, C)
        of = np.full(layout.num_samples, -1)
        for c, (starts, stops) in enumerate(groups.pieces):
            for a, b in zip(starts, stops):
                of[a:b] = c
        owner.append(of)
    for t, (d, s) in enumerate(pairs(order, 0, 200 * G)):
        assert owner[d][s] == slice_of(t, C, G)


@settings(max_examples=10, deadline=None)
@given(st.sampled_from([(1, 1, 1), (1, 2, 3), (2, 1, 2), (2, 2, 1), (4, 1, 3), (4, 2, 2)]))
def test_global_batches_do_not_depend_on_nodes_ranks_or_workers(world):
    num_nodes, ranks_per_node, K = world
    C, G, batches = 4, 16, 40
    config, schedule = build(C, G)
    order = GlobalOrder(config=config, domains=DOMAINS, schedule=schedule)
    offsets = np.cumsum([0] + [layout.num_samples for layout in DOMAINS])
    d, s = order.samples(0, batches * G)
    expected = offsets[d] + s
    W = num_nodes * ranks_per_node
    check_nodes(num_nodes, C)
    rows = worker_sample_ids(config=config, domains=DOMAINS, schedule=schedule, num_batches=batches,
                             world_size=W, num_workers=K, global_batch_size=G)  # fmt: skip
    rebuilt = np.full(batches * G, -1)
    for rank in range(W):
        node = rank // ranks_per_node
        for worker in range(K):
            positions = worker_positions(first_batch=0, end_batch=batches, rank=rank,
                                         worker=worker, world_size=W, num_workers=K,
                                         global_batch_size=G)  # fmt: skip
            rebuilt[positions] = rows[rank * K + worker][: len(positions)]
            slices = node_slices(node=node, num_nodes=num_nodes, canonical_nodes=C)
            assert {slice_of(int(p), C, G) for p in positions} <= set(slices)
        lo, hi = node_batch_span(batch=3, node=node, num_nodes=num_nodes, canonical_nodes=C,
                                 global_batch_size=G)  # fmt: skip
        a, b = device_batch_span(batch=3, rank=rank, world_size=W, global_batch_size=G)
        assert lo <= a < b <= hi
        touched = rank_slices(rank=rank, world_size=W, canonical_nodes=C, global_batch_size=G)
        assert {slice_of(p, C, G) for p in range(a, b)} == set(touched)
    assert rebuilt.tolist() == expected.tolist()


def test_small_domain_is_spread_over_batches_and_slices():
    C, G, batches = 8, 512, 400
    weights = [0.01, 0.29, 0.7]
    domains = [DomainLayout(shard_sizes=(1000,) * n) for n in (20, 60, 100)]
    config = OrderConfig(seed=1, canonical_nodes=C, global_batch_size=G)
    order = GlobalOrder(config=config, domains=domains, schedule=Schedule.initial(weights))
    d, _ = order.samples(0, batches * G)
    per_batch = np.stack([np.bincount(b, minlength=3) for b in d.reshape(batches, G)])
    assert np.abs(per_batch - np.array(weights) * G).max() < len(weights)  # greedy's bound
    per_slice = d.reshape(batches, C, G // C)
    small = (per_slice == 0).sum(axis=2)  # small-domain picks per (batch, slice)
    assert small.sum(axis=1).min() >= 4  # every batch gets its ~5, not 8 then 0 for 99 batches
    for c in range(C):
        share = (per_slice[:, c] == 0).mean()
        assert abs(share - 0.01) < 0.002  # each slice follows the weights on its own


def test_resume_far_into_a_run_is_fast():
    C, G = 8, 512
    domains = [DomainLayout(shard_sizes=(10_000,) * n) for n in (50, 30, 20)]
    config = OrderConfig(seed=1, canonical_nodes=C, global_batch_size=G)
    schedule = Schedule.initial([0.5, 0.3, 0.2])
    GlobalOrder(config=config, domains=domains, schedule=schedule).samples(0, G)  # compile
    position = (10**8 // G) * G
    start = time.perf_counter()
    order = GlobalOrder(config=config, domains=domains, schedule=schedule)
    order.samples(position, position + G)
    assert time.perf_counter() - start < 2.0  # milliseconds when the machine is quiet


def test_schedule_state_keeps_group_cursors():
    _, schedule = build(4, 8)
    again = Schedule.from_state(schedule.to_state())
    assert again == schedule and again.segments[1].group_cursors
    _, plain = build(1, 8)
    assert "group_cursors" not in str(plain.to_state())


def test_bad_input():
    with pytest.raises(ValueError, match="must divide the global batch size"):
        OrderConfig(seed=1, canonical_nodes=3, global_batch_size=8)
    with pytest.raises(ValueError, match="need the global batch size"):
        OrderConfig(seed=1, canonical_nodes=2)
    with pytest.raises(ValueError, match="positive integer"):
        OrderConfig(seed=1, canonical_nodes=0, global_batch_size=8)
    with pytest.raises(ValueError, match="physical nodes"):
        check_nodes(3, 8)
    with pytest.raises(ValueError, match="physical nodes"):
        node_slices(node=0, num_nodes=3, canonical_nodes=4)
    with pytest.raises(ValueError, match="multiple of the global batch size"):
        Schedule.initial([1, 1, 1]).append(12, [1, 2, 1], canonical_nodes=2, global_batch_size=8)
    config, schedule = build(1, 8)  # cursors recorded for one group only
    with pytest.raises(ValueError, match="canonical_nodes=4"):
        GlobalOrder(config=OrderConfig(seed=11, canonical_nodes=4, global_batch_size=8),
                    domains=DOMAINS, schedule=schedule)  # fmt: skip
    misaligned = Schedule.initial([1, 1, 1]).append(12, [1, 2, 1])
    with pytest.raises(ValueError, match="not multiples"):
        GlobalOrder(config=OrderConfig(seed=1, canonical_nodes=2, global_batch_size=8),
                    domains=DOMAINS, schedule=misaligned)  # fmt: skip
    tiny = [DomainLayout(shard_sizes=(3,))] + DOMAINS[1:]
    with pytest.raises(ValueError, match="canonical groups"):
        GlobalOrder(config=OrderConfig(seed=1, canonical_nodes=4, global_batch_size=8),
                    domains=tiny, schedule=Schedule.initial([1, 1, 1]))  # fmt: skip
    with pytest.raises(ValueError, match="sum to cursors"):
        Segment(start=8, weights=(0.5, 0.5), cursors=(3, 3), group_cursors=((1, 1), (1, 1)))
    with pytest.raises(ValueError, match="num_groups"):
        split_domain(DOMAINS[0], 0)


def test_epoch_rows_do_not_depend_on_threads_with_canonical_nodes():
    config, schedule = build(4, 16)
    kwargs = dict(config=config, domains=DOMAINS, schedule=schedule, num_batches=70,
                  world_size=8, num_workers=3, global_batch_size=16)  # fmt: skip
    one = worker_sample_ids(**kwargs, threads=1)
    assert np.array_equal(worker_sample_ids(**kwargs, threads=3), one)
    with pytest.raises(ValueError, match="differs"):
        worker_sample_ids(**{**kwargs, "global_batch_size": 32})


@pytest.mark.parametrize("C,G", [(1, 8), (4, 8), (2, 6)])
def test_slice_samples_are_the_slice_positions_of_samples(C, G):
    config, schedule = build(C, G)
    order = GlobalOrder(config=config, domains=DOMAINS, schedule=schedule)
    whole = pairs(order, 0, 70 * G)
    fresh = GlobalOrder(config=config, domains=DOMAINS, schedule=schedule)
    for c in range(C):
        for start, stop in ((0, 70 * G), (3 * G + 1, 9 * G - 2), (50 * G, 50 * G)):
            lane_start, (d, s) = fresh.slice_samples(c, start, stop)
            want = [whole[t] for t in range(start, stop) if slice_of(t, C, G) == c]
            assert list(zip(d.tolist(), s.tolist())) == want
            S = G // C
            if want:
                first = next(t for t in range(start, stop) if slice_of(t, C, G) == c)
                assert (lane_start // S) * G + c * S + lane_start % S == first
    with pytest.raises(ValueError, match="slice"):
        fresh.slice_samples(C, 0, G)


@pytest.mark.parametrize("interleave", ["greedy", "random"])
def test_jumps_in_any_order_use_the_skip_ahead_and_agree(monkeypatch, interleave):
    from streammix.core import greedy_skip

    monkeypatch.setattr(greedy_skip, "MIN_SKIP", 8)
    C, G = 4, 8
    config, schedule = build(C, G, interleave)
    whole = pairs(GlobalOrder(config=config, domains=DOMAINS, schedule=schedule), 0, 90 * G)
    order = GlobalOrder(config=config, domains=DOMAINS, schedule=schedule)
    for start in (0, 3, 150, 152, 190, 380, 10, 275, 90, 700, 333, 129):
        assert pairs(order, start, start + 13) == whole[start : start + 13]
        c = slice_of(start, C, G)
        _, (d, s) = order.slice_samples(c, start, start + 2 * G)
        want = [whole[t] for t in range(start, start + 2 * G) if slice_of(t, C, G) == c]
        assert list(zip(d.tolist(), s.tolist())) == want


@settings(max_examples=25, deadline=None)
@given(st.lists(st.lists(st.integers(0, 7), min_size=1, max_size=6), min_size=1, max_size=3),
       st.sampled_from([(1, 3), (2, 4), (3, 3), (4, 8)]), st.sampled_from(["greedy", "random"]),
       st.integers(0, 2**32), st.booleans())  # fmt: skip
def test_fast_equals_reference_on_random_layouts(shards, CG, interleave, seed, counts):
    C, G = CG
    rng = np.random.default_rng(seed)
    domains = []
    for sizes in shards:
        repeat = rng.integers(0, 3, sum(sizes)) if counts else None
        domains.append(DomainLayout(shard_sizes=tuple(sizes), repeat_counts=repeat))
    if any(min(split_domain(layout, C).elements) == 0 for layout in domains):
        return  # cannot fill C groups (tested in test_bad_input)
    weights = rng.random((3, len(domains))) + 0.01
    schedule = Schedule.initial(weights[0])
    for batch, w in zip((5, 11), weights[1:]):
        schedule = schedule.append(batch * G, w, interleave=interleave, seed=seed,
                                   canonical_nodes=C, global_batch_size=G)  # fmt: skip
    config = OrderConfig(seed=seed, window_shards=2, interleave=interleave, canonical_nodes=C,
                         global_batch_size=G)  # fmt: skip
    order = GlobalOrder(config=config, domains=domains, schedule=schedule)
    assert pairs(order, 0, 20 * G) == canonical_order_reference(
        config=config, domains=domains, schedule=schedule, stop=20 * G
    )


@pytest.mark.parametrize("C,G", [(1, 4), (2, 4), (3, 6)])
def test_resampled_domains_equal_the_reference_and_keep_group_totals(C, G):
    counts = np.ones(31, dtype=np.int64)
    counts[np.arange(0, 31, 3)] += 1
    resampled = DomainLayout(shard_sizes=(7, 9, 6, 9), repeat_counts=counts, resample=True)
    domains = [DOMAINS[0], resampled, DOMAINS[2]]
    config, schedule = build(C, G, changes=())
    order = GlobalOrder(config=config, domains=domains, schedule=schedule)
    stop = 50 * G
    assert pairs(order, 0, stop) == canonical_order_reference(
        config=config, domains=domains, schedule=schedule, stop=stop)
    groups = split_domain(resampled, C)
    for c in range(C):
        tables = PassTables(resampled, seed=3, domain=1, window_shards=2,
                            pieces=groups.pieces[c], group=(c, C))
        size = tables.pass_size
        assert size == groups.elements[c]
        subsets = set()
        for k in range(4):
            served = Counter(tables.elements_to_samples(k * size, size).tolist())
            assert sum(served.values()) == size and set(served.values()) <= {1, 2}
            subsets.add(frozenset(i for i, n in served.items() if n == 2))
        assert len(subsets) > 1 or groups.elements[c] - len(served) in (0, len(served))
