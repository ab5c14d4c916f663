"""Writing one MDS Stream per domain, with the same bytes as ``streaming.MDSWriter``.

The MDS columns are what a training step needs and nothing more:

``text`` (``str``)
    the document;
``domain`` (``int32``)
    the domain id (its position in the build's domain list);
``tokens`` (``ndarray:uint16`` or ``ndarray:uint32``) and ``num_tokens`` (``int32``)
    when the build was tokenized (``uint16`` when the vocabulary has at most 65536 ids);
``num_bytes`` (``int32``)
    the UTF-8 size of the text when it was not: it stands in for the token count;
``id`` (``str``)
    when the build was given an id field.

Samples are written in the order given, so a Stream's sample ``i`` is the ``i``-th
document handed to ``StreamWriter.write_table``; the writer adds no files besides the
shards and ``index.json``.

Why not ``MDSWriter`` itself: importing it runs ``streaming``'s package ``__init__``, which
imports torch and transformers (about 2.5 s, longer than writing a typical domain), and it
encodes sample by sample through generic encoders and compresses shard by shard on the
calling thread. ``StreamWriter`` writes the MDS format version 2 directly:

- columns are stored in name order; ``str`` is UTF-8, ``int32`` four little-endian bytes,
  ``ndarray:<dtype>`` (no fixed shape) one byte ``ndim << 2 | k`` where the shape is stored
  as ``uint8``/``uint16``/``uint32``/``uint64`` for ``k = 0..3`` (the smallest type that
  holds every dimension), then the shape, then the values;
- a sample is the ``uint32`` sizes of its variable-size columns, then its columns;
- a shard is ``uint32`` sample count, ``uint32`` start offsets of the samples and of the
  end (counted from the shard's first byte), the column configuration as sorted JSON, then
  the samples;
- a new shard starts when adding a sample (plus 4 bytes for its offset) would take the
  shard (plus 8 bytes and the configuration) over ``size_limit``, checked before the
  sample is added, exactly as ``MDSWriter`` does (so a sample bigger than the limit comes
  after an empty shard there and here);
- shard ``i`` is ``shard.{i:05}.mds``, plus ``.<codec>`` when compressed; ``index.json``
  lists each shard's configuration, sample count and raw and compressed file sizes.

Shards are compressed and written by a small thread pool (``compress_threads``) while the
caller encodes the next one; the codecs release the GIL. zstd (the default), brotli, bz2
and snappy are called exactly as ``streaming`` calls them, so the files are identical to
``MDSWriter``'s (a test compares them); gzip is written with a zero timestamp, where
``streaming`` stamps the current time, so the output does not depend on the clock.
"""

from __future__ import annotations

import json
import os
import struct
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import pyarrow as pa

TOKEN_DTYPES = ("uint16", "uint32")
INDEX_NAME = "index.json"
MDS_VERSION = 2
_FIXED_SIZES = {"int32": 4}
_SHAPE_TYPES = ((1 << 8, "B", 0), (1 << 16, "H", 1), (1 << 32, "I", 2), (1 << 64, "Q", 3))


@dataclass(frozen=True, kw_only=True)
class Codec:
    """A shard compression of ``streaming``: file extension, levels, default level."""

    name: str
    levels: range | None
    default_level: int | None

    def compressor(self, level: int | None) -> Callable[[bytes], bytes]:
        """``bytes -> bytes`` at ``level`` (None: the default level)."""
        level = self.default_level if level is None else level
        if self.name == "zstd":
            import zstd

            return lambda data: zstd.compress(data, level)
        if self.name == "br":
            import brotli

            return lambda data: brotli.compress(data, quality=level)
        if self.name == "bz2":
            import bz2

            return lambda data: bz2.compress(data, level)
        if self.name == "gz":
            import gzip

            return lambda data: gzip.compress(data, level, mtime=0)
        import snappy

        return snappy.compress


CODECS = {
    codec.name: codec
    for codec in (
        Codec(name="zstd", levels=range(1, 23), default_level=3),
        Codec(name="br", levels=range(0, 12), default_level=11),
        Codec(name="bz2", levels=range(1, 10), default_level=9),
        Codec(name="gz", levels=range(0, 10), default_level=9),
        Codec(name="snappy", levels=None, default_level=None),
    )
}


def parse_compression(compression: str) -> tuple[Codec, int | None]:
    """``"zstd"`` or ``"zstd:9"`` -> (codec, level or None); ValueError names what is allowed."""
    name, sep, level_text = compression.partition(":")
    codec = CODECS.get(name)
    if codec is None:
        raise ValueError(
            f"unknown compression {compression!r}; choose one of {sorted(CODECS)}, "
            "optionally with a level (e.g. zstd:9)"
        )
    if not sep:
        return codec, None
    if codec.levels is None:
        raise ValueError(f"compression {name!r} takes no level, got {compression!r}")
    if not level_text.isdigit() or int(level_text) not in codec.levels:
        raise ValueError(
            f"compression level of {name!r} must be an integer in "
            f"{codec.levels.start}..{codec.levels.stop - 1}, got {compression!r}"
        )
    return codec, int(level_text)


