"""Which positions a rank and worker serve: epochs of global batches, partial last batches,
and per-stream batching (the interleave run over global batches)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from streaming.base.world import World

from streammix.core.groups import DomainGroups, split_domain
from streammix.core.order import GlobalOrder
from streammix.core.partition import device_batch_span, worker_batches
from streammix.core.passes import DomainLayout, PassTables


class EpochBatchesMixin:
    """Batch planning helpers of StreamMixDataset."""

    def rank_positions(self, start: int, size: int, world: World) -> np.ndarray:
        """Global positions of this rank's part of the global batch ``[start, start + size)``.

        A whole batch (``size == G``) is the rank's contiguous ``G / W`` slice. A partial last
        batch of an epoch is split as upstream pads one: every rank takes ``ceil(size / W)``
        positions, the ranks past its end wrapping to its first samples.

        With canonical nodes (``C > 1``) a whole batch that does not start at a multiple of
        ``G`` (the epochs after one whose size is not a multiple of ``G``) still holds one
        position of each residue mod ``G``; it is served in residue order (positions
        ``start .. start + G`` sorted by ``position % G``), so the rank's slice is its
        residues ``[r*G/W, (r+1)*G/W)`` and its node keeps reading only its canonical slices.
        Aligned batches are the same either way.
        """
        G = self._require_batch_size()
        if size == G:
            lo, hi = device_batch_span(batch=0, rank=world.rank, world_size=world.num_ranks,
                                       global_batch_size=G)
            if self.canonical_nodes == 1:
                return np.arange(start + lo, start + hi, dtype=np.int64)
            positions = start - start % G + np.arange(lo, hi, dtype=np.int64)
            positions[positions < start] += G
            return positions
        per_rank = -(-size // world.num_ranks)
        index = world.rank * per_rank + np.arange(per_rank, dtype=np.int64)
        return start + index % size

    def _epoch_batches(self, epoch: int, sample_in_epoch: int, world: World
                       ) -> Iterator[tuple[int, int, int]]:
        """``(global batch, start position, size)`` of the batches this worker serves.

        Global batch ``b`` of the run counts every epoch's batches, a partial last one too;
        with whole-batch epochs it is ``start // G``. Lazy: an epoch of 2e8 samples has
        millions of batches, and a resume must not list them before the first one.
        """
        G, E = self._require_batch_size(), self.epoch_size
        if sample_in_epoch % G and sample_in_epoch != E:
            raise ValueError(f"cannot start at sample {sample_in_epoch} of the epoch: not a "
                             f"multiple of the global batch size {G}")
        first, end = -(-sample_in_epoch // G), -(-E // G)
        batches = worker_batches(first_batch=first, end_batch=end, worker=world.worker_of_rank,
                                 num_workers=world.workers_per_rank)
        base, per_epoch = epoch * E, -(-E // G)
        return ((epoch * per_epoch + j, base + j * G, min(G, E - j * G)) for j in batches)

    def _per_stream_samples(self, order: GlobalOrder, batch: tuple[int, int, int],
                            positions: np.ndarray, state: dict[str, Any]
                            ) -> tuple[np.ndarray, np.ndarray]:
        """Per-stream batching: the order's position ``b`` is global batch ``b``.

        Batch ``b`` comes from the domain the interleave gives position ``b``; if that domain
        served ``j`` batches before, the batch reads elements ``[j * G, j * G + size)`` of the
        domain's stream of passes (a partial last batch leaves the rest of its run unread).
        With ``C > 1`` canonical nodes the position with residue ``r = p % G`` is in slice
        ``c = r // S`` (``S = G / C``) and reads element ``j * S + r - c * S`` of group ``c``'s
        stream of passes, so a node reads only its groups' shards.
        """
        index, start, _ = batch
        cursors = order.cursors_at(index)  # before samples(): forward reads stay cheap
        domain = int(order.samples(index, index + 1)[0][0])
        if self.canonical_nodes > 1:
            return self._per_stream_slices(domain, int(cursors[domain]), positions, state)
        if state.get("tables") is None:
            state["tables"] = [PassTables(layout, seed=self.order_seed, domain=d,
                                          window_shards=self.mixing.window_shards,
                                          shuffle=self.upstream_options.shuffle)
                               for d, layout in enumerate(self.layouts)]
        offsets = positions - start
        first = int(cursors[domain]) * self._require_batch_size() + int(offsets[0])
        run = state["tables"][domain].elements_to_samples(first, int(offsets[-1] - offsets[0]) + 1)
        domains = np.full(positions.shape[0], domain, dtype=np.int32)
        return domains, run[offsets - offsets[0]]

    def _per_stream_slices(self, domain: int, served: int, positions: np.ndarray,
                           state: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """``_per_stream_samples`` with ``C > 1``: each slice from its own group's passes."""
        C, G = self.canonical_nodes, self._require_batch_size()
        S = G // C
        if state.get("group_tables") is None:
            state["group_tables"] = [
                [PassTables(layout, seed=self.order_seed, domain=d,
                            window_shards=self.mixing.window_shards,
                            pieces=self.per_stream_groups[d].pieces[c],
                            piece_elements=self.per_stream_groups[d].piece_elements[c],
                            group=(c, C), shuffle=self.upstream_options.shuffle)
                 for d, layout in enumerate(self.layouts)]
                for c in range(C)]
        residues = positions % G
        slices = residues // S
        local = np.empty(positions.shape[0], dtype=np.int64)
        for c in np.unique(slices).tolist():
            mask = slices == c
            within = residues[mask] - c * S
            lo = int(within.min())
            run = state["group_tables"][c][domain].elements_to_samples(
                served * S + lo, int(within.max()) - lo + 1)
            local[mask] = run[within - lo]
        return np.full(positions.shape[0], domain, dtype=np.int32), local


def per_stream_groups(names: Sequence[str], layouts: Sequence[DomainLayout],
                      canonical_nodes: int) -> list[DomainGroups]:
    """Each domain's ``C`` canonical groups for per-stream batching; every domain with
    samples must give every group some (a group reads a slice of each of its batches)."""
    groups = [split_domain(layout, canonical_nodes) for layout in layouts]
    for name, layout, domain_groups in zip(names, layouts, groups):
        if layout.pass_size and min(domain_groups.elements) == 0:
            raise ValueError(
                f"domain {name!r}: its {layout.pass_size} elements cannot fill "
                f"{canonical_nodes} canonical groups (some group is empty): use fewer "
                "canonical nodes")
    return groups
