"""Domain passes: a domain's endless stream of shuffled samples, computed by random access.

A domain's stream is the concatenation of passes 0, 1, 2, ...; pass ``k`` lists every
*element* of the domain once, where sample ``i`` contributes ``repeat_counts[i]`` elements
(1 each by default; samples with count 0 never appear). Element ``e`` of the stream is
offset ``e % pass_size`` of pass ``e // pass_size``.

Pass ``k`` of domain ``d`` is shuffled with shard locality:

1. shard order: position ``j`` of the pass's shard order holds shard
   ``permute_index(j, S, key(seed, PURPOSE_SHARD_ORDER, d, k))`` (keyed Feistel, O(1) each);
2. consecutive groups of ``window_shards`` shards of that order form windows, listed in
   order; window ``w`` first lists its shards' elements shard by shard (each sample id
   ``repeat_counts[i]`` times), then shuffles that list with a Fisher-Yates pass driven by
   the counter-based RNG: for ``i = n-1 .. 1``, ``r = key(seed, PURPOSE_WINDOW, d, k, w, i)``,
   swap ``i`` with ``j = ((r >> 32) * (i + 1)) >> 32``.

Resampled passes (``DomainLayout(resample=True)``, upstream's ``sampling_method='balanced'``):
the repeat counts are ``q`` or ``q + 1`` and only their total is fixed. Pass ``k`` gives the
extra copy to its own subset of the same size: the samples with the smallest
``mix64(sample ^ key(seed, PURPOSE_RESAMPLE, d, groups, group, k))``, a uniform draw per
pass (with canonical groups, inside each group, whose element total stays fixed). The
pass's counts and shard element totals are recomputed when a reader enters another pass
(``O(samples)`` per pass), so a pass's size, and hence element ``e``'s pass, never change.

Unshuffled passes (``shuffle=False``, upstream's ``shuffle=False``) skip both steps: every
pass lists the shards in index order and each shard's elements in sample order.

An offset maps to its window by a binary search in the pass's window prefix sums (``O(S)``
per pass, cached). The window itself is materialized once and cached (``8 * n_w`` bytes
per domain): Fisher-Yates costs about a nanosecond per element, where a random-access
permutation with cycle walking costs tens of nanoseconds per element, and readers move
through windows in order. Any contiguous range of a pass touches whole windows only, so a
reader's working set of shards is at most ``window_shards`` per window it is in. No memory
grows with the number of samples beyond the caller's repeat counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np

from streammix.core.rng import (
    PURPOSE_GROUP_SHARD_ORDER,
    PURPOSE_GROUP_WINDOW,
    PURPOSE_RESAMPLE,
    PURPOSE_SHARD_ORDER,
    PURPOSE_WINDOW,
    derive_key,
    feistel_half_bits,
    fold_nb,
    mix64,
    mix64_array,
    permute_index_nb,
    permute_index_reference,
)

DEFAULT_WINDOW_SHARDS = 4
_U32 = np.uint64(32)


@dataclass(frozen=True, kw_only=True)
class DomainLayout:
    """Shard structure of one domain: samples per shard and optional repeat counts."""

    shard_sizes: tuple[int, ...]
    repeat_counts: np.ndarray | None = field(default=None, compare=False)
    resample: bool = False  # redraw which samples get the extra copy in every pass

    def __post_init__(self) -> None:
        sizes = tuple(int(s) for s in self.shard_sizes)
        if any(s < 0 for s in sizes):
            raise ValueError(f"shard_sizes must be non-negative, got {sizes}")
        object.__setattr__(self, "shard_sizes", sizes)
        if self.repeat_counts is not None:
            counts = np.asarray(self.repeat_counts)
            if counts.ndim != 1 or not np.issubdtype(counts.dtype, np.integer):
                raise TypeError("repeat_counts must be a 1-D integer array")
            if counts.shape[0] != sum(sizes):
                raise ValueError(
                    f"repeat_counts has {counts.shape[0]} entries, the shards hold {sum(sizes)} samples"
                )
            if counts.size and counts.min() < 0:
                raise ValueError("repeat_counts must be >= 0")
            counts = counts.astype(np.int64)
            counts.setflags(write=False)
            object.__setattr__(self, "repeat_counts", counts)
        if self.resample and (self.repeat_counts is None or (
                self.repeat_counts.size
                and int(self.repeat_counts.max()) - int(self.repeat_counts.min()) > 1)):
            raise ValueError("resample=True needs repeat_counts of q or q + 1 copies each (a "
                             "fractional choose): the extra copies are redrawn per pass")

    @property
    def num_samples(self) -> int:
        return sum(self.shard_sizes)

    @property
    def pass_size(self) -> int:
        """Elements in one pass: the sum of repeat counts (or the number of samples)."""
        if self.repeat_counts is None:
            return self.num_samples
        return int(self.repeat_counts.sum())


class PassTables:
    """Per-domain constant arrays plus a cache of one pass's tables and one window.

    By default the pass covers the whole domain, one unit per shard. With ``pieces``
    (``(starts, stops)``, sample-id ranges of the domain; ``piece_elements``, their elements,
    saves a prefix sum over the domain's repeat counts) it covers only those ranges, each
    range playing the role of a shard: that is a canonical group
    (:mod:`streammix.core.groups`), keyed by ``group = (index, num_groups)``.
    ``piece_copies`` (with ``pieces``; ``-1`` where unset): a piece of one sample listing
    that many of its copies instead of its repeat count, so a range of *elements* can start
    or end inside a sample's copies (the one-pass epochs of :mod:`streammix.core.exact_epochs`).
    """

    def __init__(self, layout: DomainLayout, *, seed: int, domain: int, window_shards: int,
                 pieces: tuple[np.ndarray, np.ndarray] | None = None,
                 piece_elements: np.ndarray | None = None,
                 group: tuple[int, int] = (0, 1), shuffle: bool = True,
                 piece_copies: np.ndarray | None = None) -> None:  # fmt: skip
        if window_shards < 1:
            raise ValueError(f"window_shards must be >= 1, got {window_shards}")
        sizes = np.asarray(layout.shard_sizes, dtype=np.int64)
        self.shard_sample_start = np.zeros(sizes.shape[0] + 1, dtype=np.int64)
        np.cumsum(sizes, out=self.shard_sample_start[1:])
        if pieces is None:
            pieces = (self.shard_sample_start[:-1], self.shard_sample_start[1:])
        self.piece_start = np.ascontiguousarray(pieces[0], dtype=np.int64)
        self.piece_stop = np.ascontiguousarray(pieces[1], dtype=np.int64)
        self.num_shards = self.piece_start.shape[0]
        self.piece_copies = (np.zeros(0, dtype=np.int64) if piece_copies is None
                             else np.ascontiguousarray(piece_copies, dtype=np.int64))
        if self.piece_copies.shape[0] not in (0, self.num_shards) or (
                self.piece_copies.shape[0]
                and ((self.piece_copies >= 0) & (self.piece_stop - self.piece_start != 1)).any()):
            raise ValueError("piece_copies needs one entry per piece, set only on one-sample pieces")
        self.window_shards = int(window_shards)
        self.shuffle = bool(shuffle)
        self.counts = (
            np.zeros(0, dtype=np.int64) if layout.repeat_counts is None else layout.repeat_counts
        )
        if piece_elements is not None:  # computed by the caller (one prefix sum per domain)
            self.shard_elems = np.ascontiguousarray(piece_elements, dtype=np.int64)
        elif layout.repeat_counts is None:
            self.shard_elems = self.piece_stop - self.piece_start
        else:
            ends = np.concatenate(([0], np.cumsum(self.counts)))
            self.shard_elems = ends[self.piece_stop] - ends[self.piece_start]
        if piece_elements is None and self.piece_copies.shape[0]:
            self.shard_elems = np.where(self.piece_copies >= 0, self.piece_copies,
                                        self.shard_elems)
        self.pass_size = int(self.shard_elems.sum())
        index, num_groups = group
        if num_groups == 1:
            self.order_key = np.uint64(derive_key(seed, PURPOSE_SHARD_ORDER, domain))
            self.window_key = np.uint64(derive_key(seed, PURPOSE_WINDOW, domain))
        else:
            parts = (domain, num_groups, index)
            self.order_key = np.uint64(derive_key(seed, PURPOSE_GROUP_SHARD_ORDER, *parts))
            self.window_key = np.uint64(derive_key(seed, PURPOSE_GROUP_WINDOW, *parts))
        num_windows = -(-self.num_shards // self.window_shards)
        self.cache_order = np.zeros(self.num_shards, dtype=np.int64)
        self.cache_prefix = np.zeros(num_windows + 1, dtype=np.int64)
        largest_window = int(np.sort(self.shard_elems)[::-1][: self.window_shards].sum())
        if largest_window >= 1 << 32:
            raise ValueError(f"a window of {largest_window} elements is too large (max 2**32 - 1)")
        self.cache_window = np.zeros(largest_window, dtype=np.int64)
        self.cache_ids = np.array([-1, -1], dtype=np.int64)  # (pass, window) held in the cache
        self.resample = bool(layout.resample) and self.counts.size > 0 and int(
            self.counts.max()) > int(self.counts.min())
        if self.resample and self.piece_copies.shape[0]:
            raise ValueError("piece_copies cannot be combined with resampled passes")
        if self.resample:
            self._init_resample(seed, domain, group)

    def _init_resample(self, seed: int, domain: int, group: tuple[int, int]) -> None:
        lengths = self.piece_stop - self.piece_start
        first = np.concatenate(([0], np.cumsum(lengths)[:-1]))
        self.group_samples = (np.arange(int(lengths.sum()), dtype=np.int64)
                              + np.repeat(self.piece_start - first, lengths))
        self.full_copies = int(self.counts.min())
        self.extra_copies = self.pass_size - self.full_copies * self.group_samples.shape[0]
        self.resample_key = derive_key(seed, PURPOSE_RESAMPLE, domain, group[1], group[0])
        self.counts = self.counts.copy()  # this pass's counts (only the group's are used)
        self.shard_elems = self.shard_elems.copy()
        self.counts_pass = -1
        most = np.minimum((self.full_copies + 1) * lengths, self.full_copies * lengths
                          + self.extra_copies)  # a piece's elements in any pass, at most
        largest_window = min(int(np.sort(most)[::-1][: self.window_shards].sum()),
                             self.pass_size)
        if largest_window >= 1 << 32:
            raise ValueError(f"a window of {largest_window} elements is too large (max 2**32 - 1)")
        self.cache_window = np.zeros(largest_window, dtype=np.int64)

    def _use_pass(self, k: int) -> None:
        """Make ``counts``/``shard_elems`` those of pass ``k`` (resampled passes only)."""
        if k == self.counts_pass:
            return
        self.counts[self.group_samples] = self.full_copies
        self.counts[resampled_extras(self.group_samples, self.extra_copies,
                                     derive_key(self.resample_key, k))] += 1
        ends = np.zeros(self.counts.shape[0] + 1, dtype=np.int64)
        np.cumsum(self.counts, out=ends[1:])
        self.shard_elems[:] = ends[self.piece_stop] - ends[self.piece_start]
        self.cache_ids[:] = -1
        self.counts_pass = k

    def elements_to_samples(self, first_element: int, count: int,
                            out: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
        """Sample ids of stream elements ``[first_element, first_element + count)``.

        Written into ``out`` (int64, length ``count``) when given.
        """
        if first_element < 0 or count < 0:
            raise ValueError(f"first_element and count must be >= 0, got {first_element}, {count}")
        if count > 0 and self.pass_size == 0:
            raise ValueError("domain has no elements (pass_size 0) but samples were requested")
        if out is None:
            out = np.empty(count, dtype=np.int64)
        elif out.shape != (count,) or out.dtype != np.int64:
            raise ValueError(f"out must be an int64 array of length {count}")
        if count and self.resample:
            i = 0
            while i < count:  # pass by pass: each pass has its own counts
                k, offset = divmod(first_element + i, self.pass_size)
                run = min(count - i, self.pass_size - offset)
                self._use_pass(k)
                self._stream_samples(first_element + i, out[i:i + run])
                i += run
        elif count:
            self._stream_samples(first_element, out)
        return out

    def _stream_samples(self, first_element: int, out: np.ndarray) -> None:
        stream_samples_nb(
            np.int64(first_element), np.int64(self.pass_size), self.shard_elems,
            self.piece_start, self.piece_stop, self.counts, np.int64(self.window_shards),
            self.order_key, self.window_key, self.cache_ids, self.cache_order,
            self.cache_prefix, self.cache_window, out, self.shuffle, self.piece_copies,
        )  # fmt: skip


def resampled_extras(samples: np.ndarray, extra: int, key: int) -> np.ndarray:
    """The ``extra`` of ``samples`` (distinct ids) with the smallest ``mix64(sample ^ key)``
    (``mix64`` is a bijection, so there are no ties): one pass's extra copies."""
    if extra <= 0:
        return samples[:0]
    hashes = mix64_array(samples.astype(np.uint64) ^ np.uint64(key))
    return samples[np.argpartition(hashes, extra - 1)[:extra]]


@numba.njit(cache=True, nogil=True)
def _build_pass_nb(k, shard_elems, window_shards, order_key, order, prefix, shuffle):
    num_shards = shard_elems.shape[0]
    key = fold_nb(order_key, k)
    hb = feistel_half_bits(max(num_shards, 1))
    for j in range(num_shards):
        order[j] = permute_index_nb(j, num_shards, key, hb) if shuffle else j
    prefix[0] = 0
    for w in range(prefix.shape[0] - 1):
        total = 0
        for j in range(w * window_shards, min((w + 1) * window_shards, num_shards)):
            total += shard_elems[order[j]]
        prefix[w + 1] = prefix[w] + total


@numba.njit(cache=True, nogil=True)
def _build_window_nb(k, w, window_shards, order, piece_start, piece_stop, counts, window_key,
                     buf, shuffle, piece_copies):  # fmt: skip
    n = 0
    for j in range(w * window_shards, min((w + 1) * window_shards, order.shape[0])):
        shard = order[j]
        copies = piece_copies[shard] if piece_copies.shape[0] > 0 else -1  # one-sample piece
        for sample in range(piece_start[shard], piece_stop[shard]):
            repeats = 1 if counts.shape[0] == 0 else counts[sample]
            if copies >= 0:
                repeats = copies
            for _ in range(repeats):
                buf[n] = sample
                n += 1
    if not shuffle:
        return
    key = fold_nb(fold_nb(window_key, k), w)
    for i in range(n - 1, 0, -1):
        r = fold_nb(key, i)
        j = np.int64(((r >> _U32) * np.uint64(i + 1)) >> _U32)
        buf[i], buf[j] = buf[j], buf[i]


@numba.njit(cache=True, nogil=True)
def _window_of_nb(prefix, offset):
    lo, hi = 0, prefix.shape[0] - 2
    while lo < hi:
        mid = (lo + hi + 1) >> 1
        if prefix[mid] <= offset:
            lo = mid
        else:
            hi = mid - 1
    return lo


@numba.njit(cache=True, nogil=True)
def stream_samples_nb(first, pass_size, shard_elems, piece_start, piece_stop, counts,
                      window_shards, order_key, window_key, cache_ids, order, prefix, window,
                      out, shuffle, piece_copies):  # fmt: skip
    i = 0
    while i < out.shape[0]:
        element = first + i
        k = element // pass_size
        offset = element - k * pass_size
        if k != cache_ids[0]:
            _build_pass_nb(k, shard_elems, window_shards, order_key, order, prefix, shuffle)
            cache_ids[0], cache_ids[1] = k, -1
        w = _window_of_nb(prefix, offset)
        if w != cache_ids[1]:
            _build_window_nb(
                k, w, window_shards, order, piece_start, piece_stop, counts, window_key, window,
                shuffle, piece_copies,
            )
            cache_ids[1] = w
        local = offset - prefix[w]
        run = min(out.shape[0] - i, prefix[w + 1] - offset)
        out[i : i + run] = window[local : local + run]
        i += run


# ----------------------------------------------------------------------------- reference


def pass_reference(layout: DomainLayout, *, seed: int, domain: int, pass_index: int,
                   window_shards: int = DEFAULT_WINDOW_SHARDS,
                   pieces: list[tuple[int, int]] | None = None,
                   group: tuple[int, int] = (0, 1), shuffle: bool = True,
                   piece_copies: list[int] | None = None) -> list[int]:  # fmt: skip
    """Pass ``pass_index`` of a domain (or of the canonical group made of ``pieces``, sample
    ranges that play the role of shards, ``piece_copies`` overriding a one-sample piece's
    repeat count where not ``-1``) as a list of sample ids, built the obvious way."""
    sizes = list(layout.shard_sizes)
    counts = [1] * sum(sizes) if layout.repeat_counts is None else list(layout.repeat_counts)
    if pieces is None:
        first_sample = [sum(sizes[:s]) for s in range(len(sizes))]
        pieces = [(first_sample[s], first_sample[s] + sizes[s]) for s in range(len(sizes))]
    index, num_groups = group
    if layout.resample and len(set(counts)) > 1:  # this pass's extra copies, drawn anew
        members = [i for a, b in pieces for i in range(a, b)]
        full = min(counts)
        extra = sum(counts[i] for i in members) - full * len(members)
        key = derive_key(derive_key(seed, PURPOSE_RESAMPLE, domain, num_groups, index),
                         pass_index)
        chosen = set(sorted(members, key=lambda i: mix64(i ^ key))[:extra])
        counts = [full + (i in chosen) for i in range(len(counts))]
    copies = piece_copies or [-1] * len(pieces)
    shard_elements = [[i for i in range(a, b) for _ in range(counts[i] if n < 0 else n)]
                      for (a, b), n in zip(pieces, copies)]
    if num_groups == 1:
        order_parts, window_parts = (PURPOSE_SHARD_ORDER, domain), (PURPOSE_WINDOW, domain)
    else:
        order_parts = (PURPOSE_GROUP_SHARD_ORDER, domain, num_groups, index)
        window_parts = (PURPOSE_GROUP_WINDOW, domain, num_groups, index)
    order_key = derive_key(seed, *order_parts, pass_index)
    order = [permute_index_reference(j, len(pieces), order_key) if shuffle else j
             for j in range(len(pieces))]
    result: list[int] = []
    for w, start in enumerate(range(0, len(pieces), window_shards)):
        window = [e for s in order[start : start + window_shards] for e in shard_elements[s]]
        key = derive_key(seed, *window_parts, pass_index, w)
        for i in range(len(window) - 1 if shuffle else 0, 0, -1):
            j = ((mix64(key ^ i) >> 32) * (i + 1)) >> 32
            window[i], window[j] = window[j], window[i]
        result.extend(window)
    return result


def stream_reference(layout: DomainLayout, *, seed: int, domain: int, first_element: int,
                     count: int, window_shards: int = DEFAULT_WINDOW_SHARDS,
                     shuffle: bool = True) -> list[int]:  # fmt: skip
    """Elements ``[first_element, first_element + count)`` of the endless stream (reference)."""
    size = layout.pass_size
    passes: dict[int, list[int]] = {}
    result = []
    for element in range(first_element, first_element + count):
        k = element // size
        if k not in passes:
            passes[k] = pass_reference(
                layout, seed=seed, domain=domain, pass_index=k, window_shards=window_shards,
                shuffle=shuffle,
            )
        result.append(passes[k][element % size])
    return result
