"""Preference-pair records on disk: reading ``{prompt, chosen, rejected}`` records, writing MDS.

A *pair record* is a JSON object (a jsonl line, plain, ``.gz`` or ``.zst``) or a parquet row
with three text fields, a prompt and two responses to it, the preferred one (*chosen*) and
the other (*rejected*), as in DPO (Rafailov et al. 2023) and SimpleMix (2025). Field names
are configurable (:class:`PairFields`); optional fields name the pair's origin
(``source``: e.g. the model or annotator) and the two responses' scores (a reward, a
rating), whose difference is the pair's reward margin.

:func:`read_pair_records` streams the records of one file, each either a
:class:`PairRecord` or a ``RecordProblem`` (the build's reject type) with the location
(``path:line``, ``path#row``) and the reason: malformed JSON, not an object, a missing or
non-string field, an empty or whitespace-only side, chosen equal to rejected, a score that
is not a finite number. Length limits need the tokenizer and are checked by the build.

:class:`PairStreamWriter` writes pairs as an MDS Stream (format version 2, the encoding of
``streammix.format.mds``, whose shard cutting, compression and index it reuses) with the
columns a DPO step needs:

``prompt``, ``chosen``, ``rejected`` (``str``)
    the texts;
``prompt_tokens``, ``chosen_tokens``, ``rejected_tokens`` (``ndarray:uint16|uint32``)
    their token ids (responses end with the tokenizer's eos token unless the build says no);
``num_tokens`` (``int32``)
    prompt + chosen + rejected tokens;
``domain`` (``int32``)
    the domain id.

A test checks that the files equal ``streaming.MDSWriter``'s for the same samples.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from streammix.format.mds import _FIXED_SIZES, MDS_VERSION, TOKEN_DTYPES, StreamWriter, shape_header
from streammix.format.readers import (
    INVALID_UTF8,
    MALFORMED_JSON,
    NOT_AN_OBJECT,
    InputError,
    RecordProblem,
    input_kind,
    open_binary,
)

SIDES = ("prompt", "chosen", "rejected")
MISSING_FIELD = "missing pair field"
FIELD_NOT_STRING = "pair field is not a string"
EMPTY_SIDE = "empty or whitespace-only pair side"
SAME_RESPONSES = "chosen equals rejected"
BAD_SCORE = "pair score is not a finite number"
BAD_SOURCE = "pair source is not a string"
PAIR_KINDS = ("jsonl", "jsonl.gz", "jsonl.zst", "parquet")


@dataclass(frozen=True, kw_only=True)
class PairFields:
    """Names of a pair record's fields; ``None`` for an optional field that is not used."""

    prompt: str = "prompt"
    chosen: str = "chosen"
    rejected: str = "rejected"
    source: str | None = "source"
    chosen_score: str | None = None
    rejected_score: str | None = None

    def __post_init__(self) -> None:
        for name in SIDES:
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"the {name} field name must be a non-empty string")
        if (self.chosen_score is None) != (self.rejected_score is None):
            raise ValueError("give both score fields (chosen and rejected) or neither")
        used = [self.prompt, self.chosen, self.rejected, self.source, self.chosen_score,
                self.rejected_score]
        used = [u for u in used if u is not None]
        if len(set(used)) != len(used):
            raise ValueError(f"pair field names must be distinct, got {used}")

    @property
    def has_scores(self) -> bool:
        return self.chosen_score is not None


@dataclass(frozen=True, kw_only=True)
class PairRecord:
    """One accepted pair: its texts, optional origin and scores, and where it came from."""

    prompt: str
    chosen: str
    rejected: str
    location: str
    source: str | None = None
    chosen_score: float | None = None
    rejected_score: float | None = None

    @property
    def margin(self) -> float | None:
        if self.chosen_score is None or self.rejected_score is None:
            return None
        return self.chosen_score - self.rejected_score


