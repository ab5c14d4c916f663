"""Streaming readers of raw corpora: jsonl (plain, .gz, .zst), parquet and plain-text files.

Every input file has a *kind* decided by its name (``input_kind``): ``.jsonl``/``.ndjson``
(optionally ``.gz`` or ``.zst``) is jsonl, ``.parquet``/``.pq`` is parquet, anything else
is one plain-text document per file. A build cuts the files into ``WorkUnit``s (see
``streammix.pipeline.plan``) and ``read_unit`` streams one unit, never loading a whole file:

- jsonl: the unit is a byte range ``[byte_start, byte_end)`` of an uncompressed file whose
  ends sit right after a newline (or the whole file when compressed); ``first_line`` is the
  1-based number of its first line, so every record knows its ``path:line``.
- parquet: a range of row groups; rows are numbered from ``first_row`` (``path#row``).
- text: a list of files, one document each (``path``); the record is ``{"path": relpath}``.

Each item ``read_unit`` yields is either a ``RawRecord`` (an accepted document) or a
``RecordProblem`` (a per-record defect with a reason and the source location) which the
pipeline counts and writes to ``rejects.jsonl``. Blank lines of a jsonl file separate
nothing and are skipped without a reject. A file that cannot be opened or decoded as a
whole raises ``InputError``.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import posixpath
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import zstandard

from streammix.format.object_store import ObjectStore, ObjectStoreError, is_object_url

JSONL_SUFFIXES = (".jsonl", ".ndjson")
COMPRESSED_SUFFIXES = {".gz": "gz", ".zst": "zst", ".zstd": "zst"}
PARQUET_SUFFIXES = (".parquet", ".pq")

# Reasons a record is rejected; the values are what rejects.jsonl says.
MALFORMED_JSON = "malformed json"
NOT_AN_OBJECT = "record is not a JSON object"
MISSING_TEXT = "missing text field"
TEXT_NOT_STRING = "text field is not a string"
MISSING_ID = "missing id field"
INVALID_UTF8 = "invalid utf-8"
EMPTY_DOCUMENT = "empty or whitespace-only document"
TOO_LARGE = "document larger than --max-doc-bytes"
# Reasons that, when they reject every record of a work unit, mean the flags do not fit the
# file (a wrong --text-field, a file that is not JSON lines) rather than a few bad records.
SHAPE_REASONS = (MALFORMED_JSON, NOT_AN_OBJECT, MISSING_TEXT, TEXT_NOT_STRING, MISSING_ID)


class InputError(ValueError):
    """A whole input file is unusable (unreadable, corrupt, missing a column)."""


@dataclass(frozen=True, kw_only=True)
class RawRecord:
    """One accepted document: its text, the raw record and where it came from."""

    text: str
    record: Mapping[str, Any]
    source: str
    doc_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class RecordProblem:
    """A rejected record: why and where (``path:line``, ``path#row`` or ``path``)."""

    reason: str
    source: str
    detail: str = ""

    def message(self) -> str:
        return f"{self.source}: {self.reason}" + (f" ({self.detail})" if self.detail else "")


@dataclass(frozen=True, kw_only=True)
class WorkUnit:
    """A fixed slice of the input of one domain, processed as a whole by one worker."""

    index: int
    domain: str
    kind: str
    path: str
    byte_start: int = 0
    byte_end: int = -1
    first_line: int = 1
    row_groups: tuple[int, int] = (0, 0)
    first_row: int = 0
    files: tuple[str, ...] = field(default=())
    root: str = ""
    num_bytes: int = 0


@dataclass(frozen=True, kw_only=True)
class ReadOptions:
    """How records become documents."""

    text_field: str = "text"
    id_field: str | None = None
    max_doc_bytes: int = 10_000_000
    store: ObjectStore = field(default_factory=ObjectStore)  # where s3:// inputs are read


def open_input(path: str, store: ObjectStore) -> io.BufferedIOBase:
    """A seekable binary reader of a local file or an ``s3://``/``s3a://`` object."""
    if is_object_url(path):
        try:
            return store.open(path)
        except ObjectStoreError as exc:
            raise InputError(str(exc)) from None
    return open(path, "rb")


def input_size(path: str, store: ObjectStore) -> int:
    if is_object_url(path):
        return store.stat(path).size
    return os.path.getsize(path)


def input_kind(path: str) -> str:
    """The reader a file needs: ``jsonl``, ``jsonl.gz``, ``jsonl.zst``, ``parquet`` or ``text``."""
    name = os.path.basename(path).lower()
    base, ext = os.path.splitext(name)
    if ext in COMPRESSED_SUFFIXES and base.endswith(JSONL_SUFFIXES):
        return "jsonl." + COMPRESSED_SUFFIXES[ext]
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    return "text"


def read_unit(unit: WorkUnit, options: ReadOptions) -> Iterator[RawRecord | RecordProblem]:
    """Stream the records of ``unit`` in input order."""
    if unit.kind.startswith("jsonl"):
        yield from _read_jsonl(unit, options)
    elif unit.kind == "parquet":
        yield from _read_parquet(unit, options)
    elif unit.kind == "text":
        yield from _read_text_files(unit, options)
    else:
        raise ValueError(f"unknown input kind {unit.kind!r}")


def check_document(text: str, source: str, max_doc_bytes: int) -> RecordProblem | None:
    """The problem with a decoded document, if any (lone surrogates, empty, too large)."""
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        return RecordProblem(reason=INVALID_UTF8, source=source, detail=exc.reason)
    if not text.strip():
        return RecordProblem(reason=EMPTY_DOCUMENT, source=source)
    if size > max_doc_bytes:
        return RecordProblem(
            reason=TOO_LARGE, source=source, detail=f"{size} > {max_doc_bytes} bytes"
        )
    return None


def record_to_document(record: Any, source: str, options: ReadOptions) -> RawRecord | RecordProblem:
    """Validate a decoded record (a JSON object or a parquet row) into a document."""
    if not isinstance(record, dict):
        return RecordProblem(reason=NOT_AN_OBJECT, source=source, detail=type(record).__name__)
    text = record.get(options.text_field)
    if text is None:
        return RecordProblem(
            reason=MISSING_TEXT, source=source, detail=_field_detail(options.text_field, record)
        )
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            return RecordProblem(reason=INVALID_UTF8, source=source, detail=str(exc.reason))
    if not isinstance(text, str):
        return RecordProblem(reason=TEXT_NOT_STRING, source=source, detail=type(text).__name__)
    doc_id = None
    if options.id_field is not None:
        raw_id = record.get(options.id_field)
        if raw_id is None:
            return RecordProblem(
                reason=MISSING_ID, source=source, detail=_field_detail(options.id_field, record)
            )
        doc_id = str(raw_id)
    problem = check_document(text, source, options.max_doc_bytes)
    if problem is not None:
        return problem
    return RawRecord(text=text, record=record, source=source, doc_id=doc_id)


def _field_detail(name: str, record: Mapping[str, Any], limit: int = 8) -> str:
    """``'text' (null)`` or ``'text' (the record has: body, id)``: what the record holds."""
    if name in record:
        return f"{name!r} (null)"
    keys = [str(k) for k in record]
    shown = ", ".join(keys[:limit]) + (f", ... ({len(keys)} fields)" if len(keys) > limit else "")
    return f"{name!r} (the record has: {shown or 'no fields'})"


def open_binary(path: str, kind: str, store: ObjectStore | None = None) -> io.BufferedIOBase:
    """Open a (possibly compressed) file or object for streaming binary reads."""
    try:
        if kind == "jsonl.gz" and not is_object_url(path):
            return gzip.open(path, "rb")
        raw = open_input(path, store or ObjectStore())
        if kind == "jsonl.gz":
            return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
        if kind == "jsonl.zst":  # the raw stream is closed with the stream reader
            return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, closefd=True))
        return raw
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None


