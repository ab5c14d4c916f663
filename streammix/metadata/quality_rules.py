"""Soft versions of the Gopher, C4 and FineWeb filter rules, combined into one score.

A filtering rule accepts a document when a signal ``x`` lies in ``[low, high]``. Instead of
a pass/fail, each rule measures the document's *margin*, the signed distance from ``x`` to
the nearest bound in units of the rule's ``scale`` (a missing bound is left out)::

    m_k(x) = min(x - low_k, high_k - x) / scale_k        (> 0 inside, < 0 outside)

and contributes two terms:

* the **excess** ``e_k = max(0, -m_k)``: how far outside the range, in scales (0 inside);
* the **closeness** to the bounds, ``c_k in [0, 1]``: 1 on or outside a bound, 0 at the
  rule's best value ``x*_k`` (below), and smooth in between::

      c_k(x) = (exp(-max(m_k, 0)) - exp(-m*_k)) / (1 - exp(-m*_k)),   m*_k = m_k(x*_k)

  (``c_k = 0`` for a rule whose best value lies on its bound, such as C4's ``high = 0``
  rules: there is no inside to measure). A margin of a few scales makes ``c_k`` small.

The score combines them as::

    quality = exp(-(sum_k e_k + delta * mean_k c_k)),      delta = CLOSENESS_WEIGHT = 0.5

so the excess works exactly as before this term existed (each ``scale`` of excess costs a
factor ``e``; documents that fail rules still score low), and the closeness, at most
``delta`` in all, orders the documents that pass: the one further inside every range
(fewer repeated n-grams, more words, more lines ending in punctuation) scores higher.
Every document inside all ranges scores in ``[exp(-delta), 1]``, so failing any rule by
more than ``delta`` scales still puts a document below all of them: what the rules reward
is unchanged, only no longer a tie. (With pass/fail alone, issue 16 measured 26.2% of a
build at exactly 1.0, 61.7% of its ``docs`` domain.) The score is continuous in every
signal, strictly monotonic on each side of a rule's best value, and in ``(0, 1]``.

The best value ``x*`` is where the signal cannot do better: ``best`` if the rule gives it,
else 0 for a rule with only a ``high`` bound (every built-in signal is nonnegative), the
middle of the range for a two-sided rule, and ``+inf`` for a rule with only a ``low``
bound (``c = exp(-m)``). Fractions with a ``low`` bound set ``best = 1``. The thresholds
are the published ones (Gopher table A1, FineWeb's quality filter); C4's hard "drop the
document" rules (``lorem ipsum``, curly braces, ``javascript`` lines) become rules with
``high = 0``. ``scale`` says how much excess costs a factor ``e``; it is a judgement call,
listed in :data:`DEFAULT_RULES`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

CLOSENESS_WEIGHT = 0.5  # delta: the most the closeness term can cost (module docstring)


@dataclass(frozen=True, kw_only=True)
class QualityRule:
    """Accept ``low <= signal <= high`` (either bound may be None), softly: see the module.

    ``scale`` is the unit of the margin and of the excess; ``best`` the signal value where
    the rule is most satisfied (None: 0 with only a high bound, the middle with both, +inf
    with only a low bound).
    """

    signal: str
    low: float | None = None
    high: float | None = None
    scale: float
    best: float | None = None

    def __post_init__(self) -> None:
        if self.low is None and self.high is None:
            raise ValueError(f"rule on {self.signal!r} needs a low or a high bound")
        if not self.scale > 0:
            raise ValueError(f"rule on {self.signal!r}: scale must be > 0, got {self.scale}")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ValueError(f"rule on {self.signal!r}: low {self.low} > high {self.high}")
        best = self.best_value()
        if (self.low is not None and best < self.low) or (
            self.high is not None and best > self.high
        ):
            raise ValueError(f"rule on {self.signal!r}: best {best} lies outside the range")

    def best_value(self) -> float:
        """``x*``: the signal value at which the rule's closeness is 0."""
        if self.best is not None:
            return float(self.best)
        if self.low is None:
            return 0.0
        if self.high is None:
            return float("inf")
        return (self.low + self.high) / 2.0

    def margin(self, values: np.ndarray) -> np.ndarray:
        """Signed distance to the nearest bound in scales (positive inside the range)."""
        values = np.asarray(values, dtype=np.float64)
        margin = np.full(values.shape, np.inf)
        if self.low is not None:
            margin = np.minimum(margin, values - self.low)
        if self.high is not None:
            margin = np.minimum(margin, self.high - values)
        return margin / self.scale

    def penalty(self, values: np.ndarray) -> np.ndarray:
        """The excess ``max(0, -margin)``: scales outside the range (0 inside)."""
        return np.maximum(0.0, -self.margin(values))

    def closeness(self, values: np.ndarray) -> np.ndarray:
        """``c`` in [0, 1]: 1 on or past a bound, 0 at the best value (module docstring)."""
        margin = self.margin(values)
        best_margin = float(self.margin(np.array([self.best_value()]))[0])
        if best_margin <= 0.0:
            return np.zeros(margin.shape)
        floor = math.exp(-best_margin)
        near = np.exp(-np.clip(margin, 0.0, best_margin))
        return (near - floor) / (1.0 - floor)


