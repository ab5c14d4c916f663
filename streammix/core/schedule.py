"""The weight schedule: segments of constant domain weights, with cursors at their starts.

A :class:`Schedule` is an immutable tuple of :class:`Segment` s. Segment ``i`` covers global
positions ``[start_i, start_{i+1})`` (the last one is open-ended) with normalized weights,
and stores ``cursors[d]``: how many elements of domain ``d``'s stream the positions before
``start_i`` consumed. Any position is therefore reachable by replaying at most the one
segment that contains it, never the whole run.

:meth:`Schedule.append` adds a segment: it replays only the last segment from its start to
the new start (with the interleave the run uses) to compute the new cursors. Appending at
the last segment's start replaces that segment's weights. Segment starts should fall on
global-batch boundaries; that is the caller's job, :func:`check_aligned` checks it.

**Canonical nodes.** With ``C > 1`` canonical nodes (:mod:`streammix.core.canonical`) a
segment also stores ``group_cursors[c][d]``: the elements of group ``c`` of domain ``d``
consumed before its start (``cursors`` stays the per-domain total). Slice ``c`` reads
relative indices ``[c * S, c * S + n)`` of the segment's interleave (``S = G / C``), so
``Schedule.append(..., canonical_nodes=C, global_batch_size=G)`` adds, for each slice, the
counts between those two indices (:func:`slice_counts`: two exact skip-aheads per slice).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from streammix.core.greedy_skip import greedy_counts_at
from streammix.core.interleave import (
    INTERLEAVE_METHODS,
    _sample_index_nb,
    advance_greedy_indexed,
    advance_random,
    skip_random,
)


def normalize_weights(weights, num_domains: int | None = None) -> tuple[float, ...]:
    """Validate domain weights and scale them to sum 1 (ValueError on bad input)."""
    try:
        values = [float(x) for x in weights]
    except TypeError as error:
        raise TypeError(f"weights must be a sequence of numbers, got {weights!r}") from error
    if not values:
        raise ValueError("weights must not be empty")
    if num_domains is not None and len(values) != num_domains:
        raise ValueError(f"expected {num_domains} weights, got {len(values)}")
    if any(math.isnan(x) or math.isinf(x) for x in values):
        raise ValueError(f"weights must be finite, got {values}")
    if any(x < 0 for x in values):
        raise ValueError(f"weights must be >= 0, got {values}")
    total = math.fsum(values)
    if total <= 0:
        raise ValueError(f"at least one weight must be positive, got {values}")
    return tuple(x / total for x in values)


@dataclass(frozen=True, kw_only=True)
class Segment:
    """Positions from ``start`` on use ``weights``; ``cursors`` = stream elements used before."""

    start: int
    weights: tuple[float, ...]
    cursors: tuple[int, ...]
    group_cursors: tuple[tuple[int, ...], ...] = ()  # [group][domain]; () when C = 1

    def __post_init__(self) -> None:
        if self.start < 0:
            raise ValueError(f"segment start must be >= 0, got {self.start}")
        if len(self.weights) != len(self.cursors):
            raise ValueError("a segment needs one cursor per weight")
        if any(c < 0 for c in self.cursors):
            raise ValueError(f"cursors must be >= 0, got {self.cursors}")
        for row in self.group_cursors:
            if len(row) != len(self.weights) or any(c < 0 for c in row):
                raise ValueError(f"group_cursors rows need one cursor >= 0 per weight, got {row}")
        if self.group_cursors and [sum(col) for col in zip(*self.group_cursors)] != list(
            self.cursors
        ):
            raise ValueError("group_cursors must sum to cursors over the groups")

    def group_cursors_for(self, num_groups: int) -> tuple[tuple[int, ...], ...]:
        """``group_cursors`` for ``num_groups`` groups (ValueError if recorded for others)."""
        if num_groups == 1:
            return (self.cursors,)
        if len(self.group_cursors) == num_groups:
            return self.group_cursors
        if not self.group_cursors and not any(self.cursors):
            return ((0,) * len(self.cursors),) * num_groups
        raise ValueError(
            f"segment at {self.start} has cursors for {len(self.group_cursors) or 1} canonical "
            f"groups, not {num_groups}: build the schedule with Schedule.append(..., "
            f"canonical_nodes={num_groups}, global_batch_size=G)"
        )


@dataclass(frozen=True)
class Schedule:
    """An immutable, ordered tuple of segments; the first starts at position 0."""

    segments: tuple[Segment, ...]

    def __post_init__(self) -> None:
        if not self.segments:
            raise ValueError("a schedule needs at least one segment")
        if self.segments[0].start != 0:
            raise ValueError("the first segment must start at position 0")
        starts = [s.start for s in self.segments]
        if any(b <= a for a, b in zip(starts, starts[1:])):
            raise ValueError(f"segment starts must increase strictly, got {starts}")
        if len({len(s.weights) for s in self.segments}) != 1:
            raise ValueError("every segment must have the same number of domains")
        object.__setattr__(self, "_starts", starts)

    @property
    def num_domains(self) -> int:
        return len(self.segments[0].weights)

    @classmethod
    def initial(cls, weights) -> Schedule:
        normalized = normalize_weights(weights)
        return cls((Segment(start=0, weights=normalized, cursors=(0,) * len(normalized)),))

    def segment_index_at(self, position: int) -> int:
        if position < 0:
            raise ValueError(f"position must be >= 0, got {position}")
        return bisect.bisect_right(self._starts, position) - 1

    def segment_end(self, index: int) -> int | None:
        """First position after segment ``index`` (None for the last, open-ended one)."""
        return self._starts[index + 1] if index + 1 < len(self._starts) else None

    def append(self, start: int, weights, *, interleave: str = "greedy", seed: int | None = None,
               canonical_nodes: int = 1, global_batch_size: int | None = None) -> Schedule:  # fmt: skip
        """A new schedule whose last segment starts at ``start`` with ``weights``.

        With ``canonical_nodes > 1``, ``global_batch_size`` is required (a multiple of it),
        segment starts must be multiples of it, and per-group cursors are recorded.
        """
        normalized = normalize_weights(weights, self.num_domains)
        last = self.segments[-1]
        if start < last.start:
            raise ValueError(f"new segment start {start} is before the last start {last.start}")
        if start == last.start:
            replaced = Segment(start=start, weights=normalized, cursors=last.cursors,
                               group_cursors=last.group_cursors)  # fmt: skip
            return self._unchecked(self.segments[:-1] + (replaced,), self._starts)
        if interleave not in INTERLEAVE_METHODS:
            raise ValueError(f"interleave must be one of {INTERLEAVE_METHODS}, got {interleave!r}")
        if canonical_nodes != 1:
            segment = self._canonical_segment(start, normalized, interleave, seed,
                                              canonical_nodes, global_batch_size)  # fmt: skip
            return self._extended(segment)
        _, counts = segment_picks(
            last.weights, method=interleave, seed=seed, segment_index=len(self.segments) - 1,
            segment_start=last.start, rel_start=0, counts=np.zeros(self.num_domains, np.int64),
            n=start - last.start, record=False,
        )  # fmt: skip
        cursors = tuple(int(c) + int(n) for c, n in zip(last.cursors, counts))
        return self._extended(Segment(start=start, weights=normalized, cursors=cursors))

    def _canonical_segment(self, start: int, weights: tuple[float, ...], interleave: str,
                           seed: int | None, num_groups: int,
                           global_batch_size: int | None) -> Segment:  # fmt: skip
        slice_size = canonical_slice_size(num_groups, global_batch_size)
        last = self.segments[-1]
        for position in (last.start, start):
            if position % global_batch_size:
                raise ValueError(f"segment start {position} is not a multiple of the global "
                                 f"batch size {global_batch_size} (needed with canonical nodes)")  # fmt: skip
        rows = last.group_cursors_for(num_groups)
        taken = slice_counts(
            last.weights, method=interleave, seed=seed, segment_index=len(self.segments) - 1,
            lane_start=last.start // num_groups, phases=[c * slice_size for c in range(num_groups)],
            n=(start - last.start) // num_groups,
        )  # fmt: skip
        group_cursors = tuple(
            tuple(int(a) + int(b) for a, b in zip(row, counts)) for row, counts in zip(rows, taken)
        )
        cursors = tuple(sum(col) for col in zip(*group_cursors))
        return Segment(start=start, weights=weights, cursors=cursors, group_cursors=group_cursors)

    def _extended(self, segment: Segment) -> Schedule:
        """This schedule plus ``segment`` (start after the last; checked here), without
        validating the earlier segments again, so appending costs the same at any length."""
        return self._unchecked(self.segments + (segment,), self._starts + [segment.start])

    @staticmethod
    def _unchecked(segments: tuple[Segment, ...], starts: list[int]) -> Schedule:
        schedule = object.__new__(Schedule)
        object.__setattr__(schedule, "segments", segments)
        object.__setattr__(schedule, "_starts", starts)
        return schedule

    def to_state(self) -> dict[str, Any]:
        segments = []
        for s in self.segments:
            entry: dict[str, Any] = {"start": s.start, "weights": list(s.weights),
                                     "cursors": list(s.cursors)}  # fmt: skip
            if s.group_cursors:
                entry["group_cursors"] = [list(row) for row in s.group_cursors]
            segments.append(entry)
        return {"segments": segments}

    @classmethod
    def from_state(cls, obj: dict[str, Any]) -> Schedule:
        try:
            segments = tuple(
                Segment(
                    start=int(s["start"]),
                    weights=tuple(float(x) for x in s["weights"]),
                    cursors=tuple(int(c) for c in s["cursors"]),
                    group_cursors=tuple(
                        tuple(int(c) for c in row) for row in s.get("group_cursors", ())
                    ),
                )
                for s in obj["segments"]
            )
        except (KeyError, TypeError) as error:
            raise ValueError(f"not a schedule state: {obj!r}") from error
        for s in segments:
            normalize_weights(s.weights)
        return cls(segments)


def segment_picks(weights, *, method: str, seed: int | None, segment_index: int,
                  segment_start: int, rel_start: int, counts, n: int,
                  record: bool = True, with_index: bool = False, out: np.ndarray | None = None,
                  index_out: np.ndarray | None = None):  # fmt: skip
    """Continue a segment's interleave over its positive-weight domains only.

    ``counts`` (one entry per domain, zero for zero-weight domains) must be the picks the
    interleave made in relative indices ``[0, rel_start)`` of the segment. Returns the
    domains (full indexing, int32) of the next ``n`` positions, or ``None`` when ``record``
    is false, and the counts after them. With ``with_index`` (and ``record``) a third array
    holds each pick's sample index within the segment (the domain's count before it).
    ``out`` / ``index_out`` are optional preallocated outputs for the greedy (length ``n``).
    """
    w = np.ascontiguousarray(weights, dtype=np.float64)
    positive = np.flatnonzero(w > 0)
    if positive.size == 0:
        raise ValueError("a segment needs at least one positive weight")
    full_counts = np.array(counts, dtype=np.int64)
    sub_counts = full_counts[positive]
    sub_weights = np.ascontiguousarray(w[positive])
    domains = picks = index = None
    start_counts = full_counts.copy()
    if method == "greedy":
        if record:
            domains, index, sub_counts = advance_greedy_indexed(
                sub_weights, rel_start, sub_counts, n, labels=positive, out=out, index_out=index_out
            )
        else:
            known = (rel_start, sub_counts)
            sub_counts = greedy_counts_at(sub_weights, rel_start + n, known=known)
    elif method == "random":
        if seed is None:
            raise ValueError("the random interleave needs a seed")
        where = dict(
            seed=seed, segment_index=segment_index, first_position=segment_start + rel_start
        )
        if record:
            picks, sub_counts = advance_random(sub_weights, counts=sub_counts, n=n, **where)
        else:
            sub_counts = skip_random(sub_weights, counts=sub_counts, n=n, **where)
    else:
        raise ValueError(f"interleave must be one of {INTERLEAVE_METHODS}, got {method!r}")
    full_counts[positive] = sub_counts
    if picks is not None:
        domains = positive.astype(np.int32)[picks]
        if out is not None:
            out[:] = domains
            domains = out
    if not (record and with_index):
        return domains, full_counts
    if index is None:
        index = np.empty(n, dtype=np.int64) if index_out is None else index_out
        _sample_index_nb(domains, w.shape[0], start_counts, index)
    return domains, full_counts, index


def canonical_slice_size(canonical_nodes: int, global_batch_size: int | None) -> int:
    """``G / C`` after checking both (ValueError unless ``C >= 1`` divides ``G``)."""
    if not isinstance(canonical_nodes, int | np.integer) or canonical_nodes < 1:
        raise ValueError(f"canonical_nodes must be a positive integer, got {canonical_nodes!r}")
    if global_batch_size is None:
        raise ValueError("canonical nodes need the global batch size (global_batch_size=G)")
    if global_batch_size < 1 or global_batch_size % canonical_nodes:
        raise ValueError(f"canonical_nodes {canonical_nodes} must divide the global batch size "
                         f"{global_batch_size}")  # fmt: skip
    return global_batch_size // canonical_nodes


def interleave_counts_at(weights, points, *, method: str, seed: int | None, segment_index: int,
                         lane_start: int) -> list[np.ndarray]:  # fmt: skip
    """Per-domain picks of a segment's interleave before each relative index in ``points``.

    ``points`` must be non-decreasing; each is reached from the previous one (a short replay
    or the greedy's exact skip-ahead), so the cost does not grow with the indices.
    ``lane_start`` is the segment's first position in the lane (keys the random method).
    """
    counts = np.zeros(len(weights), dtype=np.int64)
    previous, result = 0, []
    for point in points:
        if point < previous:
            raise ValueError("points must be non-decreasing")
        _, counts = segment_picks(weights, method=method, seed=seed, segment_index=segment_index,
                                  segment_start=lane_start, rel_start=previous, counts=counts,
                                  n=point - previous, record=False)  # fmt: skip
        previous = point
        result.append(counts)
    return result


def slice_counts(weights, *, method: str, seed: int | None, segment_index: int, lane_start: int,
                 phases, n: int) -> list[np.ndarray]:  # fmt: skip
    """For each phase ``p``: per-domain picks of relative indices ``[p, p + n)`` of a segment."""
    points = sorted({int(p) for p in phases} | {int(p) + n for p in phases})
    at = dict(zip(points, interleave_counts_at(weights, points, method=method, seed=seed,
                                               segment_index=segment_index,
                                               lane_start=lane_start)))  # fmt: skip
    return [at[int(p) + n] - at[int(p)] for p in phases]


def check_aligned(schedule: Schedule, global_batch_size: int) -> None:
    """Raise ValueError unless every segment starts on a global-batch boundary."""
    if global_batch_size < 1:
        raise ValueError(f"global_batch_size must be >= 1, got {global_batch_size}")
    bad = [s.start for s in schedule.segments if s.start % global_batch_size]
    if bad:
        raise ValueError(
            f"segment starts {bad} are not multiples of the global batch size {global_batch_size}"
        )
