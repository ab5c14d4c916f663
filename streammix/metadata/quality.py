"""Quality scorers: a batch of documents in, one raw float32 score per document out.

A :class:`Scorer` has a ``name`` and ``score(texts, records) -> ScoreBatch``; ``records`` are
the raw input records (a json object or parquet row as a dict, ``{}`` for plain-text files).
A :class:`ScoreBatch` carries the raw scores (higher is better) and optional extra
per-document columns that the build keeps in the metadata sidecar. Raw scores of different
scorers live on different scales; the build maps them to [0, 1] per build with
:func:`streammix.metadata.normalize.rank_normalize`.

Built in:

* :class:`HeuristicScorer` (``"heuristic"``): the Gopher quality and repetition signals, C4
  line rules and FineWeb extras of :mod:`quality_signals` and :mod:`quality_ngrams`, turned
  into ``exp(-(sum of rule excesses + 0.5 * mean closeness to the bounds))`` by
  :mod:`quality_rules` (continuous: documents that pass every rule are ordered by how far
  inside the ranges they are, in ``[exp(-0.5), 1]``); every signal is also returned as a
  column ``q_<signal>``.
* :class:`NgramScorer` (``"ngram:REF"`` on the build's command line): CCNet's idea, the
  perplexity of the document under a small word n-gram model with interpolated Kneser-Ney
  smoothing (:mod:`ngram_lm`) trained on a reference set the user names (a domain of the
  build, or files), combined with the heuristic rules into one continuous score::

      quality = mean log P_LM(tokens) - sum of soft rule penalties
              = -(log perplexity) + log(heuristic score)

  Both terms are log-scale "badness" (the heuristic score is ``exp(-penalties)``), so the
  sum is the log of ``heuristic / perplexity``: the rules still sink documents they flag,
  and among clean documents, whose heuristic scores differ by at most a factor
  ``exp(0.5)``, the perplexity (which spans several nats) does most of the ordering. The build trains the model once (:mod:`streammix.pipeline.reference_lm`)
  and hands the workers ``"ngram-model:/path/to/model.npz"``. Signal columns:
  ``q_lm_log_prob``, ``q_heuristic`` and the heuristic signals.
* :class:`ColumnScorer` (``"column:FIELD"``): a numeric field already present in the input.
* :class:`CallableScorer` (``"callable:package.module:function"``): a user function
  ``function(texts) -> sequence of floats`` (or a :class:`ScoreBatch`).
* ``"hf:/local/model/dir"``: a local Hugging Face sequence-classification model,
  :class:`streammix.pipeline.hf_quality.HFClassifierScorer` (imported only when asked for,
  since it needs torch).

Scorers are picklable (worker processes of the build receive them): callables and models
are re-resolved from their specification after unpickling.
"""

from __future__ import annotations

import importlib
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from streammix.metadata.ngram_lm import KneserNeyLM
from streammix.metadata.quality_ngrams import (
    DUPLICATE_NGRAM_SIZES,
    TOP_NGRAM_SIZES,
    ngram_repetition,
)
from streammix.metadata.quality_rules import DEFAULT_RULES, QualityRule, combine
from streammix.metadata.quality_signals import TEXT_SIGNALS, text_signal_matrix

SIGNAL_PREFIX = "q_"
NGRAM_SIGNALS = tuple(f"gopher_top_{n}gram_char_frac" for n in TOP_NGRAM_SIZES) + tuple(
    f"gopher_dup_{n}gram_char_frac" for n in DUPLICATE_NGRAM_SIZES
)
HEURISTIC_SIGNALS = TEXT_SIGNALS + NGRAM_SIGNALS


@dataclass(frozen=True)
class ScoreBatch:
    """Raw quality per document (float32, higher is better) and extra sidecar columns."""

    quality: np.ndarray
    signals: dict[str, np.ndarray]


@runtime_checkable
class Scorer(Protocol):
    name: str

    def score(self, texts: Sequence[str], records: Sequence[Mapping[str, Any]]) -> ScoreBatch: ...


def _check_batch(texts: Sequence[str], records: Sequence[Mapping[str, Any]]) -> None:
    if len(texts) != len(records):
        raise ValueError(f"got {len(texts)} texts but {len(records)} records")


