"""One-pass epochs with canonical nodes: every epoch serves every element exactly once.

With one canonical node an epoch of ``E = sum_d n_d`` positions at natural weights
(``w_d = n_d / E``, ``n_d`` the elements of a domain's pass) is exactly one pass: the greedy
interleave hits every count at the end of its period. With ``C > 1`` slices each reading
the shared interleave and its own fixed group of shards (:mod:`streammix.core.canonical`)
it is not, because lane ``c``'s draws of domain ``d`` in an epoch differ from the size of
group ``(c, d)``. This module gives those runs their own order, used when
``OrderConfig(one_pass_epochs=True)`` and ``C > 1``; weighted and online orders keep the
canonical lanes.

Notation: ``S = G / C``; lane ``c`` holds the global positions ``p`` with
``p % G // S == c``, in increasing order (lane position ``u`` is global position
``(u // S) * G + c * S + u % S``); epoch ``e`` is global positions ``[e*E, (e+1)*E)``.

1. **Lane sizes.** Lane ``c`` has ``Q(e, c) = L(e+1, c) - L(e, c)`` positions in epoch
   ``e``, with ``L(e, c)`` the lane positions before global position ``e*E`` (closed form:
   :func:`~streammix.core.canonical.lane_span`). ``sum_c Q(e, c) = E``. When ``G`` does not
   divide ``E`` the later epochs start mid-batch and the ``Q`` differ by epoch.
2. **Per-epoch group sizes** ``n(e, c, d)``, row sums ``Q(e, c)``, column sums ``n_d``
   (:func:`allocate_epoch`): the floors of ``n_d * Q(e, c) / E`` plus a 0/1 matrix with the
   remaining row and column sums (it exists because the fractional parts have those sums;
   built by Ryser's greedy: each domain in turn adds one to the lanes with the largest
   remaining need). Every entry is within one of ``n_d * Q(e, c) / E``.
3. **Groups.** Group ``(e, c, d)`` is elements ``[A, A + n(e, c, d))`` of domain ``d`` in
   shard order (``A`` the sizes of groups ``c' < c``): a contiguous run of samples, cut at
   shard edges into pieces, whose first and last sample may contribute only some of their
   repeat copies (one-sample pieces with ``piece_copies``). As the sizes move by a few
   elements between epochs, lane ``c`` keeps reading about the ``c``-th ``1/C`` of every
   domain's shards, plus a shard it shares with a neighbour at each end. The group's pass
   is shuffled with shard locality (:class:`~streammix.core.passes.PassTables`), keyed by
   ``(seed, d, C, c)`` and pass index ``e``.
4. **Interleave.** Lane ``c`` interleaves epoch ``e`` by Megatron's greedy with its own
   natural weights ``n(e, c, d) / Q(e, c)``, whose first period ``[0, Q)`` holds exactly
   ``n(e, c, d)`` picks of each domain (no domain runs a full sample ahead of its target,
   see :mod:`streammix.core.interleave`, and the counts sum to ``Q``). The lane reads that
   period rotated by ``phase = (c*S + L(e, c) - (e*E // G) * S) mod Q``: the slices of one
   batch read overlapping windows of nearly the same sequence, offset by ``S`` each, so a
   small domain is spread over the batches (as in the canonical lanes) instead of landing
   in all ``C`` slices of the same batch. The ``k``-th pick of ``d`` reads element ``k`` of
   group ``(e, c, d)``'s pass.

So every epoch's positions read each element of every domain exactly once, whatever ``C``,
``G`` and ``E``. Resuming anywhere costs one exact greedy skip-ahead inside the epoch
(:func:`~streammix.core.greedy_skip.greedy_counts_at`) and ``O(shards)`` to cut the groups.

**Resampled domains** (``DomainLayout(resample=True)``, upstream's ``'balanced'``): the
extra copies of epoch ``e`` are drawn for the whole domain, keyed by ``(seed, d, C, e)``,
before it is cut into groups, so the epoch is one pass of that draw.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from streammix.core.canonical import lane_span
from streammix.core.groups import _cut_at_shards
from streammix.core.lane import _gather_by_domain_nb
from streammix.core.passes import DomainLayout, PassTables, resampled_extras
from streammix.core.rng import PURPOSE_EPOCH_RESAMPLE, derive_key
from streammix.core.schedule import canonical_slice_size, segment_picks

CACHED_EPOCHS = 2  # per-epoch tables kept (the epoch being read and the one before)


def lane_epoch_sizes(epoch: int, epoch_size: int, canonical_nodes: int,
                     global_batch_size: int) -> np.ndarray:  # fmt: skip
    """``Q(e, c)`` for every lane ``c``: its positions in epoch ``epoch`` (int64, sum ``E``)."""
    start, stop = epoch * epoch_size, (epoch + 1) * epoch_size
    return np.array([hi - lo for lo, hi in (lane_span(start, stop, c, canonical_nodes,
                                                      global_batch_size)
                                            for c in range(canonical_nodes))], dtype=np.int64)


def allocate_epoch(pass_sizes: Sequence[int], lane_sizes: Sequence[int]) -> np.ndarray:
    """``(C, D)`` int64 group sizes: row sums ``lane_sizes``, column sums ``pass_sizes``,
    each entry the floor or ceiling of ``pass_sizes[d] * lane_sizes[c] / E`` or one more
    (module docstring, step 2)."""
    n = np.asarray(pass_sizes, dtype=np.int64)
    q = np.asarray(lane_sizes, dtype=np.int64)
    total = int(n.sum())
    if total != int(q.sum()) or (n < 0).any() or (q < 0).any():
        raise ValueError(f"lane sizes {q.tolist()} and pass sizes {n.tolist()} must be "
                         "non-negative with equal sums")  # fmt: skip
    if total == 0:
        return np.zeros((q.shape[0], n.shape[0]), dtype=np.int64)
    product = q[:, None].astype(object) * n[None, :].astype(object)  # exact for any size
    sizes = (product // total).astype(np.int64)
    row_need = q - sizes.sum(axis=1)
    column_need = n - sizes.sum(axis=0)
    remainder = (product % total).astype(np.float64)
    for d in range(n.shape[0]):
        need = int(column_need[d])
        if need == 0:
            continue
        # the lanes with the largest remaining need; ties: the larger fractional part, then c
        rank = np.lexsort((np.arange(q.shape[0]), -remainder[:, d], -row_need))
        chosen = rank[:need]
        if need > q.shape[0] or (row_need[chosen] <= 0).any():
            raise AssertionError("no 0/1 completion of the epoch's group sizes")
        sizes[chosen, d] += 1
        row_need[chosen] -= 1
    if row_need.any():
        raise AssertionError("no 0/1 completion of the epoch's group sizes")
    return sizes


def epoch_repeat_counts(layout: DomainLayout, *, seed: int, domain: int, canonical_nodes: int,
                        epoch: int) -> np.ndarray | None:  # fmt: skip
    """The domain's repeat counts in epoch ``epoch`` (a fresh draw of the extra copies for a
    resampled domain; the layout's counts otherwise)."""
    counts = layout.repeat_counts
    if counts is None or not layout.resample or counts.size == 0 or counts.min() == counts.max():
        return counts
    full = int(counts.min())
    extra = int(counts.sum()) - full * counts.shape[0]
    drawn = np.full(counts.shape[0], full, dtype=np.int64)
    key = derive_key(seed, PURPOSE_EPOCH_RESAMPLE, domain, canonical_nodes, epoch)
    drawn[resampled_extras(np.arange(counts.shape[0], dtype=np.int64), extra, key)] += 1
    return drawn


