"""SampleMix per-sample weights and integer repeat counts for a token budget (DESIGN.md s. 7).

Inputs per sample ``i``: quality ``q_i`` and diversity ``d_i`` (both already normalized to
[0, 1], e.g. by :func:`streammix.metadata.normalize.rank_normalize`), its token count
``t_i`` and its domain. The plan is computed in four steps.

1. **Weights.** ``p_i = alpha * d_i + (1 - alpha) * q_i``; samples with ``t_i = 0`` get
   ``p_i = 0`` (they carry no tokens). ``alpha = 1`` is diversity only, ``alpha = 0``
   quality only.
2. **Expected counts.** ``w_i = lambda * p_i`` with one multiplier ``lambda`` chosen so that
   the expected tokens ``sum_i w_i t_i`` equal the budget ``B``:
   ``lambda = B / sum_j p_j t_j``. This is the brief's ``w = p / sum(p) * N_target`` with
   ``N_target = B / (sum_j p_j t_j / sum_j p_j)``, i.e. the budget divided by the mean
   tokens of a drawn sample when samples are drawn in proportion to ``p``.
3. **Caps** (optional), as water-filling, the closed form of "clip, then redistribute the
   excess proportionally over the uncapped samples until nothing changes":

   * per sample: ``w_i = min(R, lambda * p_i)``, with ``lambda`` solved exactly from the
     sorted break points ``R / p_i`` so that the expected tokens still equal the target;
   * per domain: a domain whose expected tokens exceed ``share * B`` gets its own
     multiplier ``lambda_d`` that brings it to exactly ``share * B``; the remaining budget
     ``B - sum of capped domains`` is spread over the other domains by solving their common
     ``lambda`` again (so their samples grow in proportion to ``p``, up to ``R``). Repeat
     until no uncapped domain exceeds the share.

   When the caps make the budget unreachable (every sample at ``R`` or every domain at its
   share), the plan covers what it can and the report states ``shortfall_tokens``.
4. **Rounding.** ``counts_i = floor(w_i) + e_i`` with ``e_i`` in {0, 1}.

   * ``"systematic"`` (default): inside each domain, samples are visited in order of
     ``(t_i, i)``; with the fractional parts ``f_i``, their running sum ``F`` and one offset
     ``u_d`` in [0, 1) from ``(seed, domain)``, ``e_i = floor(F_i + u_d) - floor(F_{i-1} + u_d)``.
     Each ``e_i`` has expectation ``f_i``; a domain's count is ``floor(sum f + u_d)``,
     within one of its expected count; and because the visit order sorts token counts, a
     domain's planned tokens differ from its expected tokens by less than its longest
     sample (summation by parts: the running error stays in ``(u_d - 1, u_d]``).
   * ``"seeded"``: ``e_i = [uniform(seed, key_i) < f_i]`` with ``key_i`` the sample's key
     (its global index unless ``sample_keys`` is given): independent per sample, unbiased,
     the total is exact only in expectation.

   Caps hold exactly after rounding (``w_i = R`` has no fractional part); a domain's share can
   pass ``share * B`` by the rounding error, less than one sample's tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from streammix.core.rng import PURPOSE_ROUNDING, derive_key, fold_nb, uniform01, uniform01_nb

ROUNDING_MODES = ("systematic", "seeded")
_SYSTEMATIC_STREAM = 0
_SEEDED_STREAM = 1


@dataclass(frozen=True, kw_only=True)
class SampleMixConfig:
    """How to turn SampleMix weights into repeat counts (see the module docstring)."""

    alpha: float = 0.8
    token_budget: int
    max_repeats_per_sample: int | None = None
    max_domain_share: float | None = None
    rounding: str = "systematic"
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {self.alpha}")
        if isinstance(self.token_budget, bool) or not isinstance(
            self.token_budget, int | np.integer
        ):
            raise TypeError(f"token_budget must be an integer, got {self.token_budget!r}")
        if self.token_budget <= 0:
            raise ValueError(f"token_budget must be > 0, got {self.token_budget}")
        if self.max_repeats_per_sample is not None and self.max_repeats_per_sample < 1:
            raise ValueError(
                f"max_repeats_per_sample must be >= 1, got {self.max_repeats_per_sample}"
            )
        if self.max_domain_share is not None and not 0.0 < self.max_domain_share <= 1.0:
            raise ValueError(f"max_domain_share must lie in (0, 1], got {self.max_domain_share}")
        if self.rounding not in ROUNDING_MODES:
            raise ValueError(f"rounding must be one of {ROUNDING_MODES}, got {self.rounding!r}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")


@dataclass(frozen=True)
class SampleMixPlan:
    """Repeat count per sample (int32, input order), the domain ids, and a report dict."""

    counts: np.ndarray
    domain_ids: np.ndarray
    report: dict


# ----------------------------------------------------------------------------- inputs


def _as_unit_scores(values, name: str, n: int | None) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    if n is not None and array.shape[0] != n:
        raise ValueError(f"{name} has {array.shape[0]} values, expected {n}")
    if np.isnan(array).any():
        raise ValueError(f"{name} contains NaN")
    if array.size and (array.min() < 0.0 or array.max() > 1.0):
        raise ValueError(f"{name} must be normalized to [0, 1] (use rank_normalize)")
    return array


def _as_nonnegative_ints(values, name: str, n: int) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1 or array.shape[0] != n:
        raise ValueError(f"{name} must be 1-D with {n} values, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{name} must hold integers, got dtype {array.dtype}")
    array = array.astype(np.int64)
    if array.size and array.min() < 0:
        raise ValueError(f"{name} must be >= 0, got a minimum of {array.min()}")
    return array


def samplemix_weights(quality: np.ndarray, diversity: np.ndarray, alpha: float) -> np.ndarray:
    """``p = alpha * diversity + (1 - alpha) * quality`` (float64)."""
    return alpha * np.asarray(diversity, dtype=np.float64) + (1.0 - alpha) * np.asarray(
        quality, dtype=np.float64
    )


# ----------------------------------------------------------------------------- caps


def solve_multiplier(
    weights: np.ndarray, tokens: np.ndarray, target: float, cap: float | None
) -> float:
    """``lambda`` with ``sum_i min(cap, lambda * w_i) * t_i == target`` (``inf`` if unreachable).

    Only samples with ``w_i > 0`` and ``t_i > 0`` take part; ``cap=None`` means no cap.
    """
    active = (weights > 0) & (tokens > 0)
    w = weights[active]
    t = tokens[active].astype(np.float64)
    if w.size == 0 or target <= 0:
        return 0.0 if target <= 0 else float("inf")
    if cap is None:
        return target / float(np.dot(w, t))
    order = np.argsort(cap / w, kind="stable")
    breaks = (cap / w)[order]
    capped_tokens_before = cap * np.concatenate(([0.0], np.cumsum(t[order])[:-1]))
    free_mass_from = np.cumsum((w * t)[order][::-1])[::-1]
    tokens_at_break = capped_tokens_before + breaks * free_mass_from
    reached = np.flatnonzero(tokens_at_break >= target)
    if reached.size == 0:
        return float("inf")
    k = reached[0]
    return float((target - capped_tokens_before[k]) / free_mass_from[k])


def _expected(weights: np.ndarray, multiplier: float, cap: float | None) -> np.ndarray:
    if np.isinf(multiplier):
        return np.where(weights > 0, cap, 0.0)
    values = multiplier * weights
    return values if cap is None else np.minimum(values, cap)


def expected_counts(
    weights: np.ndarray, tokens: np.ndarray, domains: np.ndarray, config: SampleMixConfig
) -> tuple[np.ndarray, set[int]]:
    """Real-valued expected counts after both caps, and the domains held at their share."""
    budget = float(config.token_budget)
    cap = None if config.max_repeats_per_sample is None else float(config.max_repeats_per_sample)
    share_limit = None if config.max_domain_share is None else config.max_domain_share * budget
    expected = np.zeros(weights.shape[0], dtype=np.float64)
    capped: set[int] = set()
    while True:
        free = ~np.isin(domains, list(capped))
        remaining = budget - float(np.dot(expected[~free], tokens[~free]))
        multiplier = solve_multiplier(weights[free], tokens[free], remaining, cap)
        expected[free] = _expected(weights[free], multiplier, cap)
        if share_limit is None:
            return expected, capped
        domain_tokens = np.bincount(domains[free], weights=expected[free] * tokens[free])
        over = [d for d in np.flatnonzero(domain_tokens > share_limit * (1 + 1e-12))]
        if not over:
            return expected, capped
        for d in over:
            members = domains == d
            d_multiplier = solve_multiplier(weights[members], tokens[members], share_limit, cap)
            expected[members] = _expected(weights[members], d_multiplier, cap)
            capped.add(int(d))


# ----------------------------------------------------------------------------- rounding


def systematic_round(
    expected: np.ndarray, tokens: np.ndarray, domains: np.ndarray, seed: int
) -> np.ndarray:
    """Floor plus systematic rounding of the fractions, per domain in ``(tokens, index)`` order."""
    whole = np.floor(expected)
    fraction = expected - whole
    extra = np.zeros(expected.shape[0], dtype=np.int64)
    order = np.lexsort((np.arange(expected.shape[0]), tokens, domains))
    sorted_domains = domains[order]
    starts = np.flatnonzero(np.r_[True, sorted_domains[1:] != sorted_domains[:-1]])
    ends = np.r_[starts[1:], order.shape[0]]
    for start, end in zip(starts, ends):
        members = order[start:end]
        domain = int(sorted_domains[start])
        offset = uniform01(derive_key(seed, PURPOSE_ROUNDING, _SYSTEMATIC_STREAM, domain))
        running = np.floor(np.cumsum(fraction[members]) + offset)
        steps = np.diff(running, prepend=np.floor(offset))
        extra[members] = np.clip(steps, 0, 1).astype(np.int64)
    extra[fraction == 0.0] = 0
    return whole.astype(np.int64) + extra


@numba.njit(cache=True)
def _seeded_extra_nb(fraction, keys, stream_key):
    extra = np.zeros(fraction.shape[0], dtype=np.int64)
    for i in range(fraction.shape[0]):
        if fraction[i] > 0.0 and uniform01_nb(fold_nb(stream_key, keys[i])) < fraction[i]:
            extra[i] = 1
    return extra


def seeded_round(expected: np.ndarray, keys: np.ndarray, seed: int) -> np.ndarray:
    """Floor plus one with probability equal to the fraction, decided by ``(seed, key_i)``."""
    whole = np.floor(expected)
    stream_key = np.uint64(derive_key(seed, PURPOSE_ROUNDING, _SEEDED_STREAM))
    extra = _seeded_extra_nb(expected - whole, keys.astype(np.int64), stream_key)
    return whole.astype(np.int64) + extra


def seeded_round_reference(expected: list[float], keys: list[int], seed: int) -> list[int]:
    """Pure-Python oracle of :func:`seeded_round`."""
    result = []
    for value, key in zip(expected, keys, strict=True):
        whole = int(np.floor(value))
        fraction = value - whole
        draw = uniform01(derive_key(seed, PURPOSE_ROUNDING, _SEEDED_STREAM, key))
        result.append(whole + (1 if fraction > 0 and draw < fraction else 0))
    return result


# ----------------------------------------------------------------------------- plan


def _domain_report(counts, expected, tokens, weights, domains, capped) -> dict[int, dict]:
    planned = counts * tokens
    total_planned = max(int(planned.sum()), 1)
    total_tokens = max(int(tokens.sum()), 1)
    report = {}
    for d in np.unique(domains):
        members = domains == d
        values, frequency = np.unique(counts[members], return_counts=True)
        report[int(d)] = {
            "samples": int(members.sum()),
            "tokens": int(tokens[members].sum()),
            "share_before": float(tokens[members].sum() / total_tokens),
            "weight_mass": float(weights[members].sum()),
            "expected_tokens": float(np.dot(expected[members], tokens[members])),
            "planned_tokens": int(planned[members].sum()),
            "share_after": float(planned[members].sum() / total_planned),
            "samples_never_drawn": int((counts[members] == 0).sum()),
            "repeat_histogram": {int(v): int(f) for v, f in zip(values, frequency)},
            "share_capped": int(d) in capped,
        }
    return report


def samplemix_plan(
    *,
    quality: np.ndarray,
    diversity: np.ndarray,
    num_tokens: np.ndarray,
    domain_ids: np.ndarray,
    config: SampleMixConfig,
    sample_keys: np.ndarray | None = None,
) -> SampleMixPlan:
    """Repeat counts for every sample so that the plan covers ``config.token_budget`` tokens."""
    quality = _as_unit_scores(quality, "quality", None)
    n = quality.shape[0]
    diversity = _as_unit_scores(diversity, "diversity", n)
    tokens = _as_nonnegative_ints(num_tokens, "num_tokens", n)
    domains = _as_nonnegative_ints(domain_ids, "domain_ids", n)
    keys = (
        np.arange(n, dtype=np.int64)
        if sample_keys is None
        else _as_nonnegative_ints(sample_keys, "sample_keys", n)
    )
    weights = np.where(tokens > 0, samplemix_weights(quality, diversity, config.alpha), 0.0)
    if not weights.sum() > 0:
        raise ValueError("every sample has weight 0 (no tokens, or zero quality and diversity)")
    expected, capped = expected_counts(weights, tokens, domains, config)
    if expected.max() >= np.iinfo(np.int32).max:
        raise ValueError("the token budget asks for more than 2**31 repeats of one sample")
    if config.rounding == "systematic":
        counts = systematic_round(expected, tokens, domains, config.seed)
    else:
        counts = seeded_round(expected, keys, config.seed)
    planned_tokens = int(np.dot(counts, tokens))
    report = {
        "alpha": config.alpha,
        "token_budget": int(config.token_budget),
        "rounding": config.rounding,
        "expected_tokens": float(np.dot(expected, tokens)),
        "planned_tokens": planned_tokens,
        "shortfall_tokens": max(0.0, config.token_budget - float(np.dot(expected, tokens))),
        "domains": _domain_report(counts, expected, tokens, weights, domains, capped),
    }
    return SampleMixPlan(counts=counts.astype(np.int32), domain_ids=domains, report=report)