def heuristic_signals(texts: Sequence[str]) -> dict[str, np.ndarray]:
    """Every signal of :data:`HEURISTIC_SIGNALS` for each text (float64 arrays)."""
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"text {i} is {type(text).__name__}, expected str")
    rows, words = text_signal_matrix(list(texts))
    top, dup = ngram_repetition(
        [w.ids for w in words], [w.lengths for w in words], [len(t) for t in texts]
    )
    columns = np.concatenate([rows, top, dup], axis=1)
    return {name: columns[:, k] for k, name in enumerate(HEURISTIC_SIGNALS)}


@dataclass(frozen=True, kw_only=True)
class HeuristicScorer:
    """Gopher/C4/FineWeb rules as one continuous score (see :mod:`quality_rules`)."""

    rules: tuple[QualityRule, ...] = DEFAULT_RULES
    keep_signals: bool = True
    name: str = "heuristic"

    def __post_init__(self) -> None:
        unknown = sorted({r.signal for r in self.rules} - set(HEURISTIC_SIGNALS))
        if unknown:
            raise ValueError(
                f"rules refer to unknown signals {unknown}; known: {HEURISTIC_SIGNALS}"
            )
        if not self.rules:
            raise ValueError("HeuristicScorer needs at least one rule")

    def score(self, texts: Sequence[str], records: Sequence[Mapping[str, Any]]) -> ScoreBatch:
        _check_batch(texts, records)
        signals = heuristic_signals(texts)
        quality = combine(signals, self.rules)
        kept = {}
        if self.keep_signals:
            kept = {SIGNAL_PREFIX + k: v.astype(np.float32) for k, v in signals.items()}
        return ScoreBatch(quality=quality, signals=kept)


class NgramScorer:
    """Reference-set perplexity (Kneser-Ney n-grams) plus the heuristic rules (module doc)."""

    def __init__(
        self,
        model_path: str,
        *,
        rules: tuple[QualityRule, ...] = DEFAULT_RULES,
        keep_signals: bool = True,
        name: str = "ngram",
    ) -> None:
        self.heuristic = HeuristicScorer(rules=rules, keep_signals=keep_signals)
        self.model_path = model_path
        self.rules = rules
        self.keep_signals = keep_signals
        self.name = name
        try:
            self.model = KneserNeyLM.load(model_path)
        except (OSError, KeyError, ValueError) as error:
            raise ValueError(f"cannot load the n-gram model {model_path!r}: {error}") from None

    def __reduce__(self):
        return (_rebuild_ngram_scorer, (self.model_path, self.rules, self.keep_signals, self.name))

    def __repr__(self) -> str:
        return f"NgramScorer({self.model_path!r})"

    def score(self, texts: Sequence[str], records: Sequence[Mapping[str, Any]]) -> ScoreBatch:
        batch = self.heuristic.score(texts, records)
        log_prob = self.model.mean_log_prob(texts)
        heuristic = batch.quality.astype(np.float64)
        quality = log_prob + np.log(np.maximum(heuristic, np.finfo(np.float64).tiny))
        signals = dict(batch.signals)
        if self.keep_signals:
            signals[SIGNAL_PREFIX + "lm_log_prob"] = log_prob.astype(np.float32)
            signals[SIGNAL_PREFIX + "heuristic"] = batch.quality.astype(np.float32)
        return ScoreBatch(quality=quality.astype(np.float32), signals=signals)


def _rebuild_ngram_scorer(path: str, rules, keep_signals: bool, name: str) -> NgramScorer:
    return NgramScorer(path, rules=rules, keep_signals=keep_signals, name=name)


