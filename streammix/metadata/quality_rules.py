"""Soft versions of the Gopher, C4 and FineWeb filter rules, combined into one score.

A filtering rule accepts a document when a signal ``x`` lies in ``[low, high]``. Instead of
dropping the document, each rule contributes a penalty that grows linearly with the distance
outside that range, measured in units of the rule's ``scale``:

    penalty_k(x) = max(0, low_k - x) / scale_k + max(0, x - high_k) / scale_k
    quality      = exp(-sum_k penalty_k)  =  prod_k exp(-penalty_k)

so a document inside every range scores 1, a document just past one threshold scores a
little below 1, and each further ``scale`` of excess multiplies the score by ``1/e``. The
score is continuous in every signal and lies in ``(0, 1]`` (float32 rounds to 0 only past a
total penalty of about 100). The thresholds are the published ones (Gopher table A1,
FineWeb's quality filter); C4's hard "drop the document" rules (``lorem ipsum``, curly
braces, ``javascript`` lines) become rules with ``high = 0``. ``scale`` says how much excess
costs a factor ``e``; it is a judgement call, listed in :data:`DEFAULT_RULES`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, kw_only=True)
class QualityRule:
    """Accept ``low <= signal <= high`` (either bound may be None); excess costs ``1/scale``."""

    signal: str
    low: float | None = None
    high: float | None = None
    scale: float

    def __post_init__(self) -> None:
        if self.low is None and self.high is None:
            raise ValueError(f"rule on {self.signal!r} needs a low or a high bound")
        if not self.scale > 0:
            raise ValueError(f"rule on {self.signal!r}: scale must be > 0, got {self.scale}")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ValueError(f"rule on {self.signal!r}: low {self.low} > high {self.high}")

    def penalty(self, values: np.ndarray) -> np.ndarray:
        excess = np.zeros_like(values, dtype=np.float64)
        if self.low is not None:
            excess += np.maximum(0.0, self.low - values)
        if self.high is not None:
            excess += np.maximum(0.0, values - self.high)
        return excess / self.scale


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
    QualityRule(signal="gopher_alpha_word_frac", low=0.8, scale=0.1),
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
    QualityRule(signal="fineweb_line_punct_frac", low=0.12, scale=0.1),
    QualityRule(signal="fineweb_short_line_frac", high=0.67, scale=0.2),
    QualityRule(signal="fineweb_dup_line_char_frac", high=0.01, scale=0.1),
    QualityRule(signal="fineweb_newline_word_ratio", high=0.3, scale=0.2),
)


def total_penalty(signals: Mapping[str, np.ndarray], rules: Sequence[QualityRule]) -> np.ndarray:
    """``sum_k penalty_k`` per document (float64). Unknown signal names raise ``KeyError``."""
    if not rules:
        raise ValueError("at least one quality rule is needed")
    penalty = None
    for rule in rules:
        if rule.signal not in signals:
            raise KeyError(f"quality rule refers to unknown signal {rule.signal!r}")
        term = rule.penalty(np.asarray(signals[rule.signal], dtype=np.float64))
        penalty = term if penalty is None else penalty + term
    return penalty


def combine(signals: Mapping[str, np.ndarray], rules: Sequence[QualityRule]) -> np.ndarray:
    """The quality score ``exp(-total_penalty)`` per document, float32 in [0, 1]."""
    return np.exp(-total_penalty(signals, rules)).astype(np.float32)
