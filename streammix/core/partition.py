"""Partitioning the global order over ranks and DataLoader workers (pure arithmetic).

Global batch ``g`` is positions ``[g*G, (g+1)*G)``. Rank ``r`` of ``W`` reads the contiguous
slice ``[g*G + r*B, g*G + (r+1)*B)`` with ``B = G / W`` (the per-device batch). A PyTorch
DataLoader with ``K`` workers hands per-device batch ``j`` (counted from where the iterator
started) to worker ``j % K``, so when iteration (re)starts at global batch ``b0`` worker
``k`` produces global batches ``b0 + k, b0 + k + K, ...``. The global order never depends on
``W`` or ``K``: only the slicing does, so a run resumed on another number of ranks with the
same ``G`` reads the same global batches.
"""

from __future__ import annotations

import sys

import numba
import numpy as np


def per_device_batch_size(world_size: int, global_batch_size: int, rank: int = 0) -> int:
    """``global_batch_size // world_size``, after checking the world (ValueError if bad)."""
    if world_size < 1 or global_batch_size < 1:
        raise ValueError(
            f"world_size and global_batch_size must be >= 1, got {world_size}, {global_batch_size}"
        )
    if global_batch_size % world_size:
        raise ValueError(
            f"world_size {world_size} does not divide global_batch_size {global_batch_size}"
        )
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside [0, {world_size})")
    return global_batch_size // world_size


def device_batch_span(
    *, batch: int, rank: int, world_size: int, global_batch_size: int
) -> tuple[int, int]:
    """Global positions ``[start, stop)`` of rank ``rank``'s part of global batch ``batch``."""
    per_device = per_device_batch_size(world_size, global_batch_size, rank)
    if batch < 0:
        raise ValueError(f"batch must be >= 0, got {batch}")
    start = batch * global_batch_size + rank * per_device
    return start, start + per_device


def worker_batches(
    *, first_batch: int, end_batch: int | None, worker: int, num_workers: int
) -> range:
    """Global batches DataLoader worker ``worker`` produces when iteration starts at ``first_batch``.

    ``end_batch=None`` means endless (the range stops at ``sys.maxsize``).
    """
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    if not 0 <= worker < num_workers:
        raise ValueError(f"worker {worker} outside [0, {num_workers})")
    if first_batch < 0:
        raise ValueError(f"first_batch must be >= 0, got {first_batch}")
    stop = sys.maxsize if end_batch is None else end_batch
    return range(first_batch + worker, stop, num_workers)


def worker_positions(*, first_batch: int, end_batch: int, rank: int, worker: int, world_size: int,
                     num_workers: int, global_batch_size: int) -> np.ndarray:  # fmt: skip
    """All global positions one (rank, worker) reads, in the order it yields them (int64)."""
    per_device = per_device_batch_size(world_size, global_batch_size, rank)
    span = worker_batches(
        first_batch=first_batch, end_batch=end_batch, worker=worker, num_workers=num_workers
    )
    batches = np.arange(span.start, span.stop, span.step, dtype=np.int64)
    starts = batches * global_batch_size + rank * per_device
    return (starts[:, None] + np.arange(per_device, dtype=np.int64)[None, :]).reshape(-1)


@numba.njit(cache=True, nogil=True)
def _scatter_nb(values, domains, domain_offsets, first_position, global_batch_size, per_device,
                num_workers, first_batch, lane_offset, lane_size, out):  # fmt: skip
    """Values ``i`` belong to lane position ``first_position + i``: global position
    ``(u // lane_size) * G + lane_offset + u % lane_size`` (the identity for one lane of size G)."""
    add_offsets = domains.shape[0] > 0
    i = 0
    while i < values.shape[0]:  # one lane run (a slice of one batch) per iteration
        u = first_position + i
        in_lane = u % lane_size
        lane_run = min(lane_size - in_lane, values.shape[0] - i)
        start = (u // lane_size) * global_batch_size + lane_offset + in_lane
        j = 0
        while j < lane_run:  # one per-device batch (or its remainder) per iteration
            position = start + j
            batch = position // global_batch_size - first_batch
            within = position % global_batch_size
            column = within % per_device
            run = min(per_device - column, lane_run - j)
            row = (within // per_device) * num_workers + batch % num_workers
            slot = (batch // num_workers) * per_device + column
            for k in range(run):
                value = values[i + j + k]
                if add_offsets:
                    value += domain_offsets[domains[i + j + k]]
                out[row, slot + k] = value
            j += run
        i += lane_run


def scatter_to_workers(values: np.ndarray, *, first_position: int, out: np.ndarray, world_size: int,
                       num_workers: int, global_batch_size: int, first_batch: int = 0,
                       domains: np.ndarray | None = None,
                       domain_offsets: np.ndarray | None = None,
                       lane: tuple[int, int] = (0, 1)) -> None:  # fmt: skip
    """Write ``values`` (for positions from ``first_position``) into per-worker lists.

    ``out`` has shape ``(world_size * num_workers, slots)``; row ``rank * K + worker`` receives
    that worker's values in the order it yields them (as :func:`worker_positions`). With
    ``domains`` and ``domain_offsets``, ``domain_offsets[domains[i]]`` is added to value ``i``
    (e.g. to turn per-domain sample indices into global sample ids). With ``lane = (c, C)``
    the values are lane positions of canonical slice ``c`` of ``C`` from ``first_position``
    on (:mod:`streammix.core.canonical`), written straight to their workers.
    """
    per_device = per_device_batch_size(world_size, global_batch_size)
    if out.ndim != 2 or out.shape[0] != world_size * num_workers:
        raise ValueError(
            f"out must have shape ({world_size * num_workers}, slots), got {out.shape}"
        )
    c, num_lanes = lane
    if num_lanes < 1 or global_batch_size % num_lanes or not 0 <= c < num_lanes:
        raise ValueError(f"lane {lane} is not a slice of the global batch {global_batch_size}")
    lane_size = global_batch_size // num_lanes
    if first_position < first_batch * lane_size:
        raise ValueError("first_position lies before first_batch")
    if (domains is None) != (domain_offsets is None):
        raise ValueError("give both domains and domain_offsets, or neither")
    if domains is None:
        domains, domain_offsets = np.empty(0, np.int32), np.empty(0, np.int64)
    elif domains.shape != values.shape:
        raise ValueError("domains must have one entry per value")
    _scatter_nb(values, domains, np.asarray(domain_offsets, dtype=out.dtype), np.int64(first_position),
                np.int64(global_batch_size), np.int64(per_device), np.int64(num_workers),
                np.int64(first_batch), np.int64(c * lane_size), np.int64(lane_size), out)  # fmt: skip
