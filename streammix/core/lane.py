"""One lane of the order: a stream of positions drawn by a schedule's interleave.

With ``C = 1`` canonical node the lane *is* the global order; with ``C > 1`` each canonical
slice ``c`` is a lane (:mod:`streammix.core.canonical`) whose positions are the slice's
positions in batch order, whose segments start at ``start / C``, whose cursors are the
segment's ``group_cursors[c]`` and whose draws come from groups ``c`` of the domains.

Lane position ``u`` lies in segment ``i``; the segment's interleave (over its
positive-weight domains, see :mod:`streammix.core.interleave`) is read from relative index
``phase + (u - start_i)``. If ``n_d`` picks of the interleave in ``[phase, phase + u -
start_i)`` went to ``d``, position ``u`` reads element ``cursors_i[d] + n_d`` of the lane's
stream of domain ``d`` (:mod:`streammix.core.passes`). The phase is ``0`` for the global
order and ``c * G / C`` for slice ``c``, so that the ``C`` slices of a batch together read a
contiguous window of ``G`` indices of the interleave (no bursts of small domains).

Reading ``[start, stop)`` needs the interleave state (per-domain counts since relative index
0) at ``start``. The lane remembers the state where the previous call ended, so forward
reads cost ``O(stop - start)``; a backward jump restarts from the start of the segment
containing ``start``. Long jumps use the greedy's exact skip-ahead
(:mod:`streammix.core.greedy_skip`), which finds the state in milliseconds for up to about
24 positive-weight domains and otherwise replays the gap (tens of millions of positions per
second, nothing recorded); the random interleave always replays the gap. Instances are not
thread-safe (they cache state).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numba
import numpy as np

from streammix.core.passes import PassTables
from streammix.core.schedule import Schedule, interleave_counts_at, segment_picks


@numba.njit(cache=True, nogil=True)
def _gather_by_domain_nb(domains, index, per_domain, base, out):
    for i in range(domains.shape[0]):
        out[i] = per_domain[base[domains[i]] + index[i]]


class Lane:
    """``samples(start, stop)`` -> (domain, sample within domain) for lane positions."""

    def __init__(self, *, method: str, seed: int, schedule: Schedule, tables: list[PassTables],
                 phase: int = 0) -> None:  # fmt: skip
        self.method = method
        self.seed = seed
        self.schedule = schedule
        self.tables = tables
        self.phase = phase
        self._bases: dict[int, np.ndarray] = {}
        self._state: tuple[int, int, np.ndarray] | None = None  # (segment, position, counts)
        self._buffers: dict[str, np.ndarray] = {}

    def _base(self, segment_index: int) -> np.ndarray:
        """Interleave counts at relative index ``phase`` of a segment (zeros for phase 0)."""
        base = self._bases.get(segment_index)
        if base is None:
            segment = self.schedule.segments[segment_index]
            base = interleave_counts_at(
                segment.weights, [self.phase], method=self.method, seed=self.seed,
                segment_index=segment_index, lane_start=segment.start,
            )[0]  # fmt: skip
            self._bases[segment_index] = base
        return base

    def _counts_at(self, segment_index: int, position: int) -> np.ndarray:
        """Interleave counts of segment ``segment_index`` before lane ``position``."""
        segment = self.schedule.segments[segment_index]
        from_position, counts = segment.start, self._base(segment_index).copy()
        if self._state is not None:
            state_segment, state_position, state_counts = self._state
            if state_segment == segment_index and state_position <= position:
                from_position, counts = state_position, state_counts.copy()
        _, counts = self._picks(
            segment_index, from_position, counts, position - from_position, record=False
        )
        self._state = (segment_index, position, counts.copy())
        return counts

    def has_state_for(self, segment_index: int, position: int) -> bool:
        """Whether a read at ``position`` can continue from the state this lane holds."""
        return (
            self._state is not None
            and self._state[0] == segment_index
            and (self._state[1] <= position)
        )

    def interleave_state(self, segment_index: int) -> tuple[int, np.ndarray] | None:
        """The ``(relative index, counts)`` this lane holds in a segment, if any."""
        if self._state is None or self._state[0] != segment_index:
            return None
        start = self.schedule.segments[segment_index].start
        return self.phase + self._state[1] - start, self._state[2]

    def seed_state(self, segment_index: int, position: int,
                   known: tuple[int, np.ndarray] | None) -> tuple[int, np.ndarray]:  # fmt: skip
        """Set this lane's state at ``position`` from ``known = (relative index, counts)``, a
        true interleave state of the same segment (another lane's), when it is not later.
        Returns this lane's ``(relative index, counts)``."""
        start = self.schedule.segments[segment_index].start
        rel = self.phase + position - start
        if known is None or known[0] > rel:
            return rel, self._counts_at(segment_index, position)
        _, counts = segment_picks(
            self.schedule.segments[segment_index].weights, method=self.method, seed=self.seed,
            segment_index=segment_index, segment_start=start, rel_start=known[0],
            counts=known[1], n=rel - known[0], record=False,
        )  # fmt: skip
        self._state = (segment_index, position, counts.copy())
        return rel, counts

    def _picks(self, segment_index: int, position: int, counts: np.ndarray, n: int,
               record: bool, **options):  # fmt: skip
        segment = self.schedule.segments[segment_index]
        return segment_picks(
            segment.weights, method=self.method, seed=self.seed,
            segment_index=segment_index, segment_start=segment.start,
            rel_start=self.phase + position - segment.start, counts=counts, n=n, record=record,
            **options,
        )  # fmt: skip

    def cursors_at(self, position: int) -> np.ndarray:
        """Per-domain stream elements consumed by lane positions ``[0, position)``."""
        index = self.schedule.segment_index_at(position)
        counts = self._counts_at(index, position) - self._base(index)
        return np.asarray(self.schedule.segments[index].cursors, dtype=np.int64) + counts

    def _walk(self, start: int, stop: int, domains: np.ndarray,
              index_out: Callable[[int, int], np.ndarray]) -> Iterator[tuple]:
        """Interleave lane positions ``[start, stop)`` segment by segment into ``domains``;
        yields ``(segment, lo, hi, counts before, counts after, index within segment)``."""
        position = start
        while position < stop:
            index = self.schedule.segment_index_at(position)
            end = self.schedule.segment_end(index)
            end = stop if end is None else min(stop, end)
            counts = self._counts_at(index, position)
            lo, hi = position - start, end - start
            _, new_counts, within = self._picks(
                index, position, counts, end - position, record=True, with_index=True,
                out=domains[lo:hi], index_out=index_out(lo, hi),
            )  # fmt: skip
            yield index, lo, hi, counts, new_counts, within
            self._state = (index, end, new_counts)
            position = end

    def samples(self, start: int, stop: int, out: tuple[np.ndarray, np.ndarray]) -> None:
        """(domain, sample) of lane positions ``[start, stop)`` into ``out`` (int32, int64)."""
        domains, samples = out
        scratch = lambda lo, hi: self._scratch("index", hi - lo)  # noqa: E731
        for index, lo, hi, counts, new_counts, within in self._walk(start, stop, domains,
                                                                    scratch):
            self._samples_of_picks(index, domains[lo:hi], within, counts,
                                   new_counts - counts, samples[lo:hi])  # fmt: skip

    def elements(self, start: int, stop: int, out: tuple[np.ndarray, np.ndarray]) -> None:
        """(domain, element of the domain's stream) of lane positions ``[start, stop)``."""
        domains, elements = out
        for index, lo, hi, _, _, within in self._walk(start, stop, domains,
                                                      lambda lo, hi: elements[lo:hi]):
            first = (np.asarray(self.schedule.segments[index].cursors, dtype=np.int64)
                     - self._base(index))
            elements[lo:hi] = first[domains[lo:hi]] + within

    def _scratch(self, name: str, size: int) -> np.ndarray:
        """A reusable int64 work array of ``size`` (grows, never shrinks)."""
        buffer = self._buffers.get(name)
        if buffer is None or buffer.shape[0] < size:
            buffer = np.empty(size, dtype=np.int64)
            self._buffers[name] = buffer
        return buffer[:size]

    def _samples_of_picks(self, segment_index: int, picks: np.ndarray, sample_index: np.ndarray,
                          counts: np.ndarray, taken: np.ndarray, samples: np.ndarray) -> None:  # fmt: skip
        cursors = np.asarray(self.schedule.segments[segment_index].cursors, dtype=np.int64)
        first = cursors + counts - self._base(segment_index)
        offsets = np.zeros(len(taken) + 1, dtype=np.int64)
        np.cumsum(taken, out=offsets[1:])
        per_domain = self._scratch("per_domain", int(offsets[-1]))
        for d, n in enumerate(taken):
            if n:
                part = per_domain[offsets[d] : offsets[d + 1]]
                self.tables[d].elements_to_samples(int(first[d]), int(n), out=part)
        _gather_by_domain_nb(picks, sample_index, per_domain, offsets[:-1] - counts, samples)
