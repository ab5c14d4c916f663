"""Exact skip-ahead for the greedy interleave: the counts at index ``n`` without replaying ``n``.

The greedy (see :mod:`streammix.core.interleave`) at step ``i`` picks the first argmax of
``a_d(x_i) - c_d`` with ``a_d(x) = fl(w_d * x)`` (the float64 product), ``x_i = max(i, 1)``.
Replaying ``n`` steps costs ``O(n * D)``; this module finds the state ``c(n)`` in time that
does not grow with ``n``, and *verifies* its answer instead of trusting a closed form.

**Lemma (candidate set).** Let ``delta_d(i) = a_d(x_i) - c_d(i)`` and
``eps = 2 * ((|S - 1| + 2**-53 * S) * n / D + 2**-1000)`` with ``S`` the exact sum of the
float64 weights. Then ``delta_d(i) >= -1 - eps`` for every ``d`` and ``i <= n``.
*Proof.* ``delta_d(0) = a_d(1) >= 0``. The ``D`` deltas sum to ``sum_d a_d(x_i) - i``,
which is within ``D * eps / 2`` of 0 (each product is rounded by at most ``2**-53``
relative), so the largest delta is ``>= -eps / 2``. The kernel compares the rounded
differences ``fl(a_d - c_d)``; rounding is monotone and keeps signs, so the domain it picks
has ``delta >= -eps`` (``>= 0`` whenever some delta is ``>= 0``). Picking lowers that delta
by exactly 1 and ``a_d`` never decreases as ``x`` grows, so it stays ``>= -1 - eps``;
deltas of domains not picked never decrease.
*Sharper.* For ``j >= 1``, ``x_{j+1} = x_j + 1`` and ``a_d(x + 1) - a_d(x) >= w_d - u_d``
with ``u_d = 2**-53 * w_d * (2 * n + 1)`` (two roundings), so a domain picked at step ``j``
leaves with ``delta >= w_d - 1 - eps - u_d``; at ``j = 0``, ``delta_d(0) = w_d`` exactly, so it
leaves with exactly ``w_d - 1``; a domain never picked has ``delta >= 0``. Hence
``c_d(n) <= U_d = floor(a_d(x_n) + 1 - w_d + eps + u_d)``, and with ``c_d >= 0`` and
``sum_d c_d = n`` the true state is one of finitely many candidates (few for small ``D``).

**Coalescence.** The greedy step is a deterministic map of the state, so if every
candidate state at ``n0`` reaches the same state after ``m`` steps, that state is the true
``c(n0 + m)``. We start ``m`` steps before the target, enumerate the candidates (as
"deficits" ``U - c``, in a kernel), run them all in lockstep and merge equal ones after
every step (an exact hash-table pass), and accept once one remains. The map collapses
candidates fast: typically a third of them remain after each step and one after 5-20 steps
(up to about ``1 / min(w)`` steps with a very small weight). The cost is therefore about the
number of candidates, ``C(slack + D - 1, D - 1)`` with ``slack = sum(U) - n0``, and the slack
depends on the fractional parts of ``w_d * n0``: we pick the start ``n0`` with the smallest
slack among up to 65,536 points before the target (a float estimate chooses, the exact bounds
follow). At position 1e8 this takes well under a millisecond for a few domains and about
20 ms at 24; past ``MAX_CANDIDATE_ENTRIES`` (from about 30 domains) or when the work would
exceed a plain replay, we replay instead, so the answer is always exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numba
import numpy as np

from streammix.core.interleave import skip_greedy
from streammix.core.rng import mix64_nb

MAX_CANDIDATE_ENTRIES = 1 << 25  # candidates x domains held at once (int32: 128 MiB)
MIN_SKIP = 1 << 16
START_CHOICES = (64, 4096, 1 << 16)  # start points tried, widening while candidates are many
FEW_CANDIDATES = 50_000


@numba.njit(cache=True, nogil=True)
def _run_candidates_nb(weights, rel_start, base, states, n):
    """``n`` greedy steps of every candidate; candidate ``c``'s counts are ``base + states[c]``."""
    num_candidates, num_domains = states.shape
    for c in range(num_candidates):
        for i in range(n):
            x = max(float(rel_start + i), 1.0)
            best = 0
            best_error = weights[0] * x - float(base[0] + states[c, 0])
            for d in range(1, num_domains):
                error = weights[d] * x - float(base[d] + states[c, d])
                if error > best_error:
                    best_error = error
                    best = d
            states[c, best] += 1


