"""The global order: the sample that every global position ``t`` of a run reads.

Position ``t`` lies in segment ``i`` of the schedule. The segment's interleave (over its
positive-weight domains, see :mod:`streammix.core.interleave`) assigns ``t`` to domain
``d``; if ``n_d`` earlier positions of the segment went to ``d``, position ``t`` reads
element ``cursors_i[d] + n_d`` of domain ``d``'s stream, which
:mod:`streammix.core.passes` maps to a sample id. Everything is a pure function of
``(seed, layouts, schedule, t)``, hence identical in every process.

With ``OrderConfig(canonical_nodes=C, global_batch_size=G)`` and ``C > 1``, every global
batch is ``C`` slices of ``G / C`` positions and slice ``c`` reads only the ``c``-th
canonical group of each domain (:mod:`streammix.core.canonical`); with ``C = 1`` (the
default) the order is exactly the one described above.

The mechanics (interleave state, forward reads, skip-ahead on jumps) live in
:class:`~streammix.core.lane.Lane`: the global order is one lane when ``C = 1`` and ``C``
lanes, one per slice, otherwise. Instances are not thread-safe (they cache state).

The schedule's cursors must have been computed with the same interleave method, seed and
canonical nodes as ``config`` (``Schedule.append(..., interleave=config.interleave,
seed=config.seed, canonical_nodes=C, global_batch_size=G)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from streammix.core.canonical import lane_schedules, lane_span, scatter_lane
from streammix.core.exact_epochs import OnePassEpochs
from streammix.core.groups import split_domain
from streammix.core.interleave import INTERLEAVE_METHODS
from streammix.core.lane import Lane
from streammix.core.passes import DEFAULT_WINDOW_SHARDS, DomainLayout, PassTables
from streammix.core.schedule import (
    Schedule,
    Segment,
    canonical_slice_size,
    check_aligned,
)


@dataclass(frozen=True, kw_only=True)
class OrderConfig:
    """How passes are shuffled, segments interleaved and batches split into canonical slices.

    ``window_shards`` (default 4): shards whose samples are shuffled together; a reader's
    working set is about this many shards per domain. Larger mixes better, costs cache.
    ``canonical_nodes`` (default 1): ``C``; with ``C > 1`` ``global_batch_size`` (``G``, a
    multiple of ``C``) is required, and physical node counts must divide ``C``.
    ``shuffle`` (default True): False lists every pass in shard order and sample order
    (the interleave still blends the domains).
    ``one_pass_epochs`` (default False): with ``C > 1``, make every epoch of ``E = sum of
    the pass sizes`` positions exactly one pass of every domain
    (:mod:`streammix.core.exact_epochs`); needs the greedy interleave and a schedule of one
    segment at the natural weights. Ignored with ``C = 1``, where that order already is one
    pass per epoch.
    """

    seed: int
    window_shards: int = DEFAULT_WINDOW_SHARDS
    interleave: str = "greedy"
    canonical_nodes: int = 1
    global_batch_size: int | None = None
    shuffle: bool = True
    one_pass_epochs: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.seed, int | np.integer) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.window_shards < 1:
            raise ValueError(f"window_shards must be >= 1, got {self.window_shards}")
        if self.interleave not in INTERLEAVE_METHODS:
            raise ValueError(
                f"interleave must be one of {INTERLEAVE_METHODS}, got {self.interleave!r}"
            )
        if self.canonical_nodes != 1 or self.global_batch_size is not None:
            canonical_slice_size(self.canonical_nodes, self.global_batch_size)
        if self.one_pass_epochs and self.interleave != "greedy":
            raise ValueError("one_pass_epochs needs the greedy interleave")

    @property
    def uses_one_pass_epochs(self) -> bool:
        """Whether the order is :mod:`streammix.core.exact_epochs`'s (``C > 1`` and asked)."""
        return self.one_pass_epochs and self.canonical_nodes > 1

    @property
    def slice_size(self) -> int:
        """``G / C`` (ValueError when no ``global_batch_size`` was given)."""
        if self.canonical_nodes == 1 and self.global_batch_size is None:
            raise ValueError("slice_size needs global_batch_size")
        return canonical_slice_size(self.canonical_nodes, self.global_batch_size)


