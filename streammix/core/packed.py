"""Domain-pure packing: each domain's documents, in stream order, cut into token blocks.

Domain ``d``'s stream of passes (``streammix.core.passes``) lists its documents; joined with
a separator, they form one endless token stream in which document ``i`` occupies
``span_i = num_tokens_i + separator_length`` tokens (offsets ``>= num_tokens_i`` inside a
span are the separator). Block ``b`` of domain ``d`` is tokens ``[bL, (b+1)L)`` of that
stream: every block comes from one domain, a document that does not fit continues in the
domain's next block, and the interleave assigns blocks (not documents) to positions, so the
segment weights are token shares, exact to the block.

Random access in time independent of the position. Every pass of a domain holds the same
tokens, ``T_d = sum_i count_i * span_i``, whatever its shuffle, so token ``a`` lies in pass
``a // T_d``. Inside a pass, the windows of shards (the unit of the shuffle) have token
totals that follow from the pass's shard order alone (``sum`` of its shards' token totals),
so a binary search over ``O(shards / window_shards)`` prefix sums finds the window, and
only that window's shuffled element list (already the unit the sample order materializes)
is expanded into cumulative spans. Resuming at token ``1e10`` therefore costs one pass
table and one window, like resuming unpacked samples.

``PackedDomainStream.pieces(first_token, length)`` returns where tokens come from:
``(sample id, offset within its span, length)`` per piece, in order.
``packed_pieces_reference`` is the obvious oracle: list the stream's documents, label every
token, cut.
"""

from __future__ import annotations

import numpy as np

from streammix.core.passes import (
    DomainLayout,
    PassTables,
    _build_pass_nb,
    _build_window_nb,
    stream_reference,
)


def _spans(num_tokens: np.ndarray, separator_length: int, num_samples: int) -> np.ndarray:
    tokens = np.asarray(num_tokens)
    if tokens.ndim != 1 or not np.issubdtype(tokens.dtype, np.integer):
        raise TypeError("num_tokens must be a 1-D integer array")
    if tokens.shape[0] != num_samples:
        raise ValueError(f"num_tokens has {tokens.shape[0]} entries for {num_samples} samples")
    if tokens.size and tokens.min() < 0:
        raise ValueError("num_tokens must be >= 0")
    if separator_length < 0:
        raise ValueError(f"separator_length must be >= 0, got {separator_length}")
    return tokens.astype(np.int64) + separator_length