@numba.njit(cache=True, nogil=True)
def _enumerate_deficits_nb(caps, total, out):
    """Rows ``b`` with ``0 <= b_d <= caps[d]`` and ``sum(b) == total``, lexicographic; returns
    how many were written (at most ``out.shape[0]``, which the caller sizes as an upper bound)."""
    num_domains = caps.shape[0]
    suffix = np.zeros(num_domains + 1, dtype=np.int64)
    for d in range(num_domains - 1, -1, -1):
        suffix[d] = suffix[d + 1] + caps[d]
    if suffix[0] < total:
        return 0
    b = np.zeros(num_domains, dtype=np.int64)
    remaining = np.zeros(num_domains, dtype=np.int64)
    remaining[0] = total
    b[0] = max(0, total - suffix[1])
    d, rows = 0, 0
    while True:
        while d < num_domains - 1:  # fill the rest with the smallest feasible values
            remaining[d + 1] = remaining[d] - b[d]
            d += 1
            b[d] = max(0, remaining[d] - suffix[d + 1])
        for e in range(num_domains):
            out[rows, e] = b[e]
        rows += 1
        d = num_domains - 2
        while d >= 0 and b[d] >= min(caps[d], remaining[d]):
            d -= 1
        if d < 0:
            return rows
        b[d] += 1


@numba.njit(cache=True, nogil=True)
def _distinct_rows_nb(states):
    """The distinct rows of ``states``, first occurrences in order, compacted in place.

    Open-addressing hash table of row indices; rows are compared in full, so the result is
    exact whatever the hashes do.
    """
    num_rows, num_domains = states.shape
    size = 1
    while size < 2 * num_rows:
        size *= 2
    table = np.full(size, -1, dtype=np.int64)
    kept = 0
    for r in range(num_rows):
        h = np.uint64(num_domains)
        for d in range(num_domains):
            h = h * np.uint64(0x9E3779B97F4A7C15) + np.uint64(states[r, d])
        h = mix64_nb(h)
        slot = np.int64(h & np.uint64(size - 1))
        while True:
            k = table[slot]
            if k < 0:
                table[slot] = kept
                if kept != r:
                    states[kept] = states[r]
                kept += 1
                break
            same = True
            for d in range(num_domains):
                if states[k, d] != states[r, d]:
                    same = False
                    break
            if same:
                break
            slot = (slot + 1) & (size - 1)
    return states[:kept]


def count_upper_bounds(weights: np.ndarray, n: int) -> list[int]:
    """``U_d`` of the lemma: a proven upper bound of the greedy count of domain ``d`` at ``n``."""
    exact_sum = sum(Fraction(float(w)) for w in weights)
    eps = (abs(exact_sum - 1) + Fraction(1, 2**53) * exact_sum) * max(n, 1) / len(weights)
    eps = 2 * (eps + Fraction(1, 2**1000))
    x = max(float(n), 1.0)
    bounds = []
    for w in weights:
        weight = Fraction(float(w))
        rounding = Fraction(2 * max(n, 1) + 1, 2**53) * weight
        bounds.append(math.floor(Fraction(float(w) * x) + 1 - weight + eps + rounding))
    return bounds