def _as_score(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{what} is {value!r} ({type(value).__name__}), not a number")
    result = float(value)
    if math.isnan(result):
        raise ValueError(f"{what} is NaN")
    return result


@dataclass(frozen=True, kw_only=True)
class ColumnScorer:
    """Use a numeric field of the input records as the raw quality."""

    field: str = "score"
    name: str = "column"

    def __post_init__(self) -> None:
        if not self.field:
            raise ValueError("ColumnScorer needs a non-empty field name")

    def score(self, texts: Sequence[str], records: Sequence[Mapping[str, Any]]) -> ScoreBatch:
        _check_batch(texts, records)
        values = np.empty(len(records), dtype=np.float32)
        for i, record in enumerate(records):
            if self.field not in record:
                raise ValueError(f"quality field {self.field!r} is missing in record {i}")
            values[i] = _as_score(record[self.field], f"quality field {self.field!r} in record {i}")
        return ScoreBatch(quality=values, signals={})


def resolve_callable(spec: str) -> Callable[..., Any]:
    """``"package.module:function"`` (the function may be a dotted attribute path)."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute or ":" in attribute:
        raise ValueError(f"callable spec must look like 'package.module:function', got {spec!r}")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(
            f"cannot import module {module_name!r} of scorer {spec!r}: {error}"
        ) from error
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ValueError(
                f"module {module_name!r} has no attribute {attribute!r} (scorer {spec!r})"
            )
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(f"{spec!r} is not callable ({type(target).__name__})")
    return target


class CallableScorer:
    """``function(texts) -> sequence of floats`` (or a ScoreBatch), named ``module:function``."""

    def __init__(self, spec: str, *, name: str = "callable") -> None:
        self.spec = spec
        self.name = name
        self._function = resolve_callable(spec)

    def __reduce__(self):
        return (_rebuild_callable_scorer, (self.spec, self.name))

    def __repr__(self) -> str:
        return f"CallableScorer({self.spec!r})"

    def score(self, texts: Sequence[str], records: Sequence[Mapping[str, Any]]) -> ScoreBatch:
        _check_batch(texts, records)
        result = self._function(list(texts))
        batch = result if isinstance(result, ScoreBatch) else ScoreBatch(quality=result, signals={})
        quality = np.asarray(batch.quality)
        if quality.ndim != 1 or quality.shape[0] != len(texts):
            raise ValueError(
                f"scorer {self.spec!r} returned shape {quality.shape} for {len(texts)} texts"
            )
        if not np.issubdtype(quality.dtype, np.number) or quality.dtype == np.bool_:
            raise ValueError(f"scorer {self.spec!r} returned non-numeric values ({quality.dtype})")
        quality = quality.astype(np.float32)
        if np.isnan(quality).any():
            raise ValueError(f"scorer {self.spec!r} returned NaN for some texts")
        signals = {k: np.asarray(v, dtype=np.float32) for k, v in batch.signals.items()}
        for key, column in signals.items():
            if column.shape != (len(texts),):
                raise ValueError(f"scorer {self.spec!r}: signal {key!r} has shape {column.shape}")
        return ScoreBatch(quality=quality, signals=signals)


def _rebuild_callable_scorer(spec: str, name: str) -> CallableScorer:
    return CallableScorer(spec, name=name)


def make_scorer(spec: str, **options: Any) -> Scorer:
    """Build a scorer from ``"heuristic"``, ``"column:FIELD"``, ``"callable:mod:fn"`` or ``"hf:DIR"``."""
    kind, sep, argument = spec.partition(":")
    if kind == "heuristic" and not sep:
        return HeuristicScorer(**options)
    if kind == "column" and argument:
        return ColumnScorer(field=argument, **options)
    if kind == "callable" and argument:
        return CallableScorer(argument, **options)
    if kind == "ngram-model" and argument:
        return NgramScorer(argument, **options)
    if kind == "ngram" and argument:
        raise ValueError(
            f"{spec!r} names a reference set that streammix-build trains the model on; outside"
            " a build, train one with streammix.metadata.ngram_lm.train_kneser_ney, save it and"
            " use 'ngram-model:/path/to/model.npz'"
        )
    if kind == "hf" and argument:
        hf_quality = importlib.import_module("streammix.pipeline.hf_quality")
        return hf_quality.HFClassifierScorer(argument, **options)
    raise ValueError(
        f"unknown scorer spec {spec!r}; expected 'heuristic', 'ngram:REFERENCE', "
        "'column:FIELD', 'callable:package.module:function' or 'hf:/path/to/model'"
    )