def _check_drawable(segments: Sequence[Segment], domains: Sequence[DomainLayout],
                    group_elements: Sequence[Sequence[int]]) -> None:  # fmt: skip
    for segment in segments:
        for d, (weight, layout) in enumerate(zip(segment.weights, domains)):
            if weight > 0 and layout.pass_size == 0:
                raise ValueError(
                    f"domain {d} has weight {weight} from position {segment.start} but no "
                    "samples (pass_size 0)"
                )
            if weight > 0 and min(group_elements[d]) == 0:
                raise ValueError(
                    f"domain {d} has weight {weight} from position {segment.start} but "
                    f"{layout.pass_size} elements cannot fill {len(group_elements[d])} canonical "
                    "groups (some group is empty): use fewer canonical nodes"
                )


def _build_tables(config: OrderConfig, domains: Sequence[DomainLayout]
                  ) -> tuple[list[list[PassTables]], list[tuple[int, ...]]]:  # fmt: skip
    """``tables[c][d]``: the passes of group ``c`` of domain ``d``; and each group's elements."""
    C = config.canonical_nodes
    if C == 1:
        tables = [PassTables(layout, seed=config.seed, domain=d, window_shards=config.window_shards,
                             shuffle=config.shuffle)
                  for d, layout in enumerate(domains)]  # fmt: skip
        return [tables], [(t.pass_size,) for t in tables]
    groups = [split_domain(layout, C) for layout in domains]
    tables = [
        [PassTables(layout, seed=config.seed, domain=d, window_shards=config.window_shards,
                    pieces=groups[d].pieces[c], piece_elements=groups[d].piece_elements[c],
                    group=(c, C), shuffle=config.shuffle)
         for d, layout in enumerate(domains)]
        for c in range(C)
    ]  # fmt: skip
    return tables, [g.elements for g in groups]


def _check_natural(schedule: Schedule, domains: Sequence[DomainLayout]) -> None:
    """ValueError unless the schedule is one segment at the domains' natural weights."""
    sizes = np.array([layout.pass_size for layout in domains], dtype=np.float64)
    if len(schedule.segments) != 1 or sizes.sum() <= 0 or not np.allclose(
            schedule.segments[0].weights, sizes / sizes.sum(), rtol=0, atol=1e-12):
        raise ValueError("one_pass_epochs needs one schedule segment at the natural weights "
                         "(each domain's pass size over their sum)")


