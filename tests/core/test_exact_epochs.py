"""One-pass epochs with canonical nodes (streammix.core.exact_epochs): the fast order equals
the pure-Python reference, every epoch is exactly one pass of every domain whatever C, G
and E, reads anywhere equal the sequential ones, lanes keep to their part of the shards,
and batches keep the domain balance."""

from __future__ import annotations

import time
from collections import Counter

import numpy as np
import pytest

from streammix.core.canonical import lane_span
from streammix.core.epoch import worker_sample_ids
from streammix.core.exact_epochs import (
    allocate_epoch,
    element_range_pieces,
    lane_epoch_sizes,
    one_pass_order_reference,
)
from streammix.core.groups import shard_of_samples
from streammix.core.order import GlobalOrder, OrderConfig
from streammix.core.passes import DomainLayout
from streammix.core.schedule import Schedule


def _natural(domains) -> Schedule:
    sizes = np.array([d.pass_size for d in domains], dtype=np.float64)
    return Schedule.initial(sizes / sizes.sum())


def _order(domains, C, G, *, seed=3, window=2, shuffle=True) -> GlobalOrder:
    config = OrderConfig(seed=seed, canonical_nodes=C, global_batch_size=G, window_shards=window,
                         one_pass_epochs=True, shuffle=shuffle)
    return GlobalOrder(config=config, domains=domains, schedule=_natural(domains))


def _pairs(order: GlobalOrder, start: int, stop: int) -> list[tuple[int, int]]:
    d, s = order.samples(start, stop)
    return list(zip(d.tolist(), s.tolist()))


def _one_pass(domains) -> Counter:
    """Every element of every domain once: each sample its repeat count of times."""
    want: Counter = Counter()
    for d, layout in enumerate(domains):
        counts = np.ones(layout.num_samples, np.int64) if layout.repeat_counts is None \
            else layout.repeat_counts
        want.update({(d, i): int(k) for i, k in enumerate(counts.tolist()) if k})
    return want


THREE = (DomainLayout(shard_sizes=(16,) * 7 + (8,)), DomainLayout(shard_sizes=(16, 16, 16, 12)),
         DomainLayout(shard_sizes=(16, 16, 4)))  # 120 + 60 + 36 = 216 samples
COUNTED = (DomainLayout(shard_sizes=(7, 9, 3)),
           DomainLayout(shard_sizes=(5, 4), repeat_counts=np.array([3, 0, 2, 1, 4, 0, 5, 1, 2])))
RESAMPLED = (DomainLayout(shard_sizes=(7, 9, 3)),
             DomainLayout(shard_sizes=(5, 6), resample=True,
                          repeat_counts=np.array([1, 2, 1, 1, 2, 2, 1, 1, 2, 1, 1])))


@pytest.mark.parametrize(("domains", "C", "G"), [
    (THREE, 2, 8),     # E = 216 = 27 batches
    (THREE, 4, 8),
    (THREE, 2, 10),    # E not a multiple of G: later epochs start mid-batch
    (THREE, 4, 12),
    (COUNTED, 4, 12),  # repeat counts cut inside a sample's copies
    (COUNTED, 2, 4),
    (RESAMPLED, 2, 6),
], ids=["3d-C2-G8", "3d-C4-G8", "3d-C2-G10", "3d-C4-G12", "counts-C4-G12", "counts-C2-G4",
        "resampled-C2-G6"])
def test_fast_order_equals_the_reference_and_every_epoch_is_one_pass(domains, C, G) -> None:
    E = sum(layout.pass_size for layout in domains)
    stop = 3 * E + G + 1
    fast = _pairs(_order(domains, C, G), 0, stop)
    assert fast == one_pass_order_reference(seed=3, domains=domains, canonical_nodes=C,
                                            global_batch_size=G, window_shards=2, stop=stop)
    resampled = any(layout.resample for layout in domains)
    for e in range(3):
        served = Counter(fast[e * E:(e + 1) * E])
        if not resampled:
            assert served == _one_pass(domains), e
        else:  # the resampled domain: its per-epoch draw, every sample q or q + 1 times
            per_domain = Counter(d for d, _ in fast[e * E:(e + 1) * E])
            assert [per_domain[d] for d in range(len(domains))] == [x.pass_size for x in domains]
            assert {i for (d, i) in served if d == 1} == set(range(11))
    assert len({tuple(fast[e * E:(e + 1) * E]) for e in range(3)}) == 3  # new order each epoch


