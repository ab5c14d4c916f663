"""Writing one MDS Stream per domain with ``streaming.MDSWriter``.

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
document handed to ``StreamWriter.write_table``; the writer never adds files besides the
shards and ``index.json``.
"""

from __future__ import annotations

import os
from types import TracebackType

import numpy as np
import pyarrow as pa

TOKEN_DTYPES = ("uint16", "uint32")


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


class StreamWriter:
    """An ``MDSWriter`` fed from prepared tables (``text``, ``num_bytes``, ``tokens``, ``id``)."""

    def __init__(
        self,
        folder: str | os.PathLike,
        *,
        token_dtype: str | None,
        with_id: bool,
        compression: str | None,
        size_limit: int,
    ) -> None:
        from streaming import MDSWriter

        self.token_dtype = token_dtype
        self.with_id = with_id
        self.num_samples = 0
        self._writer = MDSWriter(
            columns=mds_columns(token_dtype=token_dtype, with_id=with_id),
            out=os.fspath(folder),
            compression=compression,
            size_limit=size_limit,
        )

    def write_table(self, table: pa.Table, domain_id: int) -> None:
        """Append every row of ``table`` as one sample of domain ``domain_id``."""
        texts = table["text"].to_pylist()
        ids = table["id"].to_pylist() if self.with_id else None
        sizes = table["num_bytes"].to_numpy()
        domain = np.int32(domain_id)
        tokens = offsets = None
        if self.token_dtype is not None:
            token_lists = table["tokens"].combine_chunks()
            offsets = token_lists.offsets.to_numpy()
            offsets = offsets - offsets[0]  # a sliced list array starts past zero
            tokens = token_lists.flatten().to_numpy().astype(self.token_dtype)
        for row, text in enumerate(texts):
            sample: dict = {"text": text, "domain": domain}
            if tokens is not None:
                ids_row = tokens[offsets[row] : offsets[row + 1]]
                sample["tokens"] = ids_row
                sample["num_tokens"] = np.int32(len(ids_row))
            else:
                sample["num_bytes"] = np.int32(sizes[row])
            if ids is not None:
                sample["id"] = ids[row]
            self._writer.write(sample)
        self.num_samples += len(texts)

    def finish(self) -> None:
        self._writer.finish()

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