class GlobalOrder:
    """``samples(start, stop)`` -> (domain, sample within domain) for global positions."""

    def __init__(self, *, config: OrderConfig, domains: Sequence[DomainLayout], schedule: Schedule,
                 _tables: tuple | None = None) -> None:  # fmt: skip
        if len(domains) != schedule.num_domains:
            raise ValueError(
                f"{len(domains)} domain layouts but the schedule has {schedule.num_domains} domains"
            )
        if config.canonical_nodes > 1:
            check_aligned(schedule, config.global_batch_size)
        self.config = config
        self.domains = tuple(domains)
        self._one_pass: OnePassEpochs | None = None
        if config.uses_one_pass_epochs:
            _check_natural(schedule, domains)
            self._one_pass = OnePassEpochs(
                seed=config.seed, domains=domains, canonical_nodes=config.canonical_nodes,
                global_batch_size=config.global_batch_size, window_shards=config.window_shards,
                shuffle=config.shuffle)
            self._tables, self._group_elements = [], []
            self.schedule = schedule
            self._buffers = None
            return
        self._tables, self._group_elements = _tables or _build_tables(config, domains)
        _check_drawable(schedule.segments, domains, self._group_elements)
        self._set_schedule(schedule, None)

    def _set_schedule(self, schedule: Schedule, previous: GlobalOrder | None) -> None:
        self.schedule = schedule
        config = self.config
        if config.canonical_nodes == 1:
            schedules = [schedule]
        else:
            old = None if previous is None else previous._lane_schedules
            schedules = lane_schedules(schedule, config.canonical_nodes, extends=old)
        self._lane_schedules = schedules
        phase = 0 if config.canonical_nodes == 1 else config.slice_size
        self._lanes = [
            Lane(method=config.interleave, seed=config.seed, schedule=lane_schedule,
                 tables=self._tables[c], phase=c * phase)
            for c, lane_schedule in enumerate(schedules)
        ]  # fmt: skip
        self._buffers: tuple[np.ndarray, np.ndarray] | None = None

    def with_schedule(self, schedule: Schedule) -> GlobalOrder:
        """Same passes (tables shared), new schedule.

        A schedule that extends this one (the usual case: online weights append segments)
        is checked from this one's last segment on, so the cost does not grow with the run.
        """
        if self._one_pass is not None:
            _check_natural(schedule, self.domains)
            order = GlobalOrder.__new__(GlobalOrder)
            order.__dict__.update(self.__dict__)
            order.schedule = schedule
            order._buffers = None
            return order
        old = self.schedule.segments
        if schedule.num_domains != len(self.domains):
            raise ValueError(f"{len(self.domains)} domain layouts but the schedule has "
                             f"{schedule.num_domains} domains")
        # Schedule.append keeps the earlier Segment objects: the one before the last one
        # being the same object means everything before it is unchanged.
        extends = len(schedule.segments) >= len(old) and (
            len(old) < 2 or schedule.segments[len(old) - 2] is old[len(old) - 2])
        new = schedule.segments[len(old) - 1 :] if extends else schedule.segments
        if self.config.canonical_nodes > 1:
            check_aligned(Schedule._unchecked(new, [s.start for s in new]),
                          self.config.global_batch_size)  # fmt: skip
        _check_drawable(new, self.domains, self._group_elements)
        order = GlobalOrder.__new__(GlobalOrder)
        order.config = self.config
        order.domains = self.domains
        order._one_pass = None
        order._tables, order._group_elements = self._tables, self._group_elements
        order._set_schedule(schedule, self if extends else None)
        return order

    def cursors_at(self, position: int) -> np.ndarray:
        """Per-domain stream elements consumed by positions ``[0, position)`` (all groups)."""
        return self.group_cursors_at(position).sum(axis=0)

    def group_cursors_at(self, position: int) -> np.ndarray:
        """``(C, D)``: elements of group ``c`` of domain ``d`` consumed before ``position``."""
        if position < 0:
            raise ValueError(f"position must be >= 0, got {position}")
        if self._one_pass is not None:
            raise ValueError("stream cursors by position are not defined for one-pass epochs "
                             "(every epoch reads groups of its own)")
        C, G = self.config.canonical_nodes, self.config.global_batch_size
        return np.stack([
            lane.cursors_at(position if C == 1 else lane_span(position, position, c, C, G)[0])
            for c, lane in enumerate(self._lanes)
        ])  # fmt: skip

    def samples(self, start: int, stop: int, *,
                out: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """(domain int32, sample index within domain int64) for global positions [start, stop).

        ``out``: optional preallocated ``(int32, int64)`` arrays of length ``stop - start``
        to write into (saves page faults when reading large ranges in chunks).
        """
        if not 0 <= start <= stop:
            raise ValueError(f"need 0 <= start <= stop, got start={start}, stop={stop}")
        if out is None:
            out = (np.empty(stop - start, dtype=np.int32), np.empty(stop - start, dtype=np.int64))
        domains, samples = out
        if domains.shape != (stop - start,) or samples.shape != (stop - start,):
            raise ValueError(f"out arrays must have length {stop - start}")
        if domains.dtype != np.int32 or samples.dtype != np.int64:
            raise ValueError("out arrays must be (int32, int64)")
        C, G = self.config.canonical_nodes, self.config.global_batch_size
        if C == 1:
            self._lanes[0].samples(start, stop, out)
            return domains, samples
        spans = [lane_span(start, stop, c, C, G) for c in range(C)]
        # only the lanes this range reads: a rank reading its node's slices leaves the rest
        if self._one_pass is None:
            self._warm_lanes(start, [c for c, (lo, hi) in enumerate(spans) if hi > lo])
        for c in range(C):
            lo, hi = spans[c]
            if hi == lo:
                continue
            part = self._lane_buffers(hi - lo)
            self._lane_samples(c, lo, hi, part)
            scatter_lane(part, lo, c, C, G, start, out)
        return domains, samples

    def _lane_samples(self, c: int, lo: int, hi: int, out: tuple[np.ndarray, np.ndarray]) -> None:
        if self._one_pass is not None:
            self._one_pass.lane_samples(c, lo, hi, out)
        else:
            self._lanes[c].samples(lo, hi, out)

    def elements(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """(domain int32, element of that domain's stream int64) for positions [start, stop).

        The element index counts the domain's picks since position 0 (a segment's cursor plus
        the picks inside it); domain-pure packing uses it as the domain's block number.
        """
        if not 0 <= start <= stop:
            raise ValueError(f"need 0 <= start <= stop, got start={start}, stop={stop}")
        if self.config.canonical_nodes != 1:
            raise ValueError("stream elements by position need canonical_nodes=1 (packing with "
                             "canonical nodes is not supported yet)")
        out = (np.empty(stop - start, dtype=np.int32), np.empty(stop - start, dtype=np.int64))
        self._lanes[0].elements(start, stop, out)
        return out

    def slice_samples(self, c: int, start: int, stop: int, *,
                      out: tuple[np.ndarray, np.ndarray] | None = None
                      ) -> tuple[int, tuple[np.ndarray, np.ndarray]]:  # fmt: skip
        """Slice ``c``'s part of global positions ``[start, stop)``, in batch order.

        Returns ``(lane_start, (domains, samples))``: the values belong to positions
        ``lane_start, lane_start + 1, ...`` of lane ``c``, i.e. global positions
        ``(u // S) * G + c * S + u % S`` (``S = G / C``; with ``C = 1`` simply ``u``). A node
        reads its slices this way without computing the others; ``out`` as in :meth:`samples`
        (length: the number of slice positions in the range).
        """
        C, G = self.config.canonical_nodes, self.config.global_batch_size
        if not 0 <= c < C:
            raise ValueError(f"slice {c} outside [0, {C})")
        if not 0 <= start <= stop:
            raise ValueError(f"need 0 <= start <= stop, got start={start}, stop={stop}")
        lo, hi = (start, stop) if C == 1 else lane_span(start, stop, c, C, G)
        if C > 1 and self._one_pass is None:
            self._warm_lanes(start, range(c, c + 1))
        if out is None:
            out = (np.empty(hi - lo, dtype=np.int32), np.empty(hi - lo, dtype=np.int64))
        if out[0].shape != (hi - lo,) or out[1].shape != (hi - lo,):
            raise ValueError(f"out arrays must have length {hi - lo}")
        self._lane_samples(c, lo, hi, out)
        return lo, out

    def _warm_lanes(self, start: int, lanes: Sequence[int]) -> None:
        """Lanes that cannot continue their own state at ``start`` start from the nearest
        earlier state any lane holds in the segment (lanes of one read sit within ``2G/C``
        relative indices of each other), so a jump costs one skip-ahead, not one per lane."""
        C, G = self.config.canonical_nodes, self.config.global_batch_size
        index = self.schedule.segment_index_at(start)
        for c in lanes:
            lane = self._lanes[c]
            lo = lane_span(start, start, c, C, G)[0]
            if lane.schedule.segment_index_at(lo) != index or lane.has_state_for(index, lo):
                continue
            rel = lane.phase + lo - lane.schedule.segments[index].start
            known = None
            for other in self._lanes:
                state = other.interleave_state(index)
                if state is not None and state[0] <= rel and (known is None or state[0] > known[0]):
                    known = state
            lane.seed_state(index, lo, known)

    def _lane_buffers(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        if self._buffers is None or self._buffers[0].shape[0] < size:
            self._buffers = (np.empty(size, np.int32), np.empty(size, np.int64))
        return self._buffers[0][:size], self._buffers[1][:size]


def warm_up() -> None:
    """Load the order's numba kernels (from numba's on-disk cache) and numba's CPU target.

    The first kernel call of a process costs about 0.5 s (numba initializes its target and
    loads the cached machine code). A process that calls this before forking (the dataset
    module does at import) hands both to its children: DataLoader workers, or a process
    that builds a dataset and reads one sample, then start in milliseconds.
    """
    layout = DomainLayout(shard_sizes=(2, 1))
    order = GlobalOrder(config=OrderConfig(seed=0), domains=(layout, layout),
                        schedule=Schedule.initial([1.0, 1.0]))
    order.samples(0, 3)


def order_reference(*, config: OrderConfig, domains: Sequence[DomainLayout], schedule: Schedule,
                    stop: int) -> list[tuple[int, int]]:  # fmt: skip
    """Positions ``[0, stop)`` the obvious way: replay every segment, pass by pass."""
    from streammix.core.interleave import greedy_reference, random_reference
    from streammix.core.passes import pass_reference

    streams: list[list[int]] = [[] for _ in domains]

    def element(d: int, e: int) -> int:
        while len(streams[d]) <= e:
            k = len(streams[d]) // domains[d].pass_size
            streams[d].extend(pass_reference(domains[d], seed=config.seed, domain=d, pass_index=k,
                                             window_shards=config.window_shards))  # fmt: skip
        return streams[d][e]

    consumed = [0] * schedule.num_domains
    result: list[tuple[int, int]] = []
    for i, segment in enumerate(schedule.segments):
        end = schedule.segment_end(i)
        length = (stop if end is None else min(end, stop)) - segment.start
        if length <= 0:
            break
        assert list(segment.cursors) == consumed, "schedule cursors disagree with a replay"
        positive = [d for d, w in enumerate(segment.weights) if w > 0]
        weights = [segment.weights[d] for d in positive]
        if config.interleave == "greedy":
            picks = greedy_reference(weights, length)[0]
        else:
            picks = random_reference(weights, seed=config.seed, segment_index=i,
                                     first_position=segment.start, n=length)  # fmt: skip
        for p in picks:
            d = positive[p]
            result.append((d, element(d, consumed[d])))
            consumed[d] += 1
    return result


def canonical_order_reference(*, config: OrderConfig, domains: Sequence[DomainLayout],
                              schedule: Schedule, stop: int) -> list[tuple[int, int]]:  # fmt: skip
    """Positions ``[0, stop)`` with canonical nodes, the obvious way: for every segment and
    slice, write out the interleave from index 0, take indices ``[c*S, c*S + n)``, and read
    group ``c``'s passes element by element (works for ``C = 1`` too)."""
    from streammix.core.groups import split_domain
    from streammix.core.interleave import greedy_reference, random_reference
    from streammix.core.passes import pass_reference

    C, G = config.canonical_nodes, config.global_batch_size or 1
    S = G // C
    groups = [split_domain(layout, C) for layout in domains]
    streams = {(c, d): [] for c in range(C) for d in range(len(domains))}

    def element(c: int, d: int, e: int) -> int:
        stream = streams[c, d]
        size = groups[d].elements[c]
        while len(stream) <= e:
            pieces = list(zip(groups[d].pieces[c][0].tolist(), groups[d].pieces[c][1].tolist()))
            stream.extend(pass_reference(domains[d], seed=config.seed, domain=d,
                                         pass_index=len(stream) // size,
                                         window_shards=config.window_shards, pieces=pieces,
                                         group=(c, C)))  # fmt: skip
        return stream[e]

    consumed = [[0] * len(domains) for _ in range(C)]
    result: dict[int, tuple[int, int]] = {}
    for i, segment in enumerate(schedule.segments):
        end = schedule.segment_end(i)
        length = (stop if end is None else min(end, stop)) - segment.start
        if length <= 0:
            break
        assert [list(r) for r in segment.group_cursors_for(C)] == consumed, "cursors disagree"
        positive = [d for d, w in enumerate(segment.weights) if w > 0]
        weights = [segment.weights[d] for d in positive]
        lane_length = -(-length // G) * S
        for c in range(C):
            if config.interleave == "greedy":
                picks = greedy_reference(weights, c * S + lane_length)[0][c * S :]
            else:
                picks = random_reference(weights, seed=config.seed, segment_index=i,
                                         first_position=segment.start // C + c * S,
                                         n=lane_length)  # fmt: skip
            for n, p in enumerate(picks):
                t = segment.start + (n // S) * G + c * S + n % S
                if t < segment.start + length:
                    d = positive[p]
                    result[t] = (d, element(c, d, consumed[c][d]))
                    consumed[c][d] += 1
    return [result[t] for t in range(stop)]
