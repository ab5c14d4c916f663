"""Per-build normalization of raw scores to [0, 1] by rank.

Raw quality scores come from unrelated scorers (a heuristic in (0, 1], a classifier's
probability, a user's column on any scale), and diversity scores from a formula of their
own. SampleMix mixes them linearly, so the build maps each raw score to its rank among all
documents of the build (every domain together):

    normalized(x_i) = (average 0-based rank of x_i) / (n - 1)

Equal values share the average of the ranks they occupy, so the result depends only on the
multiset of values and not on input order; the smallest value maps to 0, the largest to 1,
a single value (or all values equal) to 0.5. NaN has no rank and is rejected; infinities are
ordinary values.
"""

from __future__ import annotations

import numpy as np


def rank_normalize(values: np.ndarray) -> np.ndarray:
    """Average-rank normalization of a 1-D array to float32 in [0, 1] (see module docstring)."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"rank_normalize expects a 1-D array, got shape {array.shape}")
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.number):
        raise TypeError(f"rank_normalize expects numbers, got dtype {array.dtype}")
    n = array.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    as_float = array.astype(np.float64)
    if np.isnan(as_float).any():
        raise ValueError(
            "rank_normalize got NaN values; a score must be a number for every document"
        )
    if n == 1:
        return np.full(1, 0.5, dtype=np.float32)
    order = np.argsort(array, kind="stable")
    sorted_values = array[order]
    starts_group = np.empty(n, dtype=bool)
    starts_group[0] = True
    starts_group[1:] = sorted_values[1:] != sorted_values[:-1]
    group_starts = np.flatnonzero(starts_group)
    group_ends = np.append(group_starts[1:], n)
    group_rank = (group_starts + group_ends - 1) / 2.0
    group_of_sorted = np.cumsum(starts_group) - 1
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = group_rank[group_of_sorted]
    return (ranks / (n - 1)).astype(np.float32)


def rank_normalize_reference(values: list[float]) -> list[float]:
    """Quadratic-time oracle: rank = #smaller + (#equal - 1) / 2."""
    n = len(values)
    if n == 1:
        return [0.5]
    result = []
    for x in values:
        smaller = sum(1 for y in values if y < x)
        equal = sum(1 for y in values if y == x)
        result.append((smaller + (equal - 1) / 2.0) / (n - 1))
    return result
