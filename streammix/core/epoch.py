"""A whole epoch at once: every (rank, worker)'s list of global sample ids.

streammix never needs this at training time (each DataLoader worker computes its own slice of
the order lazily, batch by batch), but it is what mosaicml-streaming computes at the start of
every epoch, so it is the fair thing to compare, and it is handy for inspecting or exporting an
order. :func:`worker_sample_ids` returns an array of shape ``(world_size * num_workers,
slots)``: row ``rank * num_workers + worker`` holds, in the order that worker yields them, the
global sample ids (``domain_offsets[d] + sample``) of global batches ``[first_batch,
first_batch + num_batches)``, padded with ``-1`` where a worker has one batch fewer than
others.

The range is cut into ``threads`` contiguous runs of global batches, one per thread, each with
its own :class:`~streammix.core.order.GlobalOrder` (so no cache is shared). The second run
starts mid-segment, which costs the greedy's exact skip-ahead (milliseconds for up to about
24 domains, a replay of the gap beyond). Every kernel releases the GIL, and every output
element is written by exactly one thread, so the result does not depend on ``threads``.

With canonical nodes (``OrderConfig(canonical_nodes=C, global_batch_size=G)``, where ``G``
must equal ``global_batch_size`` here) the rows are those of the canonical order: rank ``r``
(``node * ranks_per_node + local_rank``) only holds samples of its node's groups.

Ids are stored in the smallest signed integer type that holds every id and ``-1`` (int32
below 2**31 samples, else int64), so the epoch costs 4 bytes per sample for most corpora.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from streammix.core.order import GlobalOrder, OrderConfig
from streammix.core.partition import per_device_batch_size, scatter_to_workers
from streammix.core.passes import DomainLayout
from streammix.core.schedule import Schedule

CHUNK_BATCHES = 512


def sample_id_dtype(num_samples: int) -> np.dtype:
    """int32 if every id in ``[0, num_samples)`` and -1 fit, else int64."""
    return np.dtype(np.int32 if num_samples <= np.iinfo(np.int32).max else np.int64)


def worker_sample_ids(*, config: OrderConfig, domains: Sequence[DomainLayout], schedule: Schedule,
                      num_batches: int, world_size: int, num_workers: int, global_batch_size: int,
                      first_batch: int = 0, threads: int = 1) -> np.ndarray:  # fmt: skip
    """Per-(rank, worker) global sample ids of ``num_batches`` global batches (see module doc)."""
    if num_batches < 0 or first_batch < 0:
        raise ValueError(
            f"num_batches and first_batch must be >= 0, got {num_batches}, {first_batch}"
        )
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    per_device = per_device_batch_size(world_size, global_batch_size)
    if config.canonical_nodes > 1 and config.global_batch_size != global_batch_size:
        raise ValueError(f"global_batch_size {global_batch_size} differs from the order's "
                         f"{config.global_batch_size} (canonical nodes fix it)")  # fmt: skip
    sizes = [layout.num_samples for layout in domains]
    offsets = np.zeros(len(sizes) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    slots = -(-num_batches // num_workers) * per_device
    out = np.empty((world_size * num_workers, slots), dtype=sample_id_dtype(int(offsets[-1])))
    _pad_short_workers(out, num_batches, world_size, num_workers, per_device)
    bounds = np.linspace(0, num_batches, min(threads, max(num_batches, 1)) + 1).astype(np.int64)

    def fill(lo: int, hi: int) -> None:
        order = GlobalOrder(config=config, domains=domains, schedule=schedule)
        _fill_batches(order, out, offsets[:-1], lo, hi, first_batch=first_batch,
                      world_size=world_size, num_workers=num_workers,
                      global_batch_size=global_batch_size)  # fmt: skip

    runs = [(int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]
    if len(runs) <= 1:
        for lo, hi in runs:
            fill(lo, hi)
        return out
    with ThreadPoolExecutor(max_workers=len(runs)) as pool:
        for future in [pool.submit(fill, lo, hi) for lo, hi in runs]:
            future.result()
    return out


def _pad_short_workers(out: np.ndarray, num_batches: int, world_size: int, num_workers: int,
                       per_device: int) -> None:  # fmt: skip
    for worker in range(num_workers):
        filled = -(-(num_batches - worker) // num_workers) * per_device
        for rank in range(world_size):
            out[rank * num_workers + worker, max(filled, 0) :] = -1


def _fill_batches(order: GlobalOrder, out: np.ndarray, offsets: np.ndarray, lo: int, hi: int, *,
                  first_batch: int, world_size: int, num_workers: int,
                  global_batch_size: int) -> None:  # fmt: skip
    """Relative global batches ``[lo, hi)`` into ``out``, in chunks through reused buffers.

    Each canonical slice is read as its own lane and scattered straight to the workers; a
    chunk holds ``CHUNK_BATCHES`` global batches per lane, so each lane call stays as long as
    one call without canonical nodes.
    """
    lanes = order.config.canonical_nodes
    chunk = CHUNK_BATCHES * lanes * global_batch_size
    buffers = (np.empty(chunk // lanes, np.int32), np.empty(chunk // lanes, np.int64))
    start = (first_batch + lo) * global_batch_size
    stop = (first_batch + hi) * global_batch_size
    for position in range(start, stop, chunk):
        end = min(position + chunk, stop)
        for c in range(lanes):
            size = (end - position) // lanes
            views = (buffers[0][:size], buffers[1][:size])
            lane_start, (domain, sample) = order.slice_samples(c, position, end, out=views)
            scatter_to_workers(sample, first_position=lane_start, out=out, world_size=world_size,
                               num_workers=num_workers, global_batch_size=global_batch_size,
                               first_batch=first_batch, domains=domain, domain_offsets=offsets,
                               lane=(c, lanes))  # fmt: skip