def record_to_pair(record: Any, location: str, fields: PairFields) -> PairRecord | RecordProblem:
    """Validate a decoded record (a JSON object or a parquet row) into a pair."""
    if not isinstance(record, dict):
        return RecordProblem(reason=NOT_AN_OBJECT, source=location, detail=type(record).__name__)
    texts = {}
    for side in SIDES:
        name = getattr(fields, side)
        value = record.get(name)
        if value is None:
            return RecordProblem(reason=MISSING_FIELD, source=location, detail=repr(name))
        if not isinstance(value, str):
            return RecordProblem(reason=FIELD_NOT_STRING, source=location,
                                 detail=f"{name}: {type(value).__name__}")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            return RecordProblem(reason=INVALID_UTF8, source=location, detail=exc.reason)
        if not value.strip():
            return RecordProblem(reason=EMPTY_SIDE, source=location, detail=side)
        texts[side] = value
    if texts["chosen"] == texts["rejected"]:
        return RecordProblem(reason=SAME_RESPONSES, source=location)
    source = None
    if fields.source is not None and record.get(fields.source) is not None:
        source = record[fields.source]
        if not isinstance(source, str):
            return RecordProblem(reason=BAD_SOURCE, source=location, detail=type(source).__name__)
    scores: dict[str, float | None] = {"chosen_score": None, "rejected_score": None}
    if fields.has_scores:
        for key in scores:
            name = getattr(fields, key)
            value = record.get(name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                return RecordProblem(reason=BAD_SCORE, source=location, detail=f"{name}: {value!r}")
            scores[key] = float(value)
    return PairRecord(location=location, source=source, **texts, **scores)


def check_pair_file(path: str) -> str:
    """The input kind of a pair file (jsonl or parquet), or an ``InputError``."""
    kind = input_kind(path)
    if kind not in PAIR_KINDS:
        raise InputError(
            f"{path}: pair records must be jsonl (.jsonl, .jsonl.gz, .jsonl.zst) or parquet"
        )
    return kind


def read_pair_records(path: str, fields: PairFields) -> Iterator[PairRecord | RecordProblem]:
    """Stream the pair records of one jsonl or parquet file in input order."""
    kind = check_pair_file(path)
    if kind == "parquet":
        yield from _read_parquet(path, fields)
        return
    stream = open_binary(path, kind)
    try:
        for line_no, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            location = f"{path}:{line_no}"
            try:
                record = json.loads(line.decode("utf-8"))
            except UnicodeDecodeError as exc:
                yield RecordProblem(reason=INVALID_UTF8, source=location, detail=str(exc.reason))
                continue
            except json.JSONDecodeError as exc:
                yield RecordProblem(reason=MALFORMED_JSON, source=location, detail=exc.msg)
                continue
            yield record_to_pair(record, location, fields)
    except (OSError, EOFError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
    finally:
        stream.close()


def _read_parquet(path: str, fields: PairFields) -> Iterator[PairRecord | RecordProblem]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"cannot read parquet file {path}: {exc}") from None
    missing = [getattr(fields, s) for s in SIDES if getattr(fields, s) not in parquet.schema_arrow.names]
    if missing:
        raise InputError(f"{path} has no column(s) {missing} (the pair field names)")
    row = 0
    try:
        for batch in parquet.iter_batches(batch_size=1024):
            for record in batch.to_pylist():
                yield record_to_pair(record, f"{path}#{row}", fields)
                row += 1
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"cannot read parquet file {path}: {exc}") from None


def pair_columns(token_dtype: str) -> dict[str, str]:
    """The MDS column encodings of a pair Stream."""
    if token_dtype not in TOKEN_DTYPES:
        raise ValueError(f"token_dtype must be one of {TOKEN_DTYPES}, got {token_dtype!r}")
    columns = {"domain": "int32", "num_tokens": "int32"}
    for side in SIDES:
        columns[side] = "str"
        columns[f"{side}_tokens"] = f"ndarray:{token_dtype}"
    return columns


class PairStreamWriter(StreamWriter):
    """Writes preference pairs as one MDS Stream (see the module docstring).

    Shard cutting, compression threads and ``index.json`` are ``StreamWriter``'s; only the
    columns and the sample encoding differ. Use it as a context manager.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        *,
        token_dtype: str,
        compression: str | None,
        size_limit: int | None,
        compress_threads: int = 1,
    ) -> None:
        columns = pair_columns(token_dtype)
        super().__init__(folder, token_dtype=token_dtype, with_id=False, compression=compression,
                         size_limit=size_limit, compress_threads=compress_threads)
        self._names = sorted(columns)
        self._encodings = [columns[name] for name in self._names]
        self._config = self._config | {
            "column_names": self._names,
            "column_encodings": self._encodings,
            "column_sizes": [_FIXED_SIZES.get(e) for e in self._encodings],
        }
        assert self._config["version"] == MDS_VERSION
        self._config_bytes = json.dumps(self._config, sort_keys=True).encode("utf-8")
        self._shard_overhead = 8 + len(self._config_bytes)
        self._shard_size = self._shard_overhead
        self._dtype = np.dtype(token_dtype)

    def write_table(self, table: Any, domain_id: int) -> None:
        raise TypeError("a PairStreamWriter writes pairs: use write_pair")

    def write_pair(self, texts: Mapping[str, str], tokens: Mapping[str, Sequence[int]],
                   domain_id: int) -> None:
        """Append one pair: ``texts`` and ``tokens`` keyed by prompt, chosen, rejected."""
        values: dict[str, bytes] = {"domain": struct.pack("<i", domain_id)}
        total = 0
        for side in SIDES:
            ids = np.asarray(tokens[side], dtype=np.int64)
            if ids.size == 0:
                raise ValueError(f"the {side} of a pair has no tokens")
            if int(ids.min()) < 0 or int(ids.max()) > np.iinfo(self._dtype).max:
                raise ValueError(f"{side} token ids do not fit {self._dtype}")
            values[side] = texts[side].encode("utf-8")
            values[f"{side}_tokens"] = shape_header(ids.size) + ids.astype(self._dtype).tobytes()
            total += ids.size
        if total >= 1 << 31:
            raise ValueError("a pair's token count must fit in int32")
        values["num_tokens"] = struct.pack("<i", total)
        sizes = [len(values[n]) for n, e in zip(self._names, self._encodings) if e not in _FIXED_SIZES]
        head = struct.pack("<" + "I" * len(sizes), *sizes)
        self._add(head + b"".join(values[name] for name in self._names))
