"""The global order: the sample that every global position ``t`` of a run reads.

Position ``t`` lies in segment ``i`` of the schedule. The segment's interleave (over its
positive-weight domains, see :mod:`streammix.core.interleave`) assigns ``t`` to domain
``d``; if ``n_d`` earlier positions of the segment went to ``d``, position ``t`` reads
element ``cursors_i[d] + n_d`` of domain ``d``'s stream, which
:mod:`streammix.core.passes` maps to a sample id. Everything is a pure function of
``(seed, layouts, schedule, t)``, hence identical in every process.

Reading ``[start, stop)`` needs the interleave state (per-domain counts since the segment
start) at ``start``. The object remembers the state where the previous call ended, so
forward reads cost ``O(stop - start)``; a backward jump restarts from the start of the
segment containing ``start``. Long jumps use the greedy's exact skip-ahead
(:mod:`streammix.core.greedy_skip`), which finds the state in milliseconds for up to about
24 positive-weight domains and otherwise replays the gap (tens of millions of positions per
second, nothing recorded); the random interleave always replays the gap. Instances are not
thread-safe (they cache state).

The schedule's cursors must have been computed with the same interleave method and seed
as ``config`` (``Schedule.append(..., interleave=config.interleave, seed=config.seed)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numba
import numpy as np

from streammix.core.interleave import INTERLEAVE_METHODS
from streammix.core.passes import DEFAULT_WINDOW_SHARDS, DomainLayout, PassTables
from streammix.core.schedule import Schedule, Segment, segment_picks


@dataclass(frozen=True, kw_only=True)
class OrderConfig:
    """How passes are shuffled and segments interleaved.

    ``window_shards`` (default 4): shards whose samples are shuffled together; a reader's
    working set is about this many shards per domain. Larger mixes better, costs cache.
    ``shuffle`` (default True): False lists every pass in shard order and sample order
    (the interleave still blends the domains).
    """

    seed: int
    window_shards: int = DEFAULT_WINDOW_SHARDS
    interleave: str = "greedy"
    shuffle: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.seed, int | np.integer) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.window_shards < 1:
            raise ValueError(f"window_shards must be >= 1, got {self.window_shards}")
        if not isinstance(self.shuffle, bool):
            raise TypeError(f"shuffle must be a bool, got {self.shuffle!r}")
        if self.interleave not in INTERLEAVE_METHODS:
            raise ValueError(
                f"interleave must be one of {INTERLEAVE_METHODS}, got {self.interleave!r}"
            )


@numba.njit(cache=True, nogil=True)
def _gather_by_domain_nb(domains, index, per_domain, base, out):
    for i in range(domains.shape[0]):
        out[i] = per_domain[base[domains[i]] + index[i]]


def _check_drawable(segments: Sequence[Segment], domains: Sequence[DomainLayout]) -> None:
    for segment in segments:
        for d, (weight, layout) in enumerate(zip(segment.weights, domains)):
            if weight > 0 and layout.pass_size == 0:
                raise ValueError(
                    f"domain {d} has weight {weight} from position {segment.start} but no "
                    "samples (pass_size 0)"
                )


class GlobalOrder:
    """``samples(start, stop)`` -> (domain, sample within domain) for global positions."""

    def __init__(self, *, config: OrderConfig, domains: Sequence[DomainLayout], schedule: Schedule,
                 _tables: list[PassTables] | None = None) -> None:  # fmt: skip
        if len(domains) != schedule.num_domains:
            raise ValueError(
                f"{len(domains)} domain layouts but the schedule has {schedule.num_domains} domains"
            )
        _check_drawable(schedule.segments, domains)
        self.config = config
        self.domains = tuple(domains)
        self.schedule = schedule
        self._tables = _tables or [
            PassTables(layout, seed=config.seed, domain=d, window_shards=config.window_shards,
                       shuffle=config.shuffle)
            for d, layout in enumerate(domains)
        ]
        self._state: tuple[int, int, np.ndarray] | None = None  # (segment, position, counts)
        self._buffers: dict[str, np.ndarray] = {}

    def with_schedule(self, schedule: Schedule) -> GlobalOrder:
        """Same passes (tables shared), new schedule.

        A schedule that extends this one (the usual case: online weights append segments)
        is checked from this one's last segment on, so the cost does not grow with the run.
        """
        old = self.schedule.segments
        if schedule.num_domains != len(self.domains):
            raise ValueError(f"{len(self.domains)} domain layouts but the schedule has "
                             f"{schedule.num_domains} domains")
        # Schedule.append keeps the earlier Segment objects: the one before the last one
        # being the same object means everything before it is unchanged.
        extends = len(schedule.segments) >= len(old) and (
            len(old) < 2 or schedule.segments[len(old) - 2] is old[len(old) - 2])
        order = GlobalOrder.__new__(GlobalOrder)
        _check_drawable(schedule.segments[len(old) - 1:] if extends else schedule.segments,
                        self.domains)
        order.config = self.config
        order.domains = self.domains
        order.schedule = schedule
        order._tables = self._tables
        order._state = None
        order._buffers = {}
        return order

    def _counts_at(self, segment_index: int, position: int) -> np.ndarray:
        """Per-domain picks of segment ``segment_index`` before ``position``."""
        segment = self.schedule.segments[segment_index]
        from_position = segment.start
        counts = np.zeros(self.schedule.num_domains, dtype=np.int64)
        if self._state is not None:
            state_segment, state_position, state_counts = self._state
            if state_segment == segment_index and state_position <= position:
                from_position, counts = state_position, state_counts.copy()
        _, counts = self._picks(
            segment_index, from_position, counts, position - from_position, record=False
        )
        self._state = (segment_index, position, counts.copy())
        return counts

    def _picks(self, segment_index: int, position: int, counts: np.ndarray, n: int,
               record: bool, **options):  # fmt: skip
        segment = self.schedule.segments[segment_index]
        return segment_picks(
            segment.weights, method=self.config.interleave, seed=self.config.seed,
            segment_index=segment_index, segment_start=segment.start,
            rel_start=position - segment.start, counts=counts, n=n, record=record,
            **options,
        )  # fmt: skip

    def cursors_at(self, position: int) -> np.ndarray:
        """Per-domain stream elements consumed by positions ``[0, position)``."""
        index = self.schedule.segment_index_at(position)
        counts = self._counts_at(index, position)
        return np.asarray(self.schedule.segments[index].cursors, dtype=np.int64) + counts

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
        position = start
        while position < stop:
            index = self.schedule.segment_index_at(position)
            end = self.schedule.segment_end(index)
            end = stop if end is None else min(stop, end)
            counts = self._counts_at(index, position)
            lo, hi = position - start, end - start
            _, new_counts, sample_index = self._picks(
                index, position, counts, end - position, record=True, with_index=True,
                out=domains[lo:hi], index_out=self._scratch("index", hi - lo),
            )  # fmt: skip
            self._samples_of_picks(index, domains[lo:hi], sample_index, counts,
                                   new_counts - counts, samples[lo:hi])  # fmt: skip
            self._state = (index, end, new_counts)
            position = end
        return domains, samples

    def _scratch(self, name: str, size: int) -> np.ndarray:
        """A reusable int64 work array of ``size`` (grows, never shrinks)."""
        buffer = self._buffers.get(name)
        if buffer is None or buffer.shape[0] < size:
            buffer = np.empty(size, dtype=np.int64)
            self._buffers[name] = buffer
        return buffer[:size]

    def _samples_of_picks(self, segment_index: int, picks: np.ndarray, sample_index: np.ndarray,
                          counts: np.ndarray, taken: np.ndarray, samples: np.ndarray) -> None:  # fmt: skip
        cursors = self.schedule.segments[segment_index].cursors
        offsets = np.zeros(len(taken) + 1, dtype=np.int64)
        np.cumsum(taken, out=offsets[1:])
        per_domain = self._scratch("per_domain", int(offsets[-1]))
        for d, n in enumerate(taken):
            if n:
                first = cursors[d] + int(counts[d])
                part = per_domain[offsets[d] : offsets[d + 1]]
                self._tables[d].elements_to_samples(first, int(n), out=part)
        _gather_by_domain_nb(picks, sample_index, per_domain, offsets[:-1] - counts, samples)


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
                                             window_shards=config.window_shards,
                                             shuffle=config.shuffle))  # fmt: skip
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