def _read_jsonl(unit: WorkUnit, options: ReadOptions) -> Iterator[RawRecord | RecordProblem]:
    stream = open_binary(unit.path, unit.kind, options.store)
    try:
        if unit.kind == "jsonl":
            stream.seek(unit.byte_start)
        remaining = unit.byte_end - unit.byte_start if unit.byte_end >= 0 else -1
        line_no = unit.first_line
        while remaining != 0:
            line = stream.readline()
            if not line:
                break
            if remaining > 0:
                remaining -= len(line)
            source = f"{unit.path}:{line_no}"
            line_no += 1
            if line.strip():
                yield _parse_json_line(line, source, options)
    except (OSError, EOFError, zlib.error, zstandard.ZstdError) as exc:
        raise InputError(f"cannot read {unit.path}: {exc}") from None
    finally:
        stream.close()


def _parse_json_line(line: bytes, source: str, options: ReadOptions) -> RawRecord | RecordProblem:
    try:
        decoded = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return RecordProblem(reason=INVALID_UTF8, source=source, detail=str(exc.reason))
    try:
        record = json.loads(decoded)
    except json.JSONDecodeError as exc:
        return RecordProblem(reason=MALFORMED_JSON, source=source, detail=str(exc))
    return record_to_document(record, source, options)


def _read_parquet(unit: WorkUnit, options: ReadOptions) -> Iterator[RawRecord | RecordProblem]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(open_input(unit.path, options.store))
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"cannot read parquet file {unit.path}: {exc}") from None
    if options.text_field not in parquet.schema_arrow.names:
        raise InputError(f"{unit.path} has no column {options.text_field!r} (--text-field)")
    groups = list(range(*unit.row_groups))
    row = unit.first_row
    if not groups:
        return
    try:
        for batch in parquet.iter_batches(batch_size=1024, row_groups=groups):
            for record in batch.to_pylist():
                yield record_to_document(record, f"{unit.path}#{row}", options)
                row += 1
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"cannot read parquet file {unit.path}: {exc}") from None


def _read_text_files(unit: WorkUnit, options: ReadOptions) -> Iterator[RawRecord | RecordProblem]:
    for path in unit.files:
        try:
            with open_input(path, options.store) as handle:
                data = handle.read(options.max_doc_bytes + 1)
        except OSError as exc:
            raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
        if len(data) > options.max_doc_bytes:
            size = input_size(path, options.store)
            yield RecordProblem(
                reason=TOO_LARGE, source=path, detail=f"{size} > {options.max_doc_bytes} bytes"
            )
            continue
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield RecordProblem(reason=INVALID_UTF8, source=path, detail=str(exc.reason))
            continue
        relpath = _relative(path, unit.root)
        record = {"path": relpath}
        document = record_to_document({"text": text, **record}, path, _text_options(options))
        if isinstance(document, RawRecord):
            doc_id = relpath if options.id_field is not None else None
            document = RawRecord(text=text, record=record, source=path, doc_id=doc_id)
        yield document


def _relative(path: str, root: str) -> str:
    """``path`` relative to its domain's root folder (or prefix), with ``/`` for objects."""
    if not root:
        return posixpath.basename(path) if is_object_url(path) else os.path.basename(path)
    if is_object_url(path):
        return posixpath.relpath(path.split("://", 1)[1], root.split("://", 1)[1])
    return os.path.relpath(path, root)


def _text_options(options: ReadOptions) -> ReadOptions:
    return ReadOptions(
        text_field="text", id_field=None, max_doc_bytes=options.max_doc_bytes, store=options.store
    )
