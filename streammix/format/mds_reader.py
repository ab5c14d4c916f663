"""Reading one token column out of an uncompressed MDS shard, all samples at once.

Upstream's reader opens the shard file, seeks and reads for every sample it serves; packed
reading needs about two documents per block, so that open is most of a block's cost. A
``ShardTokens`` maps the raw shard file once and, on first use, decodes where every
sample's token array lies, with numpy over all samples of the shard together:

- the shard starts with the ``uint32`` sample count ``n`` and ``n + 1`` ``uint32`` sample
  offsets (from the shard's first byte);
- a sample starts with the ``uint32`` sizes of its variable-size columns (those without a
  fixed size in the shard's ``column_sizes``), in column order, then the columns' bytes in
  column order; so a column starts after the size words and the columns before it;
- an ``ndarray:<dtype>`` column (fixed dtype, shape stored per sample) starts with one byte
  ``ndim << 2 | k``, then ``ndim`` shape values of ``2**k`` bytes each, then the values;
  ``ndarray:<dtype>:<shape>`` stores the values only.

After that a document's tokens are one slice of the mapped bytes (no copy, no file call).
The mapping stays valid when the file is removed (a cache eviction) while it is open: the
bytes read are still the shard's, and the space is released when the mapping is dropped.
Only 1-D arrays of a fixed dtype are read here; anything else raises ``ValueError``.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Sequence

import numpy as np

_SUPPORTED_DTYPES = ("uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64")


def token_column_layout(encoding: str) -> tuple[np.dtype, int | None]:
    """``(dtype, fixed element count or None)`` of an ``ndarray:<dtype>[:<shape>]`` column."""
    parts = encoding.split(":")
    if parts[0] != "ndarray" or len(parts) not in (2, 3) or parts[1] not in _SUPPORTED_DTYPES:
        raise ValueError(f"token column encoding {encoding!r} is not 'ndarray:<integer dtype>' "
                         "(or with a fixed 1-D shape)")
    if len(parts) == 2:
        return np.dtype(parts[1]), None
    shape = [int(x) for x in parts[2].split(",")]
    if len(shape) != 1:
        raise ValueError(f"token column encoding {encoding!r} has a shape of {len(shape)} "
                         "dimensions; tokens are 1-D")
    return np.dtype(parts[1]), shape[0]


class ShardTokens:
    """One raw MDS shard file, mapped once; ``tokens(i)`` is sample ``i``'s token array."""

    def __init__(self, path: str | os.PathLike, *, column: str, column_names: Sequence[str],
                 column_encodings: Sequence[str], column_sizes: Sequence[int | None]) -> None:
        if column not in column_names:
            raise ValueError(f"shard {os.fspath(path)!r} has no column {column!r} "
                             f"(columns {list(column_names)})")
        self.path = os.fspath(path)
        self.column = column
        position = list(column_names).index(column)
        self._dtype, self._fixed_count = token_column_layout(column_encodings[position])
        self._variable = [size is None for size in column_sizes]
        self._before = list(column_sizes[:position])
        with open(self.path, "rb") as file:  # FileNotFoundError: the caller fetches the shard
            size = os.fstat(file.fileno()).st_size
            if size < 8:
                raise ValueError(f"{self.path} ({size} bytes) is too short to be an MDS shard")
            self._map = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
        self._bytes = np.frombuffer(self._map, dtype=np.uint8)
        self.num_samples = int(self._words(np.zeros(1, dtype=np.int64))[0])
        if 4 * (self.num_samples + 2) > size:
            raise ValueError(f"{self.path}: {self.num_samples} samples do not fit in "
                             f"{size} bytes")
        self._start: np.ndarray | None = None   # byte where each sample's values begin
        self._count: np.ndarray | None = None   # values in each sample

    def _words(self, at: np.ndarray) -> np.ndarray:
        """The little-endian ``uint32`` at each byte offset ``at``, as int64."""
        b = self._bytes
        return (b[at].astype(np.int64) | (b[at + 1].astype(np.int64) << 8)
                | (b[at + 2].astype(np.int64) << 16) | (b[at + 3].astype(np.int64) << 24))

    def _decode_layout(self) -> None:
        n = self.num_samples
        offsets = self._words(4 + 4 * np.arange(n + 1, dtype=np.int64))
        if n and (offsets[0] < 4 * (n + 2) or np.any(np.diff(offsets) < 0)
                  or offsets[-1] > len(self._bytes)):
            raise ValueError(f"{self.path}: sample offsets are not increasing within the file")
        begin = offsets[:-1]
        words = sum(self._variable)
        sizes = [self._words(begin + 4 * j) for j in range(words)]
        column_start = begin + 4 * words
        variable_index = 0
        for fixed in self._before:
            if fixed is None:
                column_start = column_start + sizes[variable_index]
                variable_index += 1
            else:
                column_start = column_start + int(fixed)
        itemsize = self._dtype.itemsize
        if self._fixed_count is not None:
            self._start = column_start
            self._count = np.full(n, self._fixed_count, dtype=np.int64)
        else:
            size = sizes[variable_index]
            header = self._bytes[np.minimum(column_start, len(self._bytes) - 1)].astype(np.int64)
            if n and np.any(header >> 2 != 1):
                raise ValueError(f"{self.path}: column {self.column!r} holds arrays that are "
                                 "not 1-D")
            shape_bytes = 1 << (header & 3)
            self._start = column_start + 1 + shape_bytes
            values = size - 1 - shape_bytes
            if n and np.any(values % itemsize):
                raise ValueError(f"{self.path}: column {self.column!r} sizes are not whole "
                                 f"{self._dtype} values")
            self._count = values // itemsize
        if n and np.any(self._start + self._count * itemsize > offsets[1:]):
            raise ValueError(f"{self.path}: column {self.column!r} runs past its sample")

    def tokens(self, index: int) -> np.ndarray:
        """Sample ``index``'s tokens: a read-only view of the mapped shard."""
        if not 0 <= index < self.num_samples:
            raise IndexError(f"sample {index} is not in {self.path} ({self.num_samples} "
                             "samples)")
        if self._start is None:
            self._decode_layout()
        start = int(self._start[index])
        count = int(self._count[index])
        return self._bytes[start:start + count * self._dtype.itemsize].view(self._dtype)
