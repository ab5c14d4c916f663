"""Packed reading: the global order -> fixed-length token blocks, in two modes.

Domain-pure (``MixingConfig(packing="domain")``, the default): global position ``t`` is a
block; the interleave gives its domain ``d`` and the domain's block number ``b`` (the
domain's picks before ``t``), and ``streammix.core.packed.PackedDomainStream`` cuts tokens
``[bL, (b+1)L)`` out of domain ``d``'s own stream of documents. Random access: reading
starts anywhere in time independent of the position.

Mixed (``packing="mixed"``): block ``j`` is tokens ``[jL, (j+1)L)`` of the stream
``doc_0, sep, doc_1, sep, ...`` of documents in global order, and every token carries its
document's domain. A reader walks the document order forward in chunks from where its first
block starts; that start is found by a binary search over positions, because the tokens
before position ``t`` are the sum over domains of the tokens of each domain's first
``cursor_d(t)`` stream elements, which each domain's token stream gives directly. Starting
at block ``j`` costs ``O(log j)`` such evaluations, not a walk from document 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from streammix.core.order import GlobalOrder
from streammix.core.packed import PackedDomainStream

CHUNK_DOCUMENTS = 8192


@dataclass(frozen=True)
class BlockPieces:
    """Where one block's tokens come from: parallel arrays, one entry per piece."""

    domain: np.ndarray   # int32 domain of the piece's document
    sample: np.ndarray   # int64 sample index within that domain
    offset: np.ndarray   # int64 token offset within the document's span (tokens + separator)
    length: np.ndarray   # int64 tokens taken


def domain_streams(order: GlobalOrder, num_tokens: Sequence[np.ndarray], *,
                   separator_length: int) -> list[PackedDomainStream]:
    """One token stream per domain, for the order's seed, layouts and window size."""
    return [PackedDomainStream(layout, tokens, seed=order.config.seed, domain=d,
                               window_shards=order.config.window_shards,
                               separator_length=separator_length,
                               shuffle=order.config.shuffle)
            for d, (layout, tokens) in enumerate(zip(order.domains, num_tokens))]


class DomainBlocks:
    """Domain-pure packing: global position -> one domain's block pieces (random access)."""

    def __init__(self, order: GlobalOrder, streams: Sequence[PackedDomainStream], *,
                 sequence_length: int) -> None:
        self.order = order
        self.streams = list(streams)
        self.sequence_length = sequence_length

    def blocks(self, start: int, stop: int) -> list[BlockPieces]:
        """The pieces of the blocks at global positions ``[start, stop)``."""
        domains, elements = self.order.elements(start, stop)
        L = self.sequence_length
        result = []
        for d, block in zip(domains.tolist(), elements.tolist()):
            sample, offset, length = self.streams[d].pieces(block * L, L)
            result.append(BlockPieces(np.full(len(sample), d, dtype=np.int32), sample, offset,
                                      length))
        return result