class PackedDomainStream:
    """One domain's endless token stream (documents in stream order, separators between)."""

    def __init__(self, layout: DomainLayout, num_tokens: np.ndarray, *, seed: int, domain: int,
                 window_shards: int, separator_length: int, shuffle: bool = True) -> None:
        if layout.resample:
            raise ValueError("packing needs passes that all hold the same tokens: a domain "
                             "whose extra copies are redrawn per pass (resample) cannot be packed")
        self.tables = PassTables(layout, seed=seed, domain=domain, window_shards=window_shards,
                                 shuffle=shuffle)
        self.spans = _spans(num_tokens, separator_length, layout.num_samples)
        counts = (np.ones(layout.num_samples, dtype=np.int64) if layout.repeat_counts is None
                  else layout.repeat_counts)
        weighted = np.zeros(layout.num_samples + 1, dtype=np.int64)
        np.cumsum(self.spans * counts, out=weighted[1:])
        t = self.tables  # a "shard" of the tables is a sample range (a whole shard here)
        self.shard_tokens = weighted[t.piece_stop] - weighted[t.piece_start]
        self.pass_tokens = int(self.shard_tokens.sum())
        self._num_windows = -(-t.num_shards // t.window_shards)
        self._order = np.zeros(t.num_shards, dtype=np.int64)
        self._element_prefix = np.zeros(self._num_windows + 1, dtype=np.int64)
        self._token_prefix = np.zeros(self._num_windows + 1, dtype=np.int64)
        self._pass = -1
        self._window = (-1, -1)
        self._window_samples = np.zeros(0, dtype=np.int64)
        self._window_ends = np.zeros(0, dtype=np.int64)  # cumulative spans inside the window

    def _enter_pass(self, k: int) -> None:
        if k == self._pass:
            return
        t = self.tables
        _build_pass_nb(np.int64(k), t.shard_elems, np.int64(t.window_shards), t.order_key,
                       self._order, self._element_prefix, t.shuffle)
        per_position = self.shard_tokens[self._order]
        totals = np.add.reduceat(per_position, np.arange(0, t.num_shards, t.window_shards)) \
            if t.num_shards else np.zeros(0, dtype=np.int64)
        np.cumsum(totals, out=self._token_prefix[1:])
        self._pass = k

    def _enter_window(self, k: int, w: int) -> None:
        if self._window == (k, w):
            return
        self._enter_pass(k)
        t = self.tables
        size = int(self._element_prefix[w + 1] - self._element_prefix[w])
        samples = np.empty(size, dtype=np.int64)
        _build_window_nb(np.int64(k), np.int64(w), np.int64(t.window_shards), self._order,
                         t.piece_start, t.piece_stop, t.counts, t.window_key, samples, t.shuffle,
                         t.piece_copies)
        self._window_samples = samples
        self._window_ends = np.cumsum(self.spans[samples])
        self._window = (k, w)

    def pieces(self, first_token: int, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(sample, offset in its span, length)`` of tokens ``[first_token, +length)``."""
        if first_token < 0 or length < 0:
            raise ValueError(f"need first_token >= 0 and length >= 0, got {first_token}, {length}")
        if length and self.pass_tokens == 0:
            raise ValueError("this domain has no tokens to pack (every span is empty)")
        samples, offsets, lengths = [], [], []
        token, stop = first_token, first_token + length
        while token < stop:
            k, in_pass = divmod(token, self.pass_tokens)
            self._enter_pass(k)
            w = int(np.searchsorted(self._token_prefix, in_pass, side="right")) - 1
            self._enter_window(k, w)
            in_window = in_pass - int(self._token_prefix[w])
            ends = self._window_ends
            j = int(np.searchsorted(ends, in_window, side="right"))
            window_stop = min(stop - token + in_window, int(ends[-1]))
            last = int(np.searchsorted(ends, window_stop, side="left"))
            index = np.arange(j, last + 1)
            starts = np.where(index > 0, ends[index - 1], 0)
            lo = np.maximum(starts, in_window)
            hi = np.minimum(ends[index], window_stop)
            keep = hi > lo
            samples.append(self._window_samples[index[keep]])
            offsets.append((lo - starts)[keep])
            lengths.append((hi - lo)[keep])
            token += window_stop - in_window
        if not samples:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty.copy(), empty.copy()
        return np.concatenate(samples), np.concatenate(offsets), np.concatenate(lengths)

    def tokens_before(self, element: int) -> int:
        """Tokens that stream elements ``[0, element)`` occupy (for mixed packing)."""
        if element < 0:
            raise ValueError(f"element must be >= 0, got {element}")
        size = self.tables.pass_size
        if size == 0:
            return 0
        k, offset = divmod(element, size)
        self._enter_pass(k)
        w = int(np.searchsorted(self._element_prefix, offset, side="right")) - 1
        if w >= self._num_windows:
            return (k + 1) * self.pass_tokens
        self._enter_window(k, w)
        inside = offset - int(self._element_prefix[w])
        within = int(self._window_ends[inside - 1]) if inside > 0 else 0
        return k * self.pass_tokens + int(self._token_prefix[w]) + within


def packed_pieces_reference(layout: DomainLayout, num_tokens, *, seed: int, domain: int,
                            window_shards: int, separator_length: int, first_token: int,
                            length: int) -> list[tuple[int, int, int]]:
    """The pieces of tokens ``[first_token, +length)`` by labelling every token (oracle)."""
    spans = [int(n) + separator_length for n in num_tokens]
    labels: list[tuple[int, int]] = []
    element = 0
    while len(labels) < first_token + length:
        (sample,) = stream_reference(layout, seed=seed, domain=domain, first_element=element,
                                     count=1, window_shards=window_shards)
        labels.extend((sample, t) for t in range(spans[sample]))
        element += 1
    pieces: list[tuple[int, int, int]] = []
    previous = None
    for sample, offset in labels[first_token:first_token + length]:
        if previous is not None and previous == (sample, offset - 1) and pieces:
            s, o, n = pieces[-1]
            pieces[-1] = (s, o, n + 1)
        else:
            pieces.append((sample, offset, 1))
        previous = (sample, offset)
    return pieces
