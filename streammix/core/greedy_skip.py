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
deltas of domains not picked never decrease. Hence
``c_d(n) <= U_d = floor(a_d(x_n) + 1 + eps)``, and with ``c_d >= 0`` and
``sum_d c_d = n`` the true state is one of finitely many candidates (few for small ``D``).

**Coalescence.** The greedy step is a deterministic map of the state, so if every
candidate state at ``n0`` reaches the same state after ``m`` steps, that state is the true
``c(n0 + m)``. We start ``m`` steps before the target, run all candidates in lockstep,
merge equal ones, and accept once one remains. In practice trajectories merge within about
``1 / min(w)`` steps; if the work would exceed a plain replay, we replay instead, so the
answer is always exact and never slower than the replay by more than a constant.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numba
import numpy as np

from streammix.core.interleave import skip_greedy

MAX_CANDIDATES = 20_000
MIN_SKIP = 1 << 16


@numba.njit(cache=True, nogil=True)
def _run_candidates_nb(weights, rel_start, states, n):
    num_candidates, num_domains = states.shape
    for c in range(num_candidates):
        for i in range(n):
            x = max(float(rel_start + i), 1.0)
            best = 0
            best_error = weights[0] * x - float(states[c, 0])
            for d in range(1, num_domains):
                error = weights[d] * x - float(states[c, d])
                if error > best_error:
                    best_error = error
                    best = d
            states[c, best] += 1


def count_upper_bounds(weights: np.ndarray, n: int) -> list[int]:
    """``U_d`` of the lemma: a proven upper bound of the greedy count of domain ``d`` at ``n``."""
    exact_sum = sum(Fraction(float(w)) for w in weights)
    eps = (abs(exact_sum - 1) + Fraction(1, 2**53) * exact_sum) * max(n, 1) / len(weights)
    eps = 2 * (eps + Fraction(1, 2**1000))
    x = max(float(n), 1.0)
    return [math.floor(Fraction(float(w) * x) + 1 + eps) for w in weights]


def candidate_states(weights: np.ndarray, n: int, limit: int = MAX_CANDIDATES) -> np.ndarray | None:
    """Every count vector the lemma allows at ``n`` (rows), or None if more than ``limit``."""
    upper = count_upper_bounds(weights, n)
    slack = sum(upper) - n
    if slack < 0:
        raise AssertionError("count bounds below n: the lemma's assumptions are violated")
    if math.comb(slack + len(upper) - 1, len(upper) - 1) > limit:
        return None
    rows: list[list[int]] = []

    def extend(prefix: list[int], remaining: int) -> None:
        d = len(prefix)
        if d == len(upper) - 1:
            if remaining <= upper[d]:
                rows.append(prefix + [upper[d] - remaining])
            return
        for cut in range(min(remaining, upper[d]) + 1):
            extend(prefix + [upper[d] - cut], remaining - cut)

    extend([], slack)
    return np.array(rows, dtype=np.int64).reshape(len(rows), len(upper))


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
    budget = (n - start) // 2
    while lead * 4 <= n - start:
        states = candidate_states(w, n - lead)
        if states is None:
            break
        done, position = 0, n - lead
        while done < lead and states.shape[0] > 1 and budget > 0:
            step = min(lead - done, max(16, done))
            _run_candidates_nb(w, np.int64(position), states, np.int64(step))
            budget -= step * states.shape[0]
            states = np.unique(states, axis=0)
            done, position = done + step, position + step
        if states.shape[0] == 1:
            return skip_greedy(w, position, states[0], n - position)
        if budget <= 0:
            break
        lead *= 8
    return skip_greedy(w, start, start_counts, n - start)