class PackedCursor:
    """Mixed packing: forward-only block -> pieces lookup over one GlobalOrder (per reader)."""

    def __init__(self, order: GlobalOrder, num_tokens: Sequence[np.ndarray], *,
                 sequence_length: int, separator_length: int,
                 streams: Sequence[PackedDomainStream] | None = None) -> None:
        self.order = order
        self.num_tokens = [np.asarray(t, dtype=np.int64) for t in num_tokens]
        self.sequence_length = sequence_length
        self.separator_length = separator_length
        self.streams = list(streams) if streams is not None else domain_streams(
            order, self.num_tokens, separator_length=separator_length)
        self._next_position = 0                          # first document not yet loaded
        self._domain = np.empty(0, dtype=np.int32)       # loaded window of documents
        self._sample = np.empty(0, dtype=np.int64)
        self._end = np.empty(0, dtype=np.int64)          # global token offset where each span ends
        self._last_block = -1
        self._base = 0                                   # tokens before _next_position's doc

    def tokens_before(self, position: int) -> int:
        """Tokens of the documents at global positions ``[0, position)``."""
        cursors = self.order.cursors_at(position)
        return sum(stream.tokens_before(int(c)) for stream, c in zip(self.streams, cursors))

    def _last_position_starting_by(self, token: int) -> tuple[int, int]:
        """``(t, tokens_before(t))`` for the last position ``t`` whose document starts at or
        before ``token`` (binary search: tokens_before is non-decreasing)."""
        lo, hi = 0, 1
        while self.tokens_before(hi) <= token:
            lo, hi = hi, hi * 2
        while hi - lo > 1:  # tokens_before(lo) <= token < tokens_before(hi)
            mid = (lo + hi) // 2
            if self.tokens_before(mid) <= token:
                lo = mid
            else:
                hi = mid
        return lo, self.tokens_before(lo)

    def first_position_at(self, token: int) -> int:
        """The first position whose document starts at or after ``token``."""
        position, before = self._last_position_starting_by(token)
        return position if before == token else position + 1

    def _seek(self, token: int) -> None:
        """Start loading at the last position whose document starts at or before ``token``."""
        self._next_position, self._base = self._last_position_starting_by(token)

    def _load_until(self, token: int) -> None:
        while not len(self._end) or self._end[-1] < token:
            start = self._next_position
            domain, sample = self.order.samples(start, start + CHUNK_DOCUMENTS)
            spans = np.empty(len(domain), dtype=np.int64)
            for d, tokens in enumerate(self.num_tokens):
                mask = domain == d
                spans[mask] = tokens[sample[mask]] + self.separator_length
            base = self._end[-1] if len(self._end) else self._base
            self._domain = np.concatenate([self._domain, domain])
            self._sample = np.concatenate([self._sample, sample])
            self._end = np.concatenate([self._end, base + np.cumsum(spans)])
            self._next_position = start + CHUNK_DOCUMENTS

    def pieces(self, block: int) -> BlockPieces:
        """The pieces of ``block``; blocks must be asked for in increasing order."""
        if block <= self._last_block:
            raise ValueError(f"blocks must be read forward ({block} after {self._last_block})")
        first_token = block * self.sequence_length
        if self._last_block < 0 and first_token > 0:
            self._seek(first_token)
        self._last_block = block
        stop_token = first_token + self.sequence_length
        self._load_until(stop_token)
        keep = int(np.searchsorted(self._end, first_token, side="right"))
        if keep:
            self._base = int(self._end[keep - 1])
        self._domain, self._sample, self._end = (self._domain[keep:], self._sample[keep:],
                                                 self._end[keep:])
        count = int(np.searchsorted(self._end, stop_token, side="left")) + 1
        ends = self._end[:count]
        starts = ends - (self.num_tokens_of(count) + self.separator_length)
        lo = np.maximum(starts, first_token)
        hi = np.minimum(ends, stop_token)
        return BlockPieces(self._domain[:count].copy(), self._sample[:count].copy(),
                           lo - starts, hi - lo)

    def num_tokens_of(self, count: int) -> np.ndarray:
        out = np.empty(count, dtype=np.int64)
        for d, tokens in enumerate(self.num_tokens):
            mask = self._domain[:count] == d
            out[mask] = tokens[self._sample[:count][mask]]
        return out


def assemble_block(pieces: BlockPieces, documents: Sequence[np.ndarray], *,
                   separator_id: int | None, dtype: np.dtype = np.int64) -> np.ndarray:
    """Concatenate the pieces' tokens (separator token past each document's end).

    A piece is ``length`` tokens from ``offset`` of its document's span, the document's
    tokens followed (when ``separator_id`` is set) by one separator; the pieces are copied
    into one preallocated block, with no per-token work in Python.
    """
    block = np.empty(int(pieces.length.sum()), dtype=dtype)
    at = 0
    for tokens, offset, length in zip(documents, pieces.offset.tolist(), pieces.length.tolist()):
        present = max(0, min(length, len(tokens) - offset))
        block[at:at + present] = tokens[offset:offset + present]
        if present < length:  # the span's last token: the separator
            if separator_id is None or length - present > 1:
                raise ValueError(f"a piece of {length} tokens from offset {offset} runs past a "
                                 f"document of {len(tokens)} tokens")
            block[at + present] = separator_id
        at += length
    return block