def mds_columns(*, token_dtype: str | None, with_id: bool) -> dict[str, str]:
    """The MDS column encodings of a streammix Stream."""
    columns = {"text": "str", "domain": "int32"}
    if token_dtype is not None:
        if token_dtype not in TOKEN_DTYPES:
            raise ValueError(f"token_dtype must be one of {TOKEN_DTYPES}, got {token_dtype!r}")
        columns["tokens"] = f"ndarray:{token_dtype}"
        columns["num_tokens"] = "int32"
    else:
        columns["num_bytes"] = "int32"
    if with_id:
        columns["id"] = "str"
    return columns


def shape_header(length: int) -> bytes:
    """The dynamic-shape header of a one-dimensional ``ndarray`` column value."""
    if length <= 0:
        raise ValueError("an ndarray column value needs at least one element")
    for bound, code, kind in _SHAPE_TYPES:
        if length < bound:
            return bytes([1 << 2 | kind]) + struct.pack("<" + code, length)
    raise ValueError(f"array length {length} does not fit the MDS shape header")


class StreamWriter:
    """Writes prepared tables (``text``, ``num_bytes``, ``tokens``, ``id``) as one MDS Stream.

    ``folder`` must not exist or be empty. Use it as a context manager (or call
    ``finish``): ``index.json`` is written after the last shard; on an exception inside the
    ``with`` block the shards written so far stay and no index is written.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        *,
        token_dtype: str | None,
        with_id: bool,
        compression: str | None,
        size_limit: int | None,
        compress_threads: int = 1,
    ) -> None:
        if size_limit is not None and not 0 <= size_limit < 1 << 32:
            raise ValueError(
                f"size_limit must be in 0..2**32 - 1 (uint32 offsets), got {size_limit}"
            )
        if compress_threads < 1:
            raise ValueError(f"compress_threads must be at least 1, got {compress_threads}")
        self.folder = Path(folder)
        if self.folder.exists() and any(self.folder.iterdir()):
            raise FileExistsError(f"{self.folder} is not empty")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.token_dtype = token_dtype
        self.with_id = with_id
        self.compression = compression or None
        self._compress: Callable[[bytes], bytes] | None = None
        self._extension = None
        if self.compression is not None:
            codec, level = parse_compression(self.compression)
            self._compress = codec.compressor(level)
            self._extension = codec.name
        self.size_limit = size_limit or None
        columns = mds_columns(token_dtype=token_dtype, with_id=with_id)
        names = sorted(columns)
        self._config = {
            "version": MDS_VERSION,
            "format": "mds",
            "compression": self.compression,
            "hashes": [],
            "size_limit": self.size_limit,
            "column_names": names,
            "column_encodings": [columns[name] for name in names],
            "column_sizes": [_FIXED_SIZES.get(columns[name]) for name in names],
        }
        self._config_bytes = json.dumps(self._config, sort_keys=True).encode("utf-8")
        self._shard_overhead = 8 + len(self._config_bytes)
        self._samples: list[bytes] = []
        self._shard_size = self._shard_overhead
        self._shards: list[dict[str, Any]] = []
        self._pending: deque[Future] = deque()
        self._threads = compress_threads
        self._executor = ThreadPoolExecutor(max_workers=compress_threads)
        self._finished = False

    def write_table(self, table: pa.Table, domain_id: int) -> None:
        """Append every row of ``table`` as one sample of domain ``domain_id``."""
        rows = table.num_rows
        if rows == 0:
            return
        texts, text_offsets = _utf8_column(table["text"])
        ids = id_offsets = None
        if self.with_id:
            if table["id"].null_count:
                raise ValueError("the id column has missing values")
            ids, id_offsets = _utf8_column(table["id"])
        domain = struct.pack("<i", domain_id)
        if self.token_dtype is not None:
            token_lists = table["tokens"].combine_chunks()
            offsets = token_lists.offsets.to_numpy()
            offsets = offsets - offsets[0]  # a sliced list array starts past zero
            tokens = token_lists.flatten().to_numpy()
            if tokens.size and int(tokens.max()) > np.iinfo(self.token_dtype).max:
                raise ValueError(f"token id {int(tokens.max())} does not fit {self.token_dtype}")
            tokens = tokens.astype(self.token_dtype)
            itemsize = tokens.dtype.itemsize
            token_bytes = tokens.tobytes()
            counts = np.diff(offsets)
        else:
            counts = table["num_bytes"].to_numpy()
        if counts.size and (counts.min() < 0 or counts.max() >= 1 << 31):
            raise ValueError("token or byte counts must fit in int32")
        counts_le = counts.astype("<i4").tobytes()
        # Sorted columns: domain, id, num_bytes | num_tokens, text, tokens.
        head_format = "<" + "I" * (int(self.with_id) + 1 + int(self.token_dtype is not None))
        for row in range(rows):
            sizes: list[int] = []  # of the variable-size columns, in column order
            body = [domain]
            if ids is not None:
                doc_id = ids[id_offsets[row] : id_offsets[row + 1]]
                sizes.append(len(doc_id))
                body.append(doc_id)
            body.append(counts_le[4 * row : 4 * row + 4])
            text = texts[text_offsets[row] : text_offsets[row + 1]]
            sizes.append(len(text))
            body.append(text)
            if self.token_dtype is not None:
                start, stop = int(offsets[row]), int(offsets[row + 1])
                array = shape_header(stop - start) + token_bytes[itemsize * start : itemsize * stop]
                sizes.append(len(array))
                body.append(array)
            self._add(struct.pack(head_format, *sizes) + b"".join(body))

    def _add(self, sample: bytes) -> None:
        size = len(sample) + 4
        if self.size_limit is not None and self.size_limit < self._shard_size + size:
            self._flush()
        self._samples.append(sample)
        self._shard_size += size

    def _flush(self) -> None:
        """Hand the cached samples to the pool as the next shard; waits if the pool is full."""
        samples, self._samples = self._samples, []
        self._shard_size = self._shard_overhead
        count = len(samples)
        header = 4 + 4 * (count + 1) + len(self._config_bytes)
        offsets = np.zeros(count + 1, dtype=np.int64)
        np.cumsum([len(sample) for sample in samples], out=offsets[1:])
        raw = b"".join(
            (
                struct.pack("<I", count),
                (offsets + header).astype("<u4").tobytes(),
                self._config_bytes,
                *samples,
            )
        )
        index = len(self._shards)
        self._shards.append({"samples": count})
        while len(self._pending) >= self._threads:  # bounds memory: threads + 1 shards
            self._pending.popleft().result()
        self._pending.append(self._executor.submit(self._save_shard, index, raw))

    def _save_shard(self, index: int, raw: bytes) -> None:
        raw_name = f"shard.{index:05}.mds"
        info: dict[str, Any] = {"raw_data": {"basename": raw_name, "bytes": len(raw), "hashes": {}}}
        data, name = raw, raw_name
        if self._compress is not None:
            data = self._compress(raw)
            name = f"{raw_name}.{self._extension}"
            info["zip_data"] = {"basename": name, "bytes": len(data), "hashes": {}}
        else:
            info["zip_data"] = None
        with open(self.folder / name, "wb") as stream:
            stream.write(data)
        self._shards[index].update(info, **self._config)

    def finish(self) -> None:
        """Write the last shard, wait for every shard, then write ``index.json``."""
        if self._finished:
            return
        self._finished = True
        try:
            if self._samples:
                self._flush()
            while self._pending:
                self._pending.popleft().result()
        finally:
            self._executor.shutdown(wait=True, cancel_futures=True)
        with open(self.folder / INDEX_NAME, "w") as stream:
            json.dump({"version": MDS_VERSION, "shards": self._shards}, stream, sort_keys=True)

    def __enter__(self) -> StreamWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.finish()
        else:
            self._finished = True
            self._executor.shutdown(wait=True, cancel_futures=True)


def _utf8_column(column: pa.ChunkedArray | pa.Array) -> tuple[bytes, list[int]]:
    """The UTF-8 bytes of a string column and the offsets of its values in them."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if array.null_count:
        raise ValueError("a string column has missing values")
    if pa.types.is_string(array.type):
        offset_type = np.int32
    elif pa.types.is_large_string(array.type):
        offset_type = np.int64
    else:
        raise TypeError(f"expected a string column, got {array.type}")
    _, offset_buffer, data_buffer = array.buffers()
    offsets = np.frombuffer(offset_buffer, dtype=offset_type)[
        array.offset : array.offset + len(array) + 1
    ]
    data = data_buffer.to_pybytes() if data_buffer is not None else b""
    return data, offsets.tolist()


