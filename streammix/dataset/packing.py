"""Packed reading: global order of documents -> fixed-length token blocks.

With packing on, a training sample is block ``j`` = tokens ``[jL, (j+1)L)`` of the stream
``doc_0, sep, doc_1, sep, ...`` of documents in global order (``streammix.core.packing``
describes the same stream). Global batch ``g`` is blocks ``[gG, (g+1)G)`` and is
partitioned over ranks and workers exactly like unpacked samples.

A reader walks the document order forward in chunks, keeping only the documents that the
blocks it still has to produce can touch: block ``j`` starts in the document whose span end
is the first one past ``jL`` (``searchsorted`` over the running token offsets). Starting at
block ``j`` therefore costs a walk over the documents before it, done in vectorized chunks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from streammix.core.order import GlobalOrder

CHUNK_DOCUMENTS = 8192


@dataclass(frozen=True)
class BlockPieces:
    """Where one block's tokens come from: parallel arrays, one entry per piece."""

    domain: np.ndarray   # int32 domain of the piece's document
    sample: np.ndarray   # int64 sample index within that domain
    offset: np.ndarray   # int64 token offset within the document's span (tokens + separator)
    length: np.ndarray   # int64 tokens taken


class PackedCursor:
    """Forward-only block -> pieces lookup over one GlobalOrder (one per reader)."""

    def __init__(self, order: GlobalOrder, num_tokens: Sequence[np.ndarray], *,
                 sequence_length: int, separator_length: int) -> None:
        self.order = order
        self.num_tokens = [np.asarray(t, dtype=np.int64) for t in num_tokens]
        self.sequence_length = sequence_length
        self.separator_length = separator_length
        self._next_position = 0                          # first document not yet loaded
        self._domain = np.empty(0, dtype=np.int32)       # loaded window of documents
        self._sample = np.empty(0, dtype=np.int64)
        self._end = np.empty(0, dtype=np.int64)          # global token offset where each span ends
        self._last_block = -1

    def _load_until(self, token: int) -> None:
        while not len(self._end) or self._end[-1] < token:
            start = self._next_position
            domain, sample = self.order.samples(start, start + CHUNK_DOCUMENTS)
            spans = np.empty(len(domain), dtype=np.int64)
            for d, tokens in enumerate(self.num_tokens):
                mask = domain == d
                spans[mask] = tokens[sample[mask]] + self.separator_length
            base = self._end[-1] if len(self._end) else 0
            self._domain = np.concatenate([self._domain, domain])
            self._sample = np.concatenate([self._sample, sample])
            self._end = np.concatenate([self._end, base + np.cumsum(spans)])
            self._next_position = start + CHUNK_DOCUMENTS

    def pieces(self, block: int) -> BlockPieces:
        """The pieces of ``block``; blocks must be asked for in increasing order."""
        if block <= self._last_block:
            raise ValueError(f"blocks must be read forward ({block} after {self._last_block})")
        self._last_block = block
        first_token = block * self.sequence_length
        stop_token = first_token + self.sequence_length
        self._load_until(stop_token)
        keep = int(np.searchsorted(self._end, first_token, side="right"))
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
    """Concatenate the pieces' tokens (separator token past each document's end)."""
    parts = []
    for tokens, offset, length in zip(documents, pieces.offset.tolist(), pieces.length.tolist()):
        span = tokens if separator_id is None else np.append(tokens, separator_id)
        parts.append(np.asarray(span[offset:offset + length], dtype=dtype))
    return np.concatenate(parts)