def test_unshuffled_one_pass_epochs_equal_the_reference() -> None:
    fast = _pairs(_order(THREE, 2, 10, shuffle=False), 0, 2 * 216)
    assert fast == one_pass_order_reference(seed=3, domains=THREE, canonical_nodes=2,
                                            global_batch_size=10, window_shards=2, stop=2 * 216,
                                            shuffle=False)
    assert Counter(fast[216:]) == _one_pass(THREE)


def test_reads_anywhere_equal_the_sequential_order() -> None:
    C, G, E = 4, 12, 216
    sequential = _pairs(_order(THREE, C, G), 0, 3 * E)
    rng = np.random.default_rng(0)
    order = _order(THREE, C, G)
    for _ in range(30):  # one instance jumping back and forth, and fresh ones
        start = int(rng.integers(0, 3 * E - 20))
        size = int(rng.integers(0, 20))
        assert _pairs(order, start, start + size) == sequential[start:start + size]
        assert _pairs(_order(THREE, C, G), start, start + size) == sequential[start:start + size]
    for c in range(C):  # one slice read alone
        lo, (d, s) = order.slice_samples(c, 100, 3 * E)
        positions = [(u // 3) * G + c * 3 + u % 3 for u in range(lo, lo + d.shape[0])]
        assert list(zip(d.tolist(), s.tolist())) == [sequential[p] for p in positions]


def test_c_1_ignores_the_flag_and_keeps_its_order() -> None:
    plain = GlobalOrder(config=OrderConfig(seed=3, window_shards=2), domains=THREE,
                        schedule=_natural(THREE))
    flagged = GlobalOrder(config=OrderConfig(seed=3, window_shards=2, one_pass_epochs=True),
                          domains=THREE, schedule=_natural(THREE))
    assert _pairs(plain, 0, 500) == _pairs(flagged, 0, 500)


def test_allocation_has_the_margins_and_rounds_each_share() -> None:
    rng = np.random.default_rng(1)
    for _ in range(300):
        C, D = int(rng.integers(1, 9)), int(rng.integers(1, 7))
        n = rng.integers(0, 50, D)
        if n.sum() == 0:
            n[0] = 1
        cuts = np.sort(rng.integers(0, int(n.sum()) + 1, C - 1))
        q = np.diff(np.concatenate(([0], cuts, [n.sum()])))
        sizes = allocate_epoch(n, q)
        assert (sizes.sum(axis=1) == q).all() and (sizes.sum(axis=0) == n).all()
        assert (np.abs(sizes - np.outer(q, n) / n.sum()) <= 1).all() and (sizes >= 0).all()
    with pytest.raises(ValueError, match="equal sums"):
        allocate_epoch([3, 4], [2, 2])


def test_lane_sizes_are_the_lane_positions_of_each_epoch() -> None:
    for C, G, E in ((2, 8, 216), (4, 12, 29), (4, 8, 3), (2, 10, 1001)):
        S = G // C
        for e in range(4):
            brute = [sum(1 for p in range(e * E, (e + 1) * E) if p % G // S == c)
                     for c in range(C)]
            assert lane_epoch_sizes(e, E, C, G).tolist() == brute


def test_element_ranges_cut_inside_copies_and_at_shard_edges() -> None:
    counts = np.array([3, 0, 2, 1, 4, 0, 5, 1, 2])  # shards of 5 and 4 samples
    starts, stops, copies, elements = element_range_pieces((5, 4), counts, 2, 14)
    # sample 0 keeps 1 of 3 copies; samples 1-4 whole (shard 0); 5 whole; 6 keeps 4 of 5
    assert starts.tolist() == [0, 1, 5, 6] and stops.tolist() == [1, 5, 6, 7]
    assert copies.tolist() == [1, -1, -1, 4] and elements.tolist() == [1, 7, 0, 4]
    one = element_range_pieces((5, 4), counts, 10, 12)  # inside sample 6's copies
    assert [x.tolist() for x in one] == [[6], [7], [2], [2]]
    plain = element_range_pieces((5, 4), None, 3, 8)
    assert [x.tolist() for x in plain] == [[3, 5], [5, 8], [-1, -1], [2, 3]]


def test_each_lane_reads_its_part_of_the_shards_plus_a_boundary_shard() -> None:
    domains = (DomainLayout(shard_sizes=(10,) * 40), DomainLayout(shard_sizes=(10,) * 24))
    C, G = 4, 12  # E = 640, not a multiple of G: lane sizes change by epoch
    order = _order(domains, C, G, window=4)
    E = 640
    for c in range(C):
        shards = {0: set(), 1: set()}
        for e in range(6):
            lo, hi = lane_span(e * E, (e + 1) * E, c, C, G)
            _, (d, s) = order.slice_samples(c, e * E, (e + 1) * E)
            for domain in (0, 1):
                picked = s[d == domain]
                shards[domain] |= set(shard_of_samples(domains[domain], picked).tolist())
        for domain, layout in enumerate(domains):
            own = len(layout.shard_sizes) // C
            assert set(range(c * own, (c + 1) * own)) <= shards[domain]
            assert len(shards[domain]) <= own + 2, (c, domain, sorted(shards[domain]))


def test_batches_keep_the_domain_balance() -> None:
    # 1% domain and two large ones; C = 4 slices of 4
    domains = (DomainLayout(shard_sizes=(100,) * 30), DomainLayout(shard_sizes=(100,) * 19),
               DomainLayout(shard_sizes=(50,)))
    C, G = 4, 16
    E = 5000
    order = _order(domains, C, G, window=4)
    d, _ = order.samples(0, 2 * E - 2 * E % G)
    batches = d.reshape(-1, G)
    weights = np.array([3000, 1900, 50]) / E
    for k in range(3):
        per_batch = (batches == k).sum(axis=1)
        assert np.abs(per_batch - weights[k] * G).max() < C, k
    small = (batches == 2).sum(axis=1)
    assert small.max() <= 2  # the 1% domain is spread over the batches, not in C slices at once


def test_worker_sample_ids_use_the_one_pass_order() -> None:
    C, G = 2, 8
    order = _order(THREE, C, G)
    config = order.config
    ids = worker_sample_ids(config=config, domains=THREE, schedule=_natural(THREE),
                            num_batches=27, world_size=2, num_workers=1, global_batch_size=G)
    offsets = np.array([0, 120, 180])
    d, s = order.samples(0, 216)
    expected = (offsets[d] + s).reshape(27, 2, 4)
    assert (ids.reshape(2, 27, 4).transpose(1, 0, 2) == expected).all()


def test_a_resume_deep_in_the_run_takes_milliseconds() -> None:
    domains = tuple(DomainLayout(shard_sizes=(10_000,) * (5 + 3 * d)) for d in range(16))
    C, G = 8, 1024
    far = 10 ** 8
    _pairs(_order(domains, C, G), 0, G)  # numba kernels loaded
    best = float("inf")
    for _ in range(3):
        order = _order(domains, C, G)
        start = time.perf_counter()
        got = _pairs(order, far, far + G)
        best = min(best, time.perf_counter() - start)
    assert len(got) == G
    assert best < 1.0, best  # measured about 0.05 s on the shared 2-core machine


def test_one_pass_epochs_refuse_other_schedules() -> None:
    config = OrderConfig(seed=3, canonical_nodes=2, global_batch_size=8, one_pass_epochs=True)
    with pytest.raises(ValueError, match="natural weights"):
        GlobalOrder(config=config, domains=THREE, schedule=Schedule.initial([1, 1, 1]))
    with pytest.raises(ValueError, match="greedy"):
        OrderConfig(seed=3, canonical_nodes=2, global_batch_size=8, one_pass_epochs=True,
                    interleave="random")
    order = _order(THREE, 2, 8)
    with pytest.raises(ValueError, match="one-pass epochs"):
        order.cursors_at(8)


def test_piece_copies_are_checked() -> None:
    from streammix.core.passes import PassTables

    layout = DomainLayout(shard_sizes=(4,), repeat_counts=np.array([2, 2, 2, 2]))
    pieces = (np.array([0, 1]), np.array([1, 4]))
    tables = PassTables(layout, seed=1, domain=0, window_shards=2, pieces=pieces,
                        piece_copies=np.array([1, -1]))
    assert tables.pass_size == 7 and sorted(tables.elements_to_samples(0, 7)) == [0, 1, 1, 2, 2,
                                                                                   3, 3]
    with pytest.raises(ValueError, match="one-sample pieces"):
        PassTables(layout, seed=1, domain=0, window_shards=2, pieces=pieces,
                   piece_copies=np.array([1, 2]))
    with pytest.raises(ValueError, match="one entry per piece"):
        PassTables(layout, seed=1, domain=0, window_shards=2, pieces=pieces,
                   piece_copies=np.array([1]))