def _top(n: int, high: float) -> QualityRule:
    return QualityRule(signal=f"gopher_top_{n}gram_char_frac", high=high, scale=0.1)


def _dup(n: int, high: float) -> QualityRule:
    return QualityRule(signal=f"gopher_dup_{n}gram_char_frac", high=high, scale=0.1)


DEFAULT_RULES: tuple[QualityRule, ...] = (
    QualityRule(signal="gopher_word_count", low=50, scale=25),
    QualityRule(signal="gopher_word_count", high=100_000, scale=50_000),
    QualityRule(signal="gopher_mean_word_length", low=3, high=10, scale=1.0),
    QualityRule(signal="gopher_hash_word_ratio", high=0.1, scale=0.1),
    QualityRule(signal="gopher_ellipsis_word_ratio", high=0.1, scale=0.1),
    QualityRule(signal="gopher_bullet_line_frac", high=0.9, scale=0.1),
    QualityRule(signal="gopher_ellipsis_line_frac", high=0.3, scale=0.2),
    QualityRule(signal="gopher_alpha_word_frac", low=0.8, scale=0.1, best=1.0),
    QualityRule(signal="gopher_stop_word_count", low=2, scale=1.0),
    QualityRule(signal="gopher_dup_line_frac", high=0.3, scale=0.2),
    QualityRule(signal="gopher_dup_para_frac", high=0.3, scale=0.2),
    QualityRule(signal="gopher_dup_line_char_frac", high=0.2, scale=0.1),
    QualityRule(signal="gopher_dup_para_char_frac", high=0.2, scale=0.1),
    _top(2, 0.20),
    _top(3, 0.18),
    _top(4, 0.16),
    _dup(5, 0.15),
    _dup(6, 0.14),
    _dup(7, 0.13),
    _dup(8, 0.12),
    _dup(9, 0.11),
    _dup(10, 0.10),
    QualityRule(signal="c4_javascript_line_frac", high=0.0, scale=0.25),
    QualityRule(signal="c4_curly_brace_line_frac", high=0.0, scale=0.5),
    QualityRule(signal="c4_lorem_ipsum_count", high=0.0, scale=1.0),
    QualityRule(signal="fineweb_line_punct_frac", low=0.12, scale=0.1, best=1.0),
    QualityRule(signal="fineweb_short_line_frac", high=0.67, scale=0.2),
    QualityRule(signal="fineweb_dup_line_char_frac", high=0.01, scale=0.1),
    QualityRule(signal="fineweb_newline_word_ratio", high=0.3, scale=0.2),
)


def total_penalty(signals: Mapping[str, np.ndarray], rules: Sequence[QualityRule]) -> np.ndarray:
    """``sum_k e_k + delta * mean_k c_k`` per document (float64; module docstring).

    Unknown signal names raise ``KeyError``.
    """
    if not rules:
        raise ValueError("at least one quality rule is needed")
    excess = None
    closeness = None
    for rule in rules:
        if rule.signal not in signals:
            raise KeyError(f"quality rule refers to unknown signal {rule.signal!r}")
        values = np.asarray(signals[rule.signal], dtype=np.float64)
        excess = rule.penalty(values) if excess is None else excess + rule.penalty(values)
        near = rule.closeness(values)
        closeness = near if closeness is None else closeness + near
    return excess + CLOSENESS_WEIGHT * closeness / len(rules)


def combine(signals: Mapping[str, np.ndarray], rules: Sequence[QualityRule]) -> np.ndarray:
    """The quality score ``exp(-total_penalty)`` per document, float32 in (0, 1]."""
    return np.exp(-total_penalty(signals, rules)).astype(np.float32)
