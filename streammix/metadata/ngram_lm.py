"""A small word n-gram language model with interpolated Kneser-Ney smoothing (numpy only).

CCNet scores web text by its perplexity under a KenLM model trained on a reference corpus
(Wikipedia): text that reads like the reference gets a low perplexity, gibberish,
boilerplate and spam a high one, and the score is continuous, so documents rarely tie.
This module is that idea without KenLM: counts are numpy arrays of integer n-gram keys,
probabilities are looked up with ``np.searchsorted`` for a whole batch of tokens at once.

**Tokens.** :func:`lm_tokens`: the text is lowercased and split into runs of word
characters (``\\w+``) and single other non-space characters (punctuation, symbols). The
vocabulary is every reference token seen at least ``min_count`` times (at most
``max_vocab``, the most frequent first, ties by the token), plus ``<unk>`` (id 0, every
other token) and ``</s>`` (id 1, closes every document); ``<s>`` (id ``V``, the vocabulary
size) pads the start of each document with ``order - 1`` copies and is never predicted.

**Counts.** For the highest order ``n``, ``c(g)`` is the number of occurrences of the
n-gram ``g`` ending at a predicted token. For a lower order ``k < n`` the *continuation*
count ``N1+(. g)`` is the number of distinct tokens ``v`` such that ``v g`` occurs (Kneser
and Ney's observation: a word's unigram probability should reflect how many contexts it
completes, not how often it occurs). Because every document is padded with ``n - 1``
``<s>``, every occurring lower-order n-gram has a left neighbour, so the distinct
``(k+1)``-grams are the suffixes of the distinct n-grams.

**Interpolated Kneser-Ney** (Chen and Goodman 1998, with one discount per order). Let
``a_k(g)`` be the count used at order ``k`` (``c`` at ``n``, ``N1+(. g)`` below), ``h`` the
``k - 1`` previous tokens, ``A_k(h) = sum_w a_k(h w)`` and ``T_k(h) = |{w: a_k(h w) > 0}|``:

    P_0(w)       = 1 / V                                         (uniform over the vocabulary)
    P_k(w | h)   = max(a_k(h w) - D_k, 0) / A_k(h) + D_k * T_k(h) / A_k(h) * P_{k-1}(w | h')
                   if A_k(h) > 0, else P_{k-1}(w | h')            (h' = h without its first token)

with ``D_k = n1 / (n1 + 2 n2)`` from the number of n-grams of order ``k`` whose count is 1
and 2 (clipped to [0.05, 0.95]; 0.5 when undefined). For every ``h``, ``P_k(. | h)`` sums to
1 over the ``V`` predictable tokens (``<unk>``, ``</s>`` and the words), which the tests check
against a brute-force count-based reference.

**Score.** :func:`KneserNeyLM.mean_log_prob` is, per document, the mean natural-log
probability of its tokens and ``</s>`` (``-log perplexity``); it is finite for every text.

**Keys.** An n-gram of ids ``t_1 .. t_k`` is the integer ``sum t_j * B**(k-j)`` with
``B = V + 1``; ``B**order`` must stay below ``2**62`` (an error says to lower ``max_vocab``
or the order otherwise). A model is saved and loaded as one ``.npz`` file.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TOKEN_PATTERN = re.compile(r"\w+|[^\w\s]")
UNK, EOS = 0, 1
SPECIALS = ("<unk>", "</s>")
MAX_ORDER = 6
MIN_DISCOUNT, MAX_DISCOUNT, DEFAULT_DISCOUNT = 0.05, 0.95, 0.5


def lm_tokens(text: str) -> list[str]:
    """The tokens of ``text`` as the model sees them (module docstring)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be str, got {type(text).__name__}")
    return TOKEN_PATTERN.findall(text.lower())


def _discount(counts: np.ndarray) -> float:
    n1 = int(np.count_nonzero(counts == 1))
    n2 = int(np.count_nonzero(counts == 2))
    if n1 + 2 * n2 == 0:
        return DEFAULT_DISCOUNT
    return float(min(max(n1 / (n1 + 2 * n2), MIN_DISCOUNT), MAX_DISCOUNT))


def _windows(sequences: Sequence[np.ndarray], order: int, bos: int) -> np.ndarray:
    """``[tokens, order]`` id windows ending at every predicted token (ids, then ``</s>``)."""
    pad = np.full(order - 1, bos, dtype=np.int64)
    rows = []
    for ids in sequences:
        padded = np.concatenate([pad, np.asarray(ids, dtype=np.int64), [EOS]])
        rows.append(np.lib.stride_tricks.sliding_window_view(padded, order))
    if not rows:
        return np.zeros((0, order), dtype=np.int64)
    return np.concatenate(rows)


