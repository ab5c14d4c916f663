"""Interleaving: which domain each position of a segment reads from.

**Greedy (default), identical to Megatron-LM's ``build_blending_indices``.** Position ``n``
(counted from the segment start) goes to the domain with the largest error
``weights[d] * max(n, 1.0) - counts[d]`` (float64, the first index wins ties), whose count is
then incremented. No domain ever runs a full sample ahead of ``weights * n``
(``weights * n - counts > -1``, proven in :mod:`streammix.core.greedy_skip`); with two
domains every prefix is within one sample of its target. With three or more domains a
heavy domain can lag by more than one sample while several light ones are each slightly
ahead (at most ``D - 1``; ``tests/core/test_interleave.py`` has a 4-domain example
reaching 1.7): that is Megatron's behaviour, kept for exact equality. The state at
relative index ``n`` is just the per-domain counts so far, so :func:`advance_greedy`
continues from any known ``(n, counts)``.

Megatron's rule can pick a zero-weight domain (at ``n = 1`` every error can be 0 and the
first index wins). :func:`interleave` reproduces that quirk exactly; the global order
(:mod:`streammix.core.order`) interleaves only over the positive-weight domains and maps the
picks back, so a zero-weight domain is never read.

**Random (seeded).** The domain at global position ``t`` of segment ``i`` is the inverse CDF
of ``uniform01(key(seed, PURPOSE_INTERLEAVE, i, t))`` over the weights: independent draws,
so prefixes only match the weights in expectation.
"""

from __future__ import annotations

import numba
import numpy as np

from streammix.core.rng import PURPOSE_INTERLEAVE, derive_key, fold_nb, uniform01, uniform01_nb

INTERLEAVE_METHODS = ("greedy", "random")


def _as_weights(weights) -> np.ndarray:
    array = np.ascontiguousarray(weights, dtype=np.float64)
    if array.ndim != 1 or array.shape[0] == 0:
        raise ValueError(f"weights must be a non-empty 1-D sequence, got shape {array.shape}")
    return array


def _as_counts(counts, num_domains: int) -> np.ndarray:
    array = np.array(counts, dtype=np.int64)
    if array.shape != (num_domains,):
        raise ValueError(f"counts must have {num_domains} entries, got shape {array.shape}")
    return array


def _checked(array: np.ndarray, n: int, dtype) -> np.ndarray:
    if array.shape != (n,) or array.dtype != dtype or not array.flags.c_contiguous:
        raise ValueError(f"output array must be contiguous {np.dtype(dtype)} of length {n}")
    return array


@numba.njit(cache=True, nogil=True)
def _greedy_nb(weights, rel_start, counts, n, labels, out, index_out):
    """``n`` greedy steps from relative index ``rel_start``; updates ``counts`` in place.

    Unless they are empty, writes ``labels[pick]`` to ``out`` and the pick's count before
    the step (its sample index) to ``index_out``. Counts are carried as exact float64
    integers so every error is the same double Megatron computes.
    """
    num_domains = weights.shape[0]
    filled = np.empty(num_domains, dtype=np.float64)
    for d in range(num_domains):
        filled[d] = float(counts[d])
    record = out.shape[0] > 0
    record_index = index_out.shape[0] > 0
    x = float(rel_start)
    for i in range(n):
        t = max(x, 1.0)
        best = 0
        best_error = weights[0] * t - filled[0]
        for d in range(1, num_domains):
            error = weights[d] * t - filled[d]
            better = error > best_error
            best = d if better else best
            best_error = error if better else best_error
        if record:
            out[i] = labels[best]
        if record_index:
            index_out[i] = np.int64(filled[best])
        filled[best] += 1.0
        x += 1.0
    for d in range(num_domains):
        counts[d] = np.int64(filled[d])


@numba.njit(cache=True, nogil=True)
def _sample_index_nb(domains, num_domains, start_counts, out):
    running = start_counts.copy()
    for i in range(domains.shape[0]):
        d = domains[i]
        out[i] = running[d]
        running[d] += 1


