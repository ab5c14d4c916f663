"""Canonical nodes: global batches cut into ``C`` slices, each reading its own shards.

A run fixes ``C`` canonical nodes and the global batch size ``G`` (``C`` divides ``G``,
``S = G / C``). Global batch ``g`` is positions ``[g*G, (g+1)*G)``; its slice ``c`` is
``[g*G + c*S, g*G + (c+1)*S)``. Slice ``c`` of every batch draws only from group ``c`` of
each domain (:mod:`streammix.core.groups`), each group with its own shard-local passes
keyed by ``(seed, domain, C, c, pass)``.

**Lanes.** The positions of slice ``c`` in batch order form *lane* ``c``: lane position
``u`` is global position ``(u // S) * G + c * S + u % S``. Segment ``i`` (start ``T_i``, a
multiple of ``G``) starts at lane position ``T_i / C`` in every lane, with the segment's
``group_cursors[c]`` as lane ``c``'s cursors (:class:`~streammix.core.schedule.Segment`).

**Domain pattern.** Lane ``c`` reads the segment's interleave (Megatron's greedy, or the
seeded random one) from relative index ``c * S`` on: its ``n``-th position in segment ``i``
gets the domain of interleave index ``c * S + n``. Batch ``b`` of a segment therefore holds,
over its ``C`` slices, interleave indices ``[b*S + c*S, b*S + (c+1)*S)`` for ``c < C``:
exactly the window ``[b*S, b*S + G)``, so each batch's per-domain counts are within the
greedy's bound of ``w * G`` as without canonical nodes, each slice follows the weights on
its own, and a 1% domain is spread over the slices instead of landing in all ``C`` at once.
With ``C = 1`` every definition reduces to the order without canonical nodes, bit for bit.

**Physical nodes.** Node ``n`` of ``N`` (``N`` divides ``C``) serves slices
``[n*C/N, (n+1)*C/N)``, i.e. the contiguous positions ``[g*G + n*G/N, g*G + (n+1)*G/N)``
of every batch. With torch's rank numbering (``rank = node * ranks_per_node + local_rank``)
the contiguous per-rank spans of :mod:`streammix.core.partition` lie inside their node's
span, and DataLoader workers split a rank's batches as before. Nothing depends on ``N``,
ranks per node or workers: only on ``C`` and ``G``.
"""

from __future__ import annotations

import numba
import numpy as np

from streammix.core.schedule import Schedule, Segment, canonical_slice_size


def check_nodes(num_nodes: int, canonical_nodes: int) -> None:
    """ValueError unless ``num_nodes >= 1`` divides ``canonical_nodes``."""
    if num_nodes < 1 or canonical_nodes < 1 or canonical_nodes % num_nodes:
        raise ValueError(f"the number of physical nodes ({num_nodes}) must divide the number "
                         f"of canonical nodes ({canonical_nodes})")  # fmt: skip


def node_slices(*, node: int, num_nodes: int, canonical_nodes: int) -> range:
    """The canonical slices physical node ``node`` of ``num_nodes`` serves."""
    check_nodes(num_nodes, canonical_nodes)
    if not 0 <= node < num_nodes:
        raise ValueError(f"node {node} outside [0, {num_nodes})")
    per_node = canonical_nodes // num_nodes
    return range(node * per_node, (node + 1) * per_node)


def node_batch_span(*, batch: int, node: int, num_nodes: int, canonical_nodes: int,
                    global_batch_size: int) -> tuple[int, int]:  # fmt: skip
    """Global positions ``[start, stop)`` node ``node`` serves in global batch ``batch``."""
    slices = node_slices(node=node, num_nodes=num_nodes, canonical_nodes=canonical_nodes)
    size = canonical_slice_size(canonical_nodes, global_batch_size)
    if batch < 0:
        raise ValueError(f"batch must be >= 0, got {batch}")
    base = batch * global_batch_size
    return base + slices.start * size, base + slices.stop * size


def rank_slices(*, rank: int, world_size: int, canonical_nodes: int,
                global_batch_size: int) -> range:  # fmt: skip
    """The canonical slices (hence groups, hence shards) rank ``rank`` of ``world_size`` reads."""
    size = canonical_slice_size(canonical_nodes, global_batch_size)
    if world_size < 1 or global_batch_size % world_size or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size and world_size dividing "
                         f"{global_batch_size}, got rank {rank}, world_size {world_size}")  # fmt: skip
    per_rank = global_batch_size // world_size
    return range(rank * per_rank // size, -(-(rank + 1) * per_rank // size))


def slice_of(position: int, canonical_nodes: int, global_batch_size: int) -> int:
    """The canonical slice that global ``position`` belongs to."""
    size = canonical_slice_size(canonical_nodes, global_batch_size)
    return position % global_batch_size // size


def lane_span(start: int, stop: int, lane: int, canonical_nodes: int,
              global_batch_size: int) -> tuple[int, int]:  # fmt: skip
    """Lane positions of slice ``lane`` that fall in global positions ``[start, stop)``."""
    size = global_batch_size // canonical_nodes
    offset = lane * size

    def before(position: int) -> int:
        return position // global_batch_size * size + min(
            max(position % global_batch_size - offset, 0), size
        )

    return before(start), before(stop)


@numba.njit(cache=True, nogil=True)
def _scatter_lane_nb(part_domains, part_samples, lane_start, offset, size, global_batch_size,
                     start, domains, samples):  # fmt: skip
    i = 0
    n = part_domains.shape[0]
    while i < n:  # one slice run (up to ``size`` positions) per iteration
        u = lane_start + i
        within = u % size
        run = min(size - within, n - i)
        j = (u // size) * global_batch_size + offset + within - start
        for k in range(run):
            domains[j + k] = part_domains[i + k]
            samples[j + k] = part_samples[i + k]
        i += run


def scatter_lane(part: tuple[np.ndarray, np.ndarray], lane_start: int, lane: int,
                 canonical_nodes: int, global_batch_size: int, start: int,
                 out: tuple[np.ndarray, np.ndarray]) -> None:  # fmt: skip
    """Write lane ``lane``'s values from lane position ``lane_start`` to their global places."""
    size = global_batch_size // canonical_nodes
    _scatter_lane_nb(part[0], part[1], np.int64(lane_start), np.int64(lane * size),
                     np.int64(size), np.int64(global_batch_size), np.int64(start),
                     out[0], out[1])  # fmt: skip


def lane_schedules(schedule: Schedule, canonical_nodes: int,
                   extends: list[Schedule] | None = None) -> list[Schedule]:  # fmt: skip
    """Each lane's schedule: starts ``T_i / C``, cursors ``group_cursors[c]``.

    ``extends``: the lane schedules of a schedule this one extends (``Schedule.append``);
    their segments before the last are reused, so appending costs the same at any length.
    """
    keep = 0 if extends is None else max(len(extends[0].segments) - 1, 0)
    new = schedule.segments[keep:]
    rows = [segment.group_cursors_for(canonical_nodes) for segment in new]
    result = []
    for c in range(canonical_nodes):
        segments = tuple(
            Segment(start=s.start // canonical_nodes, weights=s.weights, cursors=row[c])
            for s, row in zip(new, rows)
        )
        if extends is not None:
            segments = extends[c].segments[:keep] + segments
        result.append(Schedule._unchecked(segments, [s.start for s in segments]))
    return result