def element_range_pieces(shard_sizes: Sequence[int], counts: np.ndarray | None, first: int,
                         stop: int, *, prefix: np.ndarray | None = None
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Elements ``[first, stop)`` of a domain as ``(starts, stops, copies, elements)``
    pieces: runs of whole samples inside one shard (``copies -1``) and, where the range
    starts or ends inside a sample's copies, that sample alone with the copies it holds.
    ``prefix``: the element prefix sums of ``counts`` (length ``N + 1``), if at hand."""
    shard_start = np.concatenate(([0], np.cumsum(shard_sizes, dtype=np.int64)))
    empty = np.zeros(0, dtype=np.int64)
    if stop <= first:
        return empty, empty, empty, empty
    if counts is None:
        starts, stops = _cut_at_shards(first, stop, shard_start)
        return starts, stops, np.full(starts.shape[0], -1, np.int64), stops - starts
    if prefix is None:
        prefix = element_prefix(counts)
    s_first = int(np.searchsorted(prefix, first, side="right")) - 1
    s_last = int(np.searchsorted(prefix, stop - 1, side="right")) - 1
    if s_first == s_last:
        one = np.array([s_first], np.int64)
        return one, one + 1, np.array([stop - first], np.int64), np.array([stop - first], np.int64)
    head, tail = [], []  # (start, stop, copies, elements) of partial end samples
    lo, hi = s_first, s_last + 1
    if prefix[s_first] < first:
        head.append((s_first, s_first + 1, int(prefix[s_first + 1]) - first))
        lo = s_first + 1
    if prefix[s_last + 1] > stop:
        tail.append((s_last, s_last + 1, stop - int(prefix[s_last])))
        hi = s_last
    starts, stops = _cut_at_shards(lo, hi, shard_start)
    parts = [(np.array([a], np.int64), np.array([b], np.int64), np.array([k], np.int64),
              np.array([k], np.int64)) for a, b, k in head]
    parts.append((starts, stops, np.full(starts.shape[0], -1, np.int64),
                  prefix[stops] - prefix[starts]))
    parts += [(np.array([a], np.int64), np.array([b], np.int64), np.array([k], np.int64),
               np.array([k], np.int64)) for a, b, k in tail]
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(4))  # type: ignore[return-value]


def element_prefix(counts: np.ndarray) -> np.ndarray:
    """Elements before each sample (length ``N + 1``)."""
    prefix = np.zeros(counts.shape[0] + 1, dtype=np.int64)
    np.cumsum(counts, out=prefix[1:])
    return prefix


class _Epoch:
    """One epoch's group sizes, and per domain its element prefix (cut points)."""

    def __init__(self, order: OnePassEpochs, epoch: int) -> None:
        self.epoch = epoch
        self.lane_sizes = lane_epoch_sizes(epoch, order.epoch_size, order.canonical_nodes,
                                           order.global_batch_size)  # fmt: skip
        self.sizes = allocate_epoch(order.pass_sizes, self.lane_sizes)
        self.firsts = np.zeros_like(self.sizes)
        np.cumsum(self.sizes[:-1], axis=0, out=self.firsts[1:])
        self.counts = [epoch_repeat_counts(layout, seed=order.seed, domain=d,
                                           canonical_nodes=order.canonical_nodes, epoch=epoch)
                       for d, layout in enumerate(order.domains)]  # fmt: skip
        self.layouts = [layout if not layout.resample else DomainLayout(
            shard_sizes=layout.shard_sizes, repeat_counts=counts)
            for layout, counts in zip(order.domains, self.counts)]  # this epoch's draw
        self._prefixes: dict[int, np.ndarray] = {}
        self.lanes: dict[int, _LaneEpoch] = {}

    def prefix(self, d: int) -> np.ndarray | None:
        """Domain ``d``'s element prefix sums in this epoch (None without repeat counts)."""
        if self.counts[d] is None:
            return None
        if d not in self._prefixes:
            self._prefixes[d] = element_prefix(self.counts[d])
        return self._prefixes[d]


class _LaneEpoch:
    """Lane ``c`` in epoch ``e``: its rotated greedy period and its groups' passes."""

    def __init__(self, order: OnePassEpochs, epoch: _Epoch, lane: int) -> None:
        C, G, E = order.canonical_nodes, order.global_batch_size, order.epoch_size
        S = G // C
        e = epoch.epoch
        self.epoch = e
        self.start = lane_span(e * E, e * E, lane, C, G)[0]
        self.size = int(epoch.lane_sizes[lane])
        self.picks = epoch.sizes[lane]
        self.weights = (self.picks / self.size) if self.size else None
        self.phase = (lane * S + self.start - (e * E // G) * S) % self.size if self.size else 0
        self.base = self._counts_at(self.phase)  # picks of each domain before the phase
        self.tables: list[PassTables | None] = [None] * len(order.domains)
        self._order, self._epoch, self._lane = order, epoch, lane
        self._state: tuple[int, np.ndarray] | None = None

    def _counts_at(self, index: int) -> np.ndarray:
        """Greedy counts before period index ``index`` (from the held state when earlier)."""
        known_index, known = 0, np.zeros(self.picks.shape[0], dtype=np.int64)
        state = getattr(self, "_state", None)
        if state is not None and state[0] <= index:
            known_index, known = state
        if index == known_index:
            return known.copy()
        _, counts = segment_picks(self.weights, method="greedy", seed=None, segment_index=0,
                                  segment_start=0, rel_start=known_index, counts=known,
                                  n=index - known_index, record=False)  # fmt: skip
        return counts

    def _table(self, d: int) -> PassTables:
        table = self.tables[d]
        if table is None:
            order, layout = self._order, self._order.domains[d]
            first = int(self._epoch.firsts[self._lane, d])
            starts, stops, copies, elements = element_range_pieces(
                layout.shard_sizes, self._epoch.counts[d], first, first + int(self.picks[d]),
                prefix=self._epoch.prefix(d))
            table = self.tables[d] = PassTables(
                self._epoch.layouts[d], seed=order.seed, domain=d, window_shards=order.window_shards,
                pieces=(starts, stops), piece_elements=elements, piece_copies=copies,
                group=(self._lane, order.canonical_nodes), shuffle=order.shuffle)
        return table

    def read(self, lo: int, hi: int, domains: np.ndarray, samples: np.ndarray) -> None:
        """(domain, sample) of the lane's epoch positions ``[lo, hi)`` (relative to its start)."""
        if not 0 <= lo <= hi <= self.size:
            raise ValueError(f"lane epoch positions [{lo}, {hi}) outside [0, {self.size})")
        elements = np.empty(hi - lo, dtype=np.int64)
        done = 0
        for index, length, wrapped in self._runs(lo, hi):
            counts = self._counts_at(index)
            part = slice(done, done + length)
            _, after, within = segment_picks(
                self.weights, method="greedy", seed=None, segment_index=0, segment_start=0,
                rel_start=index, counts=counts, n=length, record=True, with_index=True,
                out=domains[part], index_out=elements[part])  # fmt: skip
            picked = domains[part]
            shift = (self.picks - self.base) if wrapped else -self.base
            elements[part] = within + shift[picked]
            self._state = (index + length, after)
            done += length
        # each domain's picks read consecutive elements of its group: one run per domain
        D = self.picks.shape[0]
        taken = np.bincount(domains, minlength=D).astype(np.int64)
        first = np.full(D, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(first, domains, elements)
        offsets = np.zeros(D + 1, dtype=np.int64)
        np.cumsum(taken, out=offsets[1:])
        per_domain = np.empty(int(offsets[-1]), dtype=np.int64)
        for d in np.flatnonzero(taken).tolist():
            self._table(d).elements_to_samples(
                self.epoch * int(self.picks[d]) + int(first[d]), int(taken[d]),
                out=per_domain[offsets[d]:offsets[d + 1]])
        base = offsets[:-1] - np.where(taken > 0, first, 0)
        _gather_by_domain_nb(domains, elements, per_domain, base, samples)

    def _runs(self, lo: int, hi: int) -> list[tuple[int, int, bool]]:
        """``(period index, length, wrapped)`` runs of rotated positions ``[lo, hi)``."""
        runs = []
        a, b = self.phase + lo, self.phase + hi
        if a < self.size:
            runs.append((a, min(b, self.size) - a, False))
        if b > self.size:
            start = max(a, self.size) - self.size
            runs.append((start, b - self.size - start, True))
        return [r for r in runs if r[1] > 0]


class OnePassEpochs:
    """``samples`` for lane positions of the one-pass-epoch order (module docstring)."""

    def __init__(self, *, seed: int, domains: Sequence[DomainLayout], canonical_nodes: int,
                 global_batch_size: int, window_shards: int, shuffle: bool = True) -> None:  # fmt: skip
        canonical_slice_size(canonical_nodes, global_batch_size)
        self.seed = seed
        self.domains = tuple(domains)
        self.canonical_nodes = canonical_nodes
        self.global_batch_size = global_batch_size
        self.window_shards = window_shards
        self.shuffle = shuffle
        self.pass_sizes = np.array([layout.pass_size for layout in domains], dtype=np.int64)
        self.epoch_size = int(self.pass_sizes.sum())
        if self.epoch_size <= 0:
            raise ValueError("one-pass epochs need at least one element")
        self._epochs: OrderedDict[int, _Epoch] = OrderedDict()

    def _lane_epoch(self, epoch: int, lane: int) -> _LaneEpoch:
        cached = self._epochs.get(epoch)
        if cached is None:
            cached = self._epochs[epoch] = _Epoch(self, epoch)
            while len(self._epochs) > CACHED_EPOCHS:
                self._epochs.popitem(last=False)
        else:
            self._epochs.move_to_end(epoch)
        lane_epoch = cached.lanes.get(lane)
        if lane_epoch is None:
            lane_epoch = cached.lanes[lane] = _LaneEpoch(self, cached, lane)
        return lane_epoch

    def lane_samples(self, lane: int, start: int, stop: int,
                     out: tuple[np.ndarray, np.ndarray]) -> None:  # fmt: skip
        """(domain, sample) of lane ``lane``'s positions ``[start, stop)`` into ``out``."""
        C, G, E = self.canonical_nodes, self.global_batch_size, self.epoch_size
        S = G // C
        u = start
        while u < stop:
            position = (u // S) * G + lane * S + u % S
            lane_epoch = self._lane_epoch(position // E, lane)
            end = min(stop, lane_epoch.start + lane_epoch.size)
            lo, hi = u - start, end - start
            lane_epoch.read(u - lane_epoch.start, end - lane_epoch.start, out[0][lo:hi],
                            out[1][lo:hi])
            u = end


def one_pass_order_reference(*, seed: int, domains: Sequence[DomainLayout], canonical_nodes: int,
                             global_batch_size: int, window_shards: int, stop: int,
                             shuffle: bool = True) -> list[tuple[int, int]]:  # fmt: skip
    """Global positions ``[0, stop)`` of the one-pass-epoch order, the obvious way: list each
    epoch's lane positions, allocate, write out every group's elements and pass, run the
    greedy over the period and rotate it."""
    from collections import Counter

    from streammix.core.interleave import greedy_reference
    from streammix.core.passes import pass_reference

    C, G = canonical_nodes, global_batch_size
    S = G // C
    E = sum(layout.pass_size for layout in domains)
    result: dict[int, tuple[int, int]] = {}
    for e in range(-(-stop // E)):
        lanes = [[p for p in range(e * E, (e + 1) * E) if p % G // S == c] for c in range(C)]
        sizes = allocate_epoch([layout.pass_size for layout in domains], [len(x) for x in lanes])
        passes = {}
        for d, layout in enumerate(domains):
            counts = epoch_repeat_counts(layout, seed=seed, domain=d, canonical_nodes=C, epoch=e)
            counts = [1] * layout.num_samples if counts is None else counts.tolist()
            owners = [i for i, k in enumerate(counts) for _ in range(k)]
            shard_of = [s for s, size in enumerate(layout.shard_sizes) for _ in range(size)]
            first = 0
            for c in range(C):
                n = int(sizes[c, d])
                taken = Counter(owners[first:first + n])
                pieces: list[list[int]] = []  # [start, stop, copies]
                if n:
                    for s in range(owners[first], owners[first + n - 1] + 1):
                        if taken[s] != counts[s]:
                            pieces.append([s, s + 1, taken[s]])
                        elif pieces and pieces[-1][2] == -1 and pieces[-1][1] == s and \
                                shard_of[s] == shard_of[s - 1]:
                            pieces[-1][1] = s + 1
                        else:
                            pieces.append([s, s + 1, -1])
                epoch_layout = DomainLayout(shard_sizes=layout.shard_sizes,
                                            repeat_counts=np.array(counts, dtype=np.int64))
                passes[c, d] = pass_reference(
                    epoch_layout, seed=seed, domain=d, pass_index=e, window_shards=window_shards,
                    pieces=[(a, b) for a, b, _ in pieces], group=(c, C), shuffle=shuffle,
                    piece_copies=[k for _, _, k in pieces]) if n else []
                assert len(passes[c, d]) == n
                first += n
        for c, positions in enumerate(lanes):
            Q = len(positions)
            if not Q:
                continue
            positive = [d for d in range(len(domains)) if sizes[c, d] > 0]
            period = [positive[i] for i in
                      greedy_reference([sizes[c, d] / Q for d in positive], Q)[0]]
            assert Counter(period) == {d: int(sizes[c, d]) for d in positive}
            before = sum(1 for p in range(e * E) if p % G // S == c)
            phase = (c * S + before - (e * E // G) * S) % Q
            seen = Counter()
            for r, p in enumerate(positions):
                d = period[(phase + r) % Q]
                result[p] = (d, passes[c, d][seen[d]])
                seen[d] += 1
    return [result[t] for t in range(stop)]
