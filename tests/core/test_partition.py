import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streammix.core.partition import (
    device_batch_span,
    scatter_to_workers,
    worker_batches,
    worker_positions,
)


@st.composite
def worlds(draw):
    world = draw(st.integers(1, 8))
    per_device = draw(st.integers(1, 6))
    workers = draw(st.integers(1, 5))
    return world, workers, world * per_device


@settings(max_examples=80, deadline=None)
@given(worlds(), st.integers(0, 7), st.integers(1, 25))
def test_worker_slices_in_batch_order_give_the_global_order(world, first_batch, num_batches):
    world_size, num_workers, global_batch = world
    end_batch = first_batch + num_batches
    lists = {
        (r, k): worker_positions(first_batch=first_batch, end_batch=end_batch, rank=r, worker=k,
                                 world_size=world_size, num_workers=num_workers,
                                 global_batch_size=global_batch).tolist()  # fmt: skip
        for r in range(world_size) for k in range(num_workers)
    }  # fmt: skip
    per_device = global_batch // world_size
    rebuilt = []
    for j in range(num_batches):  # PyTorch: per-device batch j comes from worker j % K
        k, slot = j % num_workers, j // num_workers
        for r in range(world_size):
            rebuilt += lists[r, k][slot * per_device : (slot + 1) * per_device]
    assert rebuilt == list(range(first_batch * global_batch, end_batch * global_batch))
    for r in range(world_size):
        for j, g in enumerate(range(first_batch, end_batch)):
            start, stop = device_batch_span(batch=g, rank=r, world_size=world_size,
                                            global_batch_size=global_batch)  # fmt: skip
            k, slot = j % num_workers, j // num_workers
            assert lists[r, k][slot * per_device : (slot + 1) * per_device] == list(
                range(start, stop)
            )
            assert g in worker_batches(first_batch=first_batch, end_batch=end_batch, worker=k,
                                       num_workers=num_workers)  # fmt: skip


@settings(max_examples=40, deadline=None)
@given(worlds(), st.integers(0, 5), st.integers(1, 12), st.integers(1, 50))
def test_scatter_matches_worker_positions(world, first_batch, num_batches, chunk):
    world_size, num_workers, global_batch = world
    per_worker_batches = -(-num_batches // num_workers)
    out = np.full((world_size * num_workers, per_worker_batches * global_batch // world_size), -1)
    start = first_batch * global_batch
    positions = np.arange(start, start + num_batches * global_batch)
    for lo in range(0, len(positions), chunk):
        scatter_to_workers(positions[lo : lo + chunk], first_position=int(positions[lo]), out=out,
                           world_size=world_size, num_workers=num_workers,
                           global_batch_size=global_batch, first_batch=first_batch)  # fmt: skip
    for r in range(world_size):
        for k in range(num_workers):
            expected = worker_positions(first_batch=first_batch, end_batch=first_batch + num_batches,
                                        rank=r, worker=k, world_size=world_size,
                                        num_workers=num_workers, global_batch_size=global_batch)  # fmt: skip
            row = out[r * num_workers + k]
            assert row[: len(expected)].tolist() == expected.tolist()
            assert (row[len(expected) :] == -1).all()


def test_endless_worker_batches():
    r = worker_batches(first_batch=5, end_batch=None, worker=1, num_workers=4)
    assert r[:3] == range(6, 18, 4)


def test_bad_input():
    with pytest.raises(ValueError, match="does not divide"):
        device_batch_span(batch=0, rank=0, world_size=3, global_batch_size=8)
    with pytest.raises(ValueError, match="rank"):
        device_batch_span(batch=0, rank=4, world_size=4, global_batch_size=8)
    with pytest.raises(ValueError, match="batch"):
        device_batch_span(batch=-1, rank=0, world_size=4, global_batch_size=8)
    with pytest.raises(ValueError, match=">= 1"):
        device_batch_span(batch=0, rank=0, world_size=0, global_batch_size=8)
    with pytest.raises(ValueError, match="worker"):
        worker_batches(first_batch=0, end_batch=4, worker=2, num_workers=2)
    with pytest.raises(ValueError, match="num_workers"):
        worker_batches(first_batch=0, end_batch=4, worker=0, num_workers=0)
    with pytest.raises(ValueError, match="first_batch"):
        worker_batches(first_batch=-1, end_batch=4, worker=0, num_workers=1)
    with pytest.raises(ValueError, match="shape"):
        scatter_to_workers(np.arange(4), first_position=0, out=np.zeros((3, 4), np.int64),
                           world_size=2, num_workers=2, global_batch_size=4)  # fmt: skip


def test_scatter_adds_domain_offsets():
    values = np.array([0, 1, 0, 2, 1, 3, 0, 4])
    domains = np.array([0, 0, 1, 0, 1, 0, 2, 0], dtype=np.int32)
    offsets = np.array([0, 100, 1000])
    out = np.full((2, 4), -1)
    scatter_to_workers(values, first_position=0, out=out, world_size=2, num_workers=1,
                       global_batch_size=4, domains=domains, domain_offsets=offsets)  # fmt: skip
    assert out.tolist() == [[0, 1, 101, 3], [100, 2, 1000, 4]]
    with pytest.raises(ValueError, match="neither"):
        scatter_to_workers(values, first_position=0, out=out, world_size=2, num_workers=1,
                           global_batch_size=4, domains=domains)  # fmt: skip
