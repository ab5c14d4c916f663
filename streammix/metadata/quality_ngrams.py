"""Gopher's n-gram repetition statistics for a batch of documents, as one numba kernel.

A document is a sequence of word ids (equal words, equal ids) with the character length of
each word; an n-gram is ``n`` consecutive words and its text is the words joined by single
spaces (``sum of word lengths + n - 1`` characters). Both statistics are divided by the
character length of the whole document.

* ``top n-gram character fraction`` (n = 2, 3, 4): take the most frequent n-gram (ties go to
  the one that occurs first), multiply its count by its length.
* ``duplicate n-gram character fraction`` (n = 5 .. 10): an occurrence of an n-gram that
  already occurred earlier in the document is a duplicate; a word is *covered* when it lies
  inside at least one duplicate occurrence. The numerator is the text length of the covered
  words, each maximal run of covered words counted as its words joined by spaces, so a
  character inside several overlapping duplicates is counted once (as the Gopher paper asks).

The kernel hashes each n-gram incrementally (``h_n = mix64(h_{n-1} ^ id)``) into an
open-addressing table and confirms every hash match by comparing the word ids, so the result
is exact. ``ngram_repetition_reference`` computes the same numbers with Python tuples and
dictionaries; tests use it as the oracle.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain

import numba
import numpy as np

from streammix.core.rng import fold_nb, mix64_nb

TOP_NGRAM_SIZES = (2, 3, 4)
DUPLICATE_NGRAM_SIZES = (5, 6, 7, 8, 9, 10)


# ------------------------------------------------------------------ reference (oracle)


def _ngram_length(lengths: Sequence[int], start: int, n: int) -> int:
    return sum(lengths[start : start + n]) + n - 1


def top_ngram_chars_reference(ids: Sequence[int], lengths: Sequence[int], n: int) -> int:
    grams = [tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)]
    if not grams:
        return 0
    counts: dict[tuple[int, ...], int] = {}
    first: dict[tuple[int, ...], int] = {}
    for i, gram in enumerate(grams):
        counts[gram] = counts.get(gram, 0) + 1
        first.setdefault(gram, i)
    best = max(counts, key=lambda g: (counts[g], -first[g]))
    return counts[best] * _ngram_length(lengths, first[best], n)


def duplicate_ngram_chars_reference(ids: Sequence[int], lengths: Sequence[int], n: int) -> int:
    seen: set[tuple[int, ...]] = set()
    covered = [False] * len(ids)
    for i in range(len(ids) - n + 1):
        gram = tuple(ids[i : i + n])
        if gram in seen:
            for j in range(i, i + n):
                covered[j] = True
        seen.add(gram)
    chars = 0
    for j, is_covered in enumerate(covered):
        if is_covered:
            chars += lengths[j] + (1 if j > 0 and covered[j - 1] else 0)
    return chars


def ngram_repetition_reference(
    ids: Sequence[int], lengths: Sequence[int], n_chars: int
) -> tuple[list[float], list[float]]:
    """Top and duplicate n-gram character fractions of one document (slow, obvious)."""
    scale = 1.0 / n_chars if n_chars else 0.0
    top = [top_ngram_chars_reference(ids, lengths, n) * scale for n in TOP_NGRAM_SIZES]
    dup = [duplicate_ngram_chars_reference(ids, lengths, n) * scale for n in DUPLICATE_NGRAM_SIZES]
    return top, dup


# ------------------------------------------------------------------ kernel


@numba.njit(cache=True)
def _insert_ngrams(ids, start, m, n, hashes, slots, counts, slot_of, is_repeat):
    """Count the ``m`` n-grams starting at ``start + i``; mark repeats, remember slots."""
    mask = np.uint64(slots.shape[0] - 1)
    slots[:] = -1
    for i in range(m):
        s = np.int64(hashes[i] & mask)
        while True:
            j = slots[s]
            if j < 0:
                slots[s] = i
                counts[s] = 1
                is_repeat[i] = False
                break
            if hashes[j] == hashes[i]:
                same = True
                for k in range(n):
                    if ids[start + j + k] != ids[start + i + k]:
                        same = False
                        break
                if same:
                    counts[s] += 1
                    is_repeat[i] = True
                    break
            s = (s + 1) & np.int64(mask)
        slot_of[i] = s


@numba.njit(cache=True)
def _top_chars(prefix, m, n, counts, slot_of, is_repeat):
    best_count = 0
    best_start = 0
    for i in range(m):
        if not is_repeat[i] and counts[slot_of[i]] > best_count:
            best_count = counts[slot_of[i]]
            best_start = i
    return best_count * (prefix[best_start + n] - prefix[best_start] + n - 1)


@numba.njit(cache=True)
def _covered_chars(lengths, start, length, m, n, is_repeat, cover):
    cover[: length + 1] = 0
    for i in range(m):
        if is_repeat[i]:
            cover[i] += 1
            cover[i + n] -= 1
    chars = 0
    depth = 0
    previous_covered = False
    for j in range(length):
        depth += cover[j]
        if depth > 0:
            chars += lengths[start + j] + (1 if previous_covered else 0)
            previous_covered = True
        else:
            previous_covered = False
    return chars


@numba.njit(cache=True)
def ngram_repetition_nb(ids, lengths, doc_starts, doc_chars, top_sizes, dup_sizes):
    """Kernel: ``(top[n_docs, len(top_sizes)], dup[n_docs, len(dup_sizes)])`` fractions."""
    n_docs = doc_starts.shape[0] - 1
    top = np.zeros((n_docs, top_sizes.shape[0]), dtype=np.float64)
    dup = np.zeros((n_docs, dup_sizes.shape[0]), dtype=np.float64)
    longest = 1
    for d in range(n_docs):
        longest = max(longest, doc_starts[d + 1] - doc_starts[d])
    table_size = 1
    while table_size < 2 * longest:
        table_size *= 2
    slots = np.empty(table_size, dtype=np.int64)
    counts = np.empty(table_size, dtype=np.int64)
    hashes = np.empty(longest, dtype=np.uint64)
    slot_of = np.empty(longest, dtype=np.int64)
    is_repeat = np.empty(longest, dtype=np.bool_)
    cover = np.empty(longest + 1, dtype=np.int64)
    prefix = np.empty(longest + 1, dtype=np.int64)
    max_n = max(top_sizes.max(), dup_sizes.max())
    for d in range(n_docs):
        start = doc_starts[d]
        length = doc_starts[d + 1] - start
        if length == 0 or doc_chars[d] == 0:
            continue
        scale = 1.0 / doc_chars[d]
        prefix[0] = 0
        for j in range(length):
            prefix[j + 1] = prefix[j] + lengths[start + j]
            hashes[j] = mix64_nb(np.uint64(ids[start + j]))
        for n in range(1, max_n + 1):
            m = length - n + 1
            if m <= 0:
                break
            if n > 1:
                for i in range(m):
                    hashes[i] = fold_nb(hashes[i], np.int64(ids[start + i + n - 1]))
            top_col = -1
            dup_col = -1
            for c in range(top_sizes.shape[0]):
                if top_sizes[c] == n:
                    top_col = c
            for c in range(dup_sizes.shape[0]):
                if dup_sizes[c] == n:
                    dup_col = c
            if top_col < 0 and dup_col < 0:
                continue
            _insert_ngrams(ids, start, m, n, hashes, slots, counts, slot_of, is_repeat)
            if top_col >= 0:
                top[d, top_col] = _top_chars(prefix, m, n, counts, slot_of, is_repeat) * scale
            if dup_col >= 0:
                chars = _covered_chars(lengths, start, length, m, n, is_repeat, cover)
                dup[d, dup_col] = chars * scale
    return top, dup


def ngram_repetition(
    doc_ids: Sequence[Sequence[int]], doc_lengths: Sequence[Sequence[int]], doc_chars: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Top (n = 2, 3, 4) and duplicate (n = 5..10) n-gram character fractions of each document.

    ``doc_ids[k]`` and ``doc_lengths[k]`` are document ``k``'s word ids and word lengths,
    ``doc_chars[k]`` its character count. Returns two float64 arrays ``[n_docs, 3]`` and
    ``[n_docs, 6]``.
    """
    counts = np.fromiter(map(len, doc_ids), dtype=np.int64, count=len(doc_ids))
    doc_starts = np.zeros(len(doc_ids) + 1, dtype=np.int64)
    np.cumsum(counts, out=doc_starts[1:])
    total = int(doc_starts[-1])
    ids = np.fromiter(chain.from_iterable(doc_ids), dtype=np.int64, count=total)
    lengths = np.fromiter(chain.from_iterable(doc_lengths), dtype=np.int64, count=total)
    return ngram_repetition_nb(
        ids,
        lengths,
        doc_starts,
        np.asarray(doc_chars, dtype=np.int64),
        np.array(TOP_NGRAM_SIZES, dtype=np.int64),
        np.array(DUPLICATE_NGRAM_SIZES, dtype=np.int64),
    )
