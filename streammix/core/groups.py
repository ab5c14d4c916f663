"""Canonical groups: each domain's samples split into ``C`` disjoint parts, one per slice.

A run with ``C`` canonical nodes splits every domain into ``C`` *groups*; slice ``c`` of
every global batch reads only groups ``c`` (see :mod:`streammix.core.canonical`). A group is
a list of *pieces*, half-open ranges of the domain's sample ids, each inside one shard;
pieces play the role of shards in the group's own passes
(:class:`~streammix.core.passes.PassTables` with ``pieces``).

The split balances *elements* (samples weighted by their repeat counts; samples when there
are none), with ``E`` the domain's elements and ``P[j]`` the elements of shards ``< j``:

1. **Whole shards** (the domain has at least ``C`` shards): boundary ``b_c`` is the shard
   edge ``j`` with ``P[j]`` nearest to ``c * E / C`` (first on ties), and group ``c`` is
   shards ``[b_c, b_{c+1})``. Used when every group gets elements and none gets more than
   ``2 * E / C``; otherwise (few shards, or very uneven shard sizes):
2. **Sample ranges**: boundary ``s_c`` is the first sample whose element prefix reaches
   ``c * E // C`` (``c * N // C`` without repeat counts); group ``c`` is samples
   ``[s_c, s_{c+1})`` cut at shard edges, so several groups share a shard and read disjoint
   parts of it.

Either way the groups are disjoint and cover every sample, so one pass of every group is
one pass of the domain. With ``C = 1`` the single group is the domain's shards as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streammix.core.passes import DomainLayout


@dataclass(frozen=True, kw_only=True)
class DomainGroups:
    """The ``C`` groups of one domain: ``pieces[c] = (starts, stops)`` (int64 sample ids)."""

    pieces: tuple[tuple[np.ndarray, np.ndarray], ...]
    piece_elements: tuple[np.ndarray, ...]  # elements of each piece, per group
    whole_shards: bool

    @property
    def num_groups(self) -> int:
        return len(self.pieces)

    @property
    def elements(self) -> tuple[int, ...]:
        """Elements (pass size) of each group."""
        return tuple(int(e.sum()) for e in self.piece_elements)


class _Elements:
    """Elements before sample ``i``: ``i`` itself, or a prefix sum of the repeat counts."""

    def __init__(self, layout: DomainLayout) -> None:
        self.prefix = None
        if layout.repeat_counts is not None:
            self.prefix = np.zeros(layout.num_samples + 1, dtype=np.int64)
            np.cumsum(layout.repeat_counts, out=self.prefix[1:])
        self.total = layout.pass_size

    def before(self, samples: np.ndarray) -> np.ndarray:
        samples = np.asarray(samples, dtype=np.int64)
        return samples.copy() if self.prefix is None else self.prefix[samples]

    def first_reaching(self, targets: np.ndarray) -> np.ndarray:
        """The first sample index whose prefix reaches each target."""
        if self.prefix is None:
            return np.asarray(targets, dtype=np.int64).copy()
        return np.searchsorted(self.prefix, targets, side="left").astype(np.int64)


def _shard_boundaries(shard_prefix: np.ndarray, num_groups: int) -> np.ndarray:
    """Shard edges nearest to ``c * E / C`` (first on ties), for ``c = 0 .. C``."""
    total = int(shard_prefix[-1])
    bounds = np.empty(num_groups + 1, dtype=np.int64)
    for c in range(num_groups + 1):
        # compare |P[j] * C - c * E| in integers: exact
        distance = np.abs(shard_prefix * num_groups - c * total)
        bounds[c] = int(np.argmin(distance))
    bounds[0], bounds[-1] = 0, shard_prefix.shape[0] - 1
    return bounds


def split_domain(layout: DomainLayout, num_groups: int) -> DomainGroups:
    """The ``num_groups`` canonical groups of a domain (see the module docstring)."""
    if not isinstance(num_groups, int | np.integer) or num_groups < 1:
        raise ValueError(f"num_groups must be a positive integer, got {num_groups!r}")
    sizes = np.asarray(layout.shard_sizes, dtype=np.int64)
    shard_start = np.zeros(sizes.shape[0] + 1, dtype=np.int64)
    np.cumsum(sizes, out=shard_start[1:])
    elements = _Elements(layout)
    shard_prefix = elements.before(shard_start)
    if num_groups == 1 or sizes.shape[0] >= num_groups:
        bounds = _shard_boundaries(shard_prefix, num_groups)
        totals = np.diff(shard_prefix[bounds])
        if num_groups == 1 or (
            (totals > 0).all() and (totals * num_groups <= 2 * elements.total).all()
        ):
            pieces = tuple(
                (shard_start[a:b].copy(), shard_start[a + 1 : b + 1].copy())
                for a, b in zip(bounds[:-1], bounds[1:])
            )
            piece_elements = tuple(
                np.diff(shard_prefix[a : b + 1]) for a, b in zip(bounds[:-1], bounds[1:])
            )
            return DomainGroups(pieces=pieces, piece_elements=piece_elements, whole_shards=True)
    targets = np.arange(num_groups + 1, dtype=np.int64) * elements.total // num_groups
    cuts = elements.first_reaching(targets)
    cuts[0], cuts[-1] = 0, layout.num_samples
    pieces = tuple(_cut_at_shards(int(a), int(b), shard_start) for a, b in zip(cuts[:-1], cuts[1:]))
    piece_elements = tuple(elements.before(b) - elements.before(a) for a, b in pieces)
    return DomainGroups(pieces=pieces, piece_elements=piece_elements, whole_shards=False)


def _cut_at_shards(start: int, stop: int, shard_start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Samples ``[start, stop)`` as ranges that each lie inside one shard (empty ones dropped)."""
    inner = shard_start[(shard_start > start) & (shard_start < stop)]
    edges = np.concatenate(([start], inner, [stop])).astype(np.int64)
    starts, stops = edges[:-1], edges[1:]
    keep = stops > starts
    return starts[keep].copy(), stops[keep].copy()


def shard_of_samples(layout: DomainLayout, samples: np.ndarray) -> np.ndarray:
    """The shard index of each sample id of a domain (int64)."""
    shard_start = np.concatenate(([0], np.cumsum(layout.shard_sizes, dtype=np.int64)))
    nonempty = np.flatnonzero(np.diff(shard_start) > 0)
    return nonempty[np.searchsorted(shard_start[nonempty], samples, side="right") - 1]
