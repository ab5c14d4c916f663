import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streammix.core.packing import block_pieces, block_pieces_reference, num_blocks


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 30), min_size=1, max_size=25), st.integers(0, 2), st.integers(1, 17),
       st.data())  # fmt: skip
def test_blocks_match_reference_and_cover_the_stream_once(tokens, sep, length, data):
    tokens = np.array(tokens)
    total = num_blocks(tokens, separator_length=sep, sequence_length=length)
    reference = block_pieces_reference(
        tokens.tolist(), separator_length=sep, sequence_length=length
    )
    assert total == len(reference)
    first = data.draw(st.integers(0, total))
    stop = data.draw(st.integers(first, total))
    starts, doc, offset, size = block_pieces(tokens, separator_length=sep, sequence_length=length,
                                             first_block=first, stop_block=stop)  # fmt: skip
    for b in range(first, stop):
        lo, hi = starts[b - first], starts[b - first + 1]
        pieces = list(zip(doc[lo:hi].tolist(), offset[lo:hi].tolist(), size[lo:hi].tolist()))
        assert pieces == reference[b]
        assert sum(p[2] for p in pieces) == length
    if first == 0 and stop == total:  # every token of the stream exactly once, in order
        covered = [(d, o + i) for d, o, n in zip(doc, offset, size) for i in range(n)]
        stream = [(i, t) for i, n in enumerate(tokens) for t in range(n + sep)]
        assert covered == stream[: total * length]


def test_bad_input():
    with pytest.raises(ValueError, match="sequence_length"):
        num_blocks(np.array([3]), separator_length=0, sequence_length=0)
    with pytest.raises(ValueError, match="separator_length"):
        num_blocks(np.array([3]), separator_length=-1, sequence_length=2)
    with pytest.raises(ValueError, match=">= 0"):
        num_blocks(np.array([3, -1]), separator_length=0, sequence_length=2)
    with pytest.raises(TypeError, match="integer"):
        num_blocks(np.array([3.0]), separator_length=0, sequence_length=2)
    with pytest.raises(ValueError, match="first_block"):
        block_pieces(
            np.array([4, 4]), separator_length=0, sequence_length=2, first_block=0, stop_block=5
        )
