"""Packing: fixed-length token blocks over the concatenation of the ordered documents.

The token stream is ``doc_0, sep, doc_1, sep, ...``: document ``i`` (in global order)
occupies ``span_i = num_tokens_i + separator_length`` tokens, where offsets
``>= num_tokens_i`` inside a span are separator tokens. Block ``j`` is tokens
``[j*L, (j+1)*L)``. With ``ends = cumsum(span)``, block ``j`` starts in the document
``i = searchsorted(ends, j*L, side="right")``, and walking forward from there yields its
pieces ``(document position, token offset within the span, length)``. Only whole blocks are
produced: ``num_blocks = sum(span) // L``.
"""

from __future__ import annotations

import numba
import numpy as np


def _spans(num_tokens, separator_length: int) -> np.ndarray:
    tokens = np.asarray(num_tokens)
    if tokens.ndim != 1 or not np.issubdtype(tokens.dtype, np.integer):
        raise TypeError("num_tokens must be a 1-D integer array")
    if tokens.size and tokens.min() < 0:
        raise ValueError("num_tokens must be >= 0")
    if separator_length < 0:
        raise ValueError(f"separator_length must be >= 0, got {separator_length}")
    return tokens.astype(np.int64) + separator_length


def num_blocks(num_tokens, *, separator_length: int, sequence_length: int) -> int:
    """Whole blocks of ``sequence_length`` tokens in the packed stream."""
    if sequence_length < 1:
        raise ValueError(f"sequence_length must be >= 1, got {sequence_length}")
    return int(_spans(num_tokens, separator_length).sum()) // sequence_length


@numba.njit(cache=True, nogil=True)
def _count_pieces_nb(ends, sequence_length, first_block, stop_block, piece_start):
    doc = np.searchsorted(ends, first_block * sequence_length, side="right")
    total = 0
    for b in range(first_block, stop_block):
        piece_start[b - first_block] = total
        token, block_end = b * sequence_length, (b + 1) * sequence_length
        while token < block_end:
            while ends[doc] <= token:
                doc += 1
            step = min(ends[doc], block_end) - token
            token += step
            total += 1
    piece_start[stop_block - first_block] = total


@numba.njit(cache=True, nogil=True)
def _fill_pieces_nb(
    ends, sequence_length, first_block, stop_block, doc_out, offset_out, length_out
):
    doc = np.searchsorted(ends, first_block * sequence_length, side="right")
    k = 0
    for b in range(first_block, stop_block):
        token, block_end = b * sequence_length, (b + 1) * sequence_length
        while token < block_end:
            while ends[doc] <= token:
                doc += 1
            doc_start = ends[doc - 1] if doc > 0 else 0
            step = min(ends[doc], block_end) - token
            doc_out[k] = doc
            offset_out[k] = token - doc_start
            length_out[k] = step
            token += step
            k += 1


def block_pieces(num_tokens, *, separator_length: int, sequence_length: int, first_block: int,
                 stop_block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Pieces of blocks ``[first_block, stop_block)``.

    Returns ``(piece_start, document, offset, length)``: the pieces of block
    ``first_block + b`` are ``piece_start[b]:piece_start[b + 1]`` of the other three arrays.
    """
    total_blocks = num_blocks(
        num_tokens, separator_length=separator_length, sequence_length=sequence_length
    )
    if not 0 <= first_block <= stop_block <= total_blocks:
        raise ValueError(
            f"need 0 <= first_block <= stop_block <= {total_blocks}, got {first_block}, {stop_block}"
        )
    ends = np.cumsum(_spans(num_tokens, separator_length))
    piece_start = np.zeros(stop_block - first_block + 1, dtype=np.int64)
    if stop_block > first_block:
        _count_pieces_nb(
            ends,
            np.int64(sequence_length),
            np.int64(first_block),
            np.int64(stop_block),
            piece_start,
        )
    n = int(piece_start[-1])
    document = np.empty(n, dtype=np.int64)
    offset = np.empty(n, dtype=np.int64)
    length = np.empty(n, dtype=np.int64)
    if n:
        _fill_pieces_nb(ends, np.int64(sequence_length), np.int64(first_block), np.int64(stop_block),
                        document, offset, length)  # fmt: skip
    return piece_start, document, offset, length


def block_pieces_reference(num_tokens, *, separator_length: int, sequence_length: int
                           ) -> list[list[tuple[int, int, int]]]:  # fmt: skip
    """Every whole block's pieces, by labelling each token of the stream (the oracle)."""
    labels = [(i, t) for i, n in enumerate(num_tokens) for t in range(int(n) + separator_length)]
    blocks = []
    for b in range(len(labels) // sequence_length):
        pieces: list[tuple[int, int, int]] = []
        for doc, offset in labels[b * sequence_length : (b + 1) * sequence_length]:
            if pieces and pieces[-1][0] == doc:
                pieces[-1] = (doc, pieces[-1][1], pieces[-1][2] + 1)
            else:
                pieces.append((doc, offset, 1))
        blocks.append(pieces)
    return blocks