def advance_greedy(weights, rel_start: int, counts, n: int,
                   labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Greedy picks for relative indices ``[rel_start, rel_start + n)`` from state ``counts``.

    Returns ``(domains int32 of length n, counts after the n picks)``; pick ``p`` is written
    as ``labels[p]`` (default: ``p`` itself).
    """
    domains, _, new_counts = _advance(weights, rel_start, counts, n, labels, with_index=False)
    return domains, new_counts


def advance_greedy_indexed(weights, rel_start: int, counts, n: int,
                           labels: np.ndarray | None = None, out: np.ndarray | None = None,
                           index_out: np.ndarray | None = None):  # fmt: skip
    """Like :func:`advance_greedy`, plus each pick's sample index (its count before the pick).

    Returns ``(domains int32, sample_index int64, counts after the n picks)``, written into
    ``out`` / ``index_out`` (contiguous, length ``n``) when given.
    """
    return _advance(
        weights, rel_start, counts, n, labels, with_index=True, out=out, index=index_out
    )


def _advance(weights, rel_start, counts, n, labels, *, with_index, out=None, index=None):
    w = _as_weights(weights)
    new_counts = _as_counts(counts, w.shape[0])
    if rel_start < 0 or n < 0:
        raise ValueError(f"rel_start and n must be >= 0, got {rel_start}, {n}")
    labels = np.arange(w.shape[0], dtype=np.int32) if labels is None else labels.astype(np.int32)
    out = np.empty(n, dtype=np.int32) if out is None else _checked(out, n, np.int32)
    if index is None:
        index = np.empty(n if with_index else 0, dtype=np.int64)
    else:
        index = _checked(index, n, np.int64)
    if n:
        _greedy_nb(w, np.int64(rel_start), new_counts, np.int64(n), labels, out, index)
    return out, index, new_counts


def skip_greedy(weights, rel_start: int, counts, n: int) -> np.ndarray:
    """Counts after ``n`` greedy picks from state ``(rel_start, counts)``, without the picks."""
    w = _as_weights(weights)
    new_counts = _as_counts(counts, w.shape[0])
    if rel_start < 0 or n < 0:
        raise ValueError(f"rel_start and n must be >= 0, got {rel_start}, {n}")
    no_output = np.empty(0, dtype=np.int32)
    no_index = np.empty(0, dtype=np.int64)
    _greedy_nb(w, np.int64(rel_start), new_counts, np.int64(n), no_output, no_output, no_index)
    return new_counts


@numba.njit(cache=True, nogil=True)
def _random_nb(cdf, key, first_position, counts, out):
    last = cdf.shape[0] - 1
    for i in range(out.shape[0]):
        u = uniform01_nb(fold_nb(key, first_position + i))
        d = 0
        while d < last and u >= cdf[d]:
            d += 1
        out[i] = d
        counts[d] += 1


@numba.njit(cache=True, nogil=True)
def _random_skip_nb(cdf, key, first_position, counts, n):
    last = cdf.shape[0] - 1
    for i in range(n):
        u = uniform01_nb(fold_nb(key, first_position + i))
        d = 0
        while d < last and u >= cdf[d]:
            d += 1
        counts[d] += 1


def _cdf(weights: np.ndarray) -> np.ndarray:
    if not np.all(weights > 0):
        raise ValueError("the random interleave needs strictly positive weights")
    return np.cumsum(weights / weights.sum())


def advance_random(weights, *, seed: int, segment_index: int, first_position: int, counts,
                   n: int) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Random picks for global positions ``[first_position, first_position + n)``.

    ``weights`` must be strictly positive (callers pass only positive-weight domains).
    """
    w = _as_weights(weights)
    new_counts = _as_counts(counts, w.shape[0])
    key = np.uint64(derive_key(seed, PURPOSE_INTERLEAVE, segment_index))
    out = np.empty(n, dtype=np.int32)
    _random_nb(_cdf(w), key, np.int64(first_position), new_counts, out)
    return out, new_counts


def skip_random(weights, *, seed: int, segment_index: int, first_position: int, counts,
                n: int) -> np.ndarray:  # fmt: skip
    """Counts after the random picks of ``[first_position, first_position + n)``, not recorded."""
    w = _as_weights(weights)
    new_counts = _as_counts(counts, w.shape[0])
    key = np.uint64(derive_key(seed, PURPOSE_INTERLEAVE, segment_index))
    _random_skip_nb(_cdf(w), key, np.int64(first_position), new_counts, np.int64(n))
    return new_counts


def interleave(weights, size: int, *, method: str = "greedy", seed: int | None = None,
               segment_index: int = 0) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """``(domain_index int16, domain_sample_index int64)`` for ``size`` positions.

    With ``method="greedy"`` the output equals Megatron-LM's ``build_blending_indices(
    weights, len(weights), size)`` bit for bit (weights used as given, not normalized).
    ``method="random"`` needs a ``seed`` and strictly positive weights.
    """
    w = _as_weights(weights)
    if size < 0:
        raise ValueError(f"size must be >= 0, got {size}")
    if w.shape[0] > np.iinfo(np.int16).max:
        raise ValueError("at most 32767 domains (the domain index is int16)")
    if not np.all(np.isfinite(w)):
        raise ValueError(f"weights must be finite, got {w.tolist()}")
    zeros = np.zeros(w.shape[0], dtype=np.int64)
    if method == "greedy":
        domains, _ = advance_greedy(w, 0, zeros, size)
    elif method == "random":
        if seed is None:
            raise ValueError("method='random' needs a seed")
        domains, _ = advance_random(
            w, seed=seed, segment_index=segment_index, first_position=0, counts=zeros, n=size
        )
    else:
        raise ValueError(f"method must be one of {INTERLEAVE_METHODS}, got {method!r}")
    sample_index = np.empty(size, dtype=np.int64)
    _sample_index_nb(domains, w.shape[0], zeros, sample_index)
    return domains.astype(np.int16), sample_index


# ----------------------------------------------------------------------------- reference


def greedy_reference(weights, size: int) -> tuple[list[int], list[int]]:
    """Megatron's greedy blending, written out in plain Python (the test oracle)."""
    weights = [float(x) for x in weights]
    counts = [0] * len(weights)
    domains, sample_index = [], []
    for n in range(size):
        x = max(float(n), 1.0)
        errors = [weights[d] * x - counts[d] for d in range(len(weights))]
        best = errors.index(max(errors))
        domains.append(best)
        sample_index.append(counts[best])
        counts[best] += 1
    return domains, sample_index


def random_reference(weights, *, seed: int, segment_index: int, first_position: int,
                     n: int) -> list[int]:  # fmt: skip
    """Inverse-CDF random picks in plain Python (the test oracle)."""
    cdf = list(_cdf(_as_weights(weights)))
    picks = []
    for t in range(first_position, first_position + n):
        u = uniform01(derive_key(seed, PURPOSE_INTERLEAVE, segment_index, t))
        picks.append(next((d for d in range(len(cdf) - 1) if u < cdf[d]), len(cdf) - 1))
    return picks