def merge_streams(parts: list[Path], folder: Path) -> int:
    """Concatenate the MDS Streams in ``parts`` (in that order) into one Stream ``folder``.

    Every part was written by its own ``StreamWriter`` with the same columns (the Spark
    engine writes one part per partition). Shards are moved, not copied, and renumbered
    ``shard.{i:05}.mds[.<codec>]`` in part order; ``index.json`` lists them in that order
    and is written last. Returns the number of samples. ``folder`` must not exist.
    """
    folder.mkdir(parents=True)
    shards: list[dict[str, Any]] = []
    samples = 0
    for part in parts:
        index = json.loads((part / INDEX_NAME).read_text(encoding="utf-8"))
        for shard in index["shards"]:
            number = len(shards)
            raw_name = f"shard.{number:05}.mds"
            names = {"raw_data": raw_name}
            if shard.get("zip_data"):
                names["zip_data"] = f"{raw_name}.{shard['compression'].split(':')[0]}"
            stored = shard["zip_data"] or shard["raw_data"]
            target = names["zip_data" if shard.get("zip_data") else "raw_data"]
            os.replace(part / stored["basename"], folder / target)
            for key, name in names.items():
                shard[key] = dict(shard[key], basename=name)
            shards.append(shard)
            samples += int(shard["samples"])
    with open(folder / INDEX_NAME, "w") as stream:
        json.dump({"version": MDS_VERSION, "shards": shards}, stream, sort_keys=True)
    return samples