@dataclass(frozen=True)
class KneserNeyLM:
    """A trained model; build it with :func:`train_kneser_ney` or :meth:`load`."""

    order: int
    vocabulary: tuple[str, ...]  # id -> token; ids 0, 1 are <unk>, </s>
    keys: tuple[np.ndarray, ...]  # per order k = 1..n: sorted n-gram keys (int64)
    counts: tuple[np.ndarray, ...]  # a_k of those keys (int64)
    context_keys: tuple[np.ndarray, ...]  # per order: sorted context keys
    context_totals: tuple[np.ndarray, ...]  # A_k(h)
    context_types: tuple[np.ndarray, ...]  # T_k(h)
    discounts: tuple[float, ...]  # D_k

    @property
    def vocab_size(self) -> int:
        return len(self.vocabulary)

    @property
    def base(self) -> int:
        return len(self.vocabulary) + 1

    def encode(self, text: str) -> np.ndarray:
        """Token ids of ``text`` (unknown tokens -> ``<unk>``; no ``</s>``)."""
        index = self._index()
        return np.fromiter((index.get(t, UNK) for t in lm_tokens(text)), dtype=np.int64, count=-1)

    def _index(self) -> dict[str, int]:
        cached = self.__dict__.get("_index_cache")
        if cached is None:
            cached = {t: i for i, t in enumerate(self.vocabulary) if i >= len(SPECIALS)}
            object.__setattr__(self, "_index_cache", cached)
        return cached

    def window_probs(self, windows: np.ndarray) -> np.ndarray:
        """``P(w | h)`` for rows ``[h_1 .. h_{n-1}, w]`` of token ids (``<s>`` = ``V``)."""
        windows = np.asarray(windows, dtype=np.int64)
        n = self.order
        if windows.ndim != 2 or windows.shape[1] != n:
            raise ValueError(f"windows must have shape (m, {n}), got {windows.shape}")
        if windows.size and (windows.min() < 0 or windows.max() > self.vocab_size):
            raise ValueError(f"token ids must lie in [0, {self.vocab_size}]")
        if np.any(windows[:, -1] == self.vocab_size):
            raise ValueError("<s> is never predicted")
        base = self.base
        prob = np.full(windows.shape[0], 1.0 / self.vocab_size)
        key = np.zeros(windows.shape[0], dtype=np.int64)
        power = 1
        for k in range(1, n + 1):
            key = key + windows[:, n - k] * power  # the last k tokens
            power *= base
            context = key // base
            level = k - 1
            ctx_keys = self.context_keys[level]
            at = np.minimum(np.searchsorted(ctx_keys, context), max(len(ctx_keys) - 1, 0))
            known = (ctx_keys[at] == context) if len(ctx_keys) else np.zeros(len(key), bool)
            total = np.where(known, self.context_totals[level][at] if len(ctx_keys) else 0, 1)
            types = np.where(known, self.context_types[level][at] if len(ctx_keys) else 0, 0)
            gram_keys = self.keys[level]
            where = np.minimum(np.searchsorted(gram_keys, key), max(len(gram_keys) - 1, 0))
            hit = (gram_keys[where] == key) if len(gram_keys) else np.zeros(len(key), bool)
            count = np.where(hit, self.counts[level][where] if len(gram_keys) else 0, 0)
            d = self.discounts[level]
            interpolated = (np.maximum(count - d, 0.0) + d * types * prob) / total
            prob = np.where(known, interpolated, prob)
        return prob

    def mean_log_prob(self, texts: Sequence[str]) -> np.ndarray:
        """Per text: the mean natural-log probability of its tokens and ``</s>`` (float64)."""
        sequences = [self.encode(t) for t in texts]
        windows = _windows(sequences, self.order, self.vocab_size)
        logp = np.log(self.window_probs(windows))
        lengths = np.array([len(s) + 1 for s in sequences], dtype=np.int64)
        starts = np.zeros(len(sequences), dtype=np.int64)
        np.cumsum(lengths[:-1], out=starts[1:])
        if not len(sequences):
            return np.zeros(0)
        return np.add.reduceat(logp, starts) / lengths

    def perplexity(self, texts: Sequence[str]) -> np.ndarray:
        return np.exp(-self.mean_log_prob(texts))

    def save(self, path: str | os.PathLike) -> Path:
        """Write the model as one ``.npz`` (temp name + rename)."""
        path = Path(path)
        arrays: dict[str, np.ndarray] = {
            "order": np.array(self.order),
            "vocabulary": np.array(self.vocabulary, dtype=object).astype(str),
            "discounts": np.array(self.discounts),
        }
        for k in range(self.order):
            arrays[f"keys{k}"] = self.keys[k]
            arrays[f"counts{k}"] = self.counts[k]
            arrays[f"context_keys{k}"] = self.context_keys[k]
            arrays[f"context_totals{k}"] = self.context_totals[k]
            arrays[f"context_types{k}"] = self.context_types[k]
        tmp = path.with_name(f".{path.name}.tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> KneserNeyLM:
        with np.load(path, allow_pickle=False) as data:
            order = int(data["order"])
            return cls(
                order=order,
                vocabulary=tuple(str(t) for t in data["vocabulary"]),
                keys=tuple(data[f"keys{k}"] for k in range(order)),
                counts=tuple(data[f"counts{k}"] for k in range(order)),
                context_keys=tuple(data[f"context_keys{k}"] for k in range(order)),
                context_totals=tuple(data[f"context_totals{k}"] for k in range(order)),
                context_types=tuple(data[f"context_types{k}"] for k in range(order)),
                discounts=tuple(float(d) for d in data["discounts"]),
            )


def _contexts(keys: np.ndarray, counts: np.ndarray, base: int):
    context = keys // base  # sorted, since keys are
    if keys.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    starts = np.flatnonzero(np.r_[True, context[1:] != context[:-1]])
    totals = np.add.reduceat(counts, starts).astype(np.int64)
    types = np.diff(np.r_[starts, keys.size]).astype(np.int64)
    return context[starts], totals, types


def train_kneser_ney(
    texts: Iterable[str], *, order: int = 3, min_count: int = 1, max_vocab: int = 1 << 20
) -> KneserNeyLM:
    """Count the reference ``texts`` and return the interpolated Kneser-Ney model."""
    for name, value, low in (
        ("order", order, 1),
        ("min_count", min_count, 1),
        ("max_vocab", max_vocab, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if order > MAX_ORDER:
        raise ValueError(f"order must be at most {MAX_ORDER}, got {order}")
    token_lists = [lm_tokens(t) for t in texts]
    if not token_lists:
        raise ValueError("the reference set holds no documents")
    frequency = Counter(t for tokens in token_lists for t in tokens)
    kept = sorted(
        (t for t, c in frequency.items() if c >= min_count), key=lambda t: (-frequency[t], t)
    )[:max_vocab]
    vocabulary = SPECIALS + tuple(kept)
    base = len(vocabulary) + 1
    if base**order >= 1 << 62:
        raise ValueError(
            f"a vocabulary of {len(vocabulary)} tokens at order {order} does not fit 62-bit"
            " n-gram keys; lower max_vocab or the order"
        )
    index = {t: i + len(SPECIALS) for i, t in enumerate(kept)}
    sequences = [
        np.array([index.get(t, UNK) for t in tokens], dtype=np.int64) for tokens in token_lists
    ]
    windows = _windows(sequences, order, len(vocabulary))
    top = np.zeros(windows.shape[0], dtype=np.int64)
    for j in range(order):
        top = top * base + windows[:, j]
    level_keys, level_counts = [], []
    keys, counts = np.unique(top, return_counts=True)
    level_keys.append(keys)
    level_counts.append(counts.astype(np.int64))
    for k in range(order - 1, 0, -1):  # continuation counts from the distinct (k+1)-grams
        keys, counts = np.unique(level_keys[-1] % base**k, return_counts=True)
        level_keys.append(keys)
        level_counts.append(counts.astype(np.int64))
    level_keys.reverse()
    level_counts.reverse()
    contexts = [_contexts(k, c, base) for k, c in zip(level_keys, level_counts)]
    return KneserNeyLM(
        order=order,
        vocabulary=vocabulary,
        keys=tuple(level_keys),
        counts=tuple(level_counts),
        context_keys=tuple(c[0] for c in contexts),
        context_totals=tuple(c[1] for c in contexts),
        context_types=tuple(c[2] for c in contexts),
        discounts=tuple(_discount(c) for c in level_counts),
    )