@dataclass(frozen=True)
class _Candidates:
    """The lemma's candidate set at ``n``: every ``upper - b`` with ``b >= 0``, ``sum(b) = slack``."""

    n: int
    upper: np.ndarray
    slack: int

    @classmethod
    def at(cls, weights: np.ndarray, n: int) -> _Candidates:
        upper = np.array(count_upper_bounds(weights, n), dtype=np.int64)
        slack = int(upper.sum()) - n
        if slack < 0:
            raise AssertionError("count bounds below n: the lemma's assumptions are violated")
        return cls(n=n, upper=upper, slack=slack)

    @property
    def count_bound(self) -> int:
        """An upper bound of how many candidates there are."""
        return math.comb(self.slack + len(self.upper) - 1, len(self.upper) - 1)

    def deficits(self) -> np.ndarray:
        """Every ``b`` (int32 rows); the candidates are ``upper - b``."""
        out = np.empty((self.count_bound, len(self.upper)), dtype=np.int32)
        caps = np.minimum(self.upper, self.slack)
        rows = _enumerate_deficits_nb(caps, np.int64(self.slack), out)
        return out[:rows]


def _fewest_candidates_lead(weights: np.ndarray, n: int, lead: int, choices: int,
                            longest: int) -> int:  # fmt: skip
    """The lead in ``[lead, lead + choices)`` whose start ``n - lead`` has the smallest slack.

    The slack (hence the number of candidates) depends on the fractional parts of
    ``w_d * n0``; a float estimate is enough to choose, the exact bounds are computed after.
    """
    leads = np.arange(lead, max(lead + 1, min(lead + choices, longest)), dtype=np.int64)
    starts = (n - leads).astype(np.float64)[:, None]
    slack = np.floor(starts * weights[None, :] + 1.0 - weights[None, :]).sum(axis=1) - starts[:, 0]
    return int(leads[np.argmin(slack)])


def candidate_states(weights, n: int, limit: int | None = None) -> np.ndarray | None:
    """Every count vector the lemma allows at ``n`` (rows), or None if more than ``limit``.

    ``limit`` defaults to ``MAX_CANDIDATE_ENTRIES // len(weights)``.
    """
    w = np.ascontiguousarray(weights, dtype=np.float64)
    candidates = _Candidates.at(w, n)
    if candidates.count_bound > (MAX_CANDIDATE_ENTRIES // len(w) if limit is None else limit):
        return None
    return candidates.upper - candidates.deficits().astype(np.int64)


def greedy_counts_at(weights, n: int, *, known: tuple[int, np.ndarray] | None = None) -> np.ndarray:
    """Per-domain greedy counts after ``n`` steps from a segment start (exact).

    ``known = (m, counts)``, a true greedy state at an earlier index ``m <= n``, makes the
    fallback replay start there instead of at 0.
    """
    w = np.ascontiguousarray(weights, dtype=np.float64)
    start, start_counts = (0, np.zeros(w.shape[0], dtype=np.int64)) if known is None else known
    if not 0 <= start <= n:
        raise ValueError(f"known index {start} outside [0, {n}]")
    if n - start < MIN_SKIP or w.shape[0] == 1:
        return skip_greedy(w, start, start_counts, n - start)
    lead = 64
    budget = (n - start) // 2  # candidate-steps: past this, a plain replay is cheaper
    while lead * 4 <= n - start:
        best: _Candidates | None = None
        for choices in START_CHOICES:
            chosen = _fewest_candidates_lead(w, n, lead, choices, longest=(n - start) // 4)
            candidates = _Candidates.at(w, n - chosen)
            if best is None or candidates.count_bound < best.count_bound:
                best = candidates
            if best.count_bound <= FEW_CANDIDATES:
                break
        if best.count_bound > min(MAX_CANDIDATE_ENTRIES // w.shape[0], budget):
            break
        lead = n - best.n
        base = best.upper - best.slack
        states = best.deficits()
        states = np.subtract(best.slack, states, out=states)  # counts = base + states
        done, position = 0, n - lead
        while done < lead and states.shape[0] > 1 and budget > 0:
            step = min(lead - done, max(1, done))
            _run_candidates_nb(w, np.int64(position), base, states, np.int64(step))
            budget -= step * states.shape[0]
            states = _distinct_rows_nb(states)
            done, position = done + step, position + step
        if states.shape[0] == 1:
            return skip_greedy(w, position, base + states[0], n - position)
        if budget <= 0:
            break
        lead *= 8
    return skip_greedy(w, start, start_counts, n - start)
