import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streammix.core import epoch as epoch_module
from streammix.core.epoch import sample_id_dtype, worker_sample_ids
from streammix.core.order import OrderConfig, order_reference
from streammix.core.partition import worker_positions
from streammix.core.passes import DomainLayout
from streammix.core.schedule import Schedule


def build(interleave: str, seed: int = 5):
    domains = [
        DomainLayout(shard_sizes=(5, 3, 0, 7, 2, 9)),
        DomainLayout(shard_sizes=(3, 4), repeat_counts=np.array([1, 0, 2, 3, 1, 1, 0])),
        DomainLayout(shard_sizes=(4, 4, 4)),
    ]
    schedule = Schedule.initial([1, 2, 0])
    for start, weights in ((24, [0, 1, 1]), (48, [3, 1, 1]), (96, [1, 1, 5])):
        schedule = schedule.append(start, weights, interleave=interleave, seed=seed)
    return OrderConfig(seed=seed, window_shards=2, interleave=interleave), domains, schedule


def expected_rows(config, domains, schedule, *, first_batch, num_batches, world_size,
                  num_workers, global_batch_size):  # fmt: skip
    """Each (rank, worker)'s global sample ids, from the reference order and worker_positions."""
    stop = (first_batch + num_batches) * global_batch_size
    reference = order_reference(config=config, domains=domains, schedule=schedule, stop=stop)
    offsets = np.concatenate(([0], np.cumsum([layout.num_samples for layout in domains])))
    ids = [int(offsets[d]) + s for d, s in reference]
    rows = []
    for rank in range(world_size):
        for worker in range(num_workers):
            positions = worker_positions(first_batch=first_batch, end_batch=first_batch + num_batches,
                                         rank=rank, worker=worker, world_size=world_size,
                                         num_workers=num_workers,
                                         global_batch_size=global_batch_size)  # fmt: skip
            rows.append([ids[p] for p in positions])
    return rows


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from(["greedy", "random"]),
    st.sampled_from([(1, 1, 4), (2, 3, 4), (4, 2, 8), (3, 1, 6)]),
    st.integers(0, 9),
    st.integers(0, 30),
    st.integers(1, 4),
    st.integers(1, 7),
)
def test_rows_match_reference_for_any_threads(interleave, world, first_batch, num_batches,
                                              threads, chunk_batches):  # fmt: skip
    world_size, num_workers, global_batch_size = world
    config, domains, schedule = build(interleave)
    saved = epoch_module.CHUNK_BATCHES
    epoch_module.CHUNK_BATCHES = chunk_batches
    try:
        out = worker_sample_ids(config=config, domains=domains, schedule=schedule,
                                num_batches=num_batches, first_batch=first_batch,
                                world_size=world_size, num_workers=num_workers,
                                global_batch_size=global_batch_size, threads=threads)  # fmt: skip
    finally:
        epoch_module.CHUNK_BATCHES = saved
    expected = expected_rows(config, domains, schedule, first_batch=first_batch,
                             num_batches=num_batches, world_size=world_size,
                             num_workers=num_workers, global_batch_size=global_batch_size)  # fmt: skip
    assert out.dtype == np.int32
    assert out.shape == (
        world_size * num_workers,
        -(-num_batches // num_workers) * global_batch_size // world_size,
    )
    for row, want in zip(out, expected):
        assert row[: len(want)].tolist() == want
        assert (row[len(want) :] == -1).all()


def test_threads_do_not_change_a_long_epoch():
    shares = (0.5, 0.3, 0.2)
    domains = [DomainLayout(shard_sizes=(1000,) * int(300 * s)) for s in shares]
    kwargs = dict(config=OrderConfig(seed=3), domains=domains, schedule=Schedule.initial(shares),
                  num_batches=2000, world_size=4, num_workers=3, global_batch_size=128)  # fmt: skip
    one = worker_sample_ids(**kwargs, threads=1)
    for threads in (2, 3):
        assert np.array_equal(worker_sample_ids(**kwargs, threads=threads), one)
    ids = np.sort(one[one >= 0])
    assert ids.shape[0] == 2000 * 128
    assert ids[-1] < 300_000 and np.unique(ids).shape[0] == ids.shape[0]  # < one pass: no repeats


def test_sample_id_dtype():
    assert sample_id_dtype(10) == np.int32
    assert sample_id_dtype(2**31 - 1) == np.int32
    assert sample_id_dtype(2**31) == np.int64


def test_bad_input():
    config, domains, schedule = build("greedy")
    good = dict(config=config, domains=domains, schedule=schedule, num_batches=2, world_size=2,
                num_workers=1, global_batch_size=4)  # fmt: skip
    with pytest.raises(ValueError, match="threads"):
        worker_sample_ids(**good, threads=0)
    with pytest.raises(ValueError, match="num_batches"):
        worker_sample_ids(**{**good, "num_batches": -1})
    with pytest.raises(ValueError, match="does not divide"):
        worker_sample_ids(**{**good, "global_batch_size": 5})
    with pytest.raises(ValueError, match=">= 1"):
        worker_sample_ids(**{**good, "num_workers": 0})
